"""Import the 1st-place team's published DwiseNeuro weights as our trained-model files.

Their trainer (lRomul/sensorium) keeps one checkpoint per fold and stage, laid out as
``data/experiments/<experiment>/fold_<k>/model-<epoch>-<score>.pth`` (the best one of a fold
has the highest score in its name). A checkpoint is a ``torch.save`` of a dict with
``model_name``, ``params`` (the experiment's model parameters: architecture, frame stack,
input processing) and ``nn_state_dict`` (the EMA weights).

:func:`import_checkpoint` builds our ``dwiseneuro`` model from ``params``, maps every tensor of
``nn_state_dict`` onto it (shapes checked; a key no rule maps, or a tensor of ours nothing
fills, is an error naming it) and writes the ``model.pt`` that :func:`~.save_trained` writes,
so prediction, ensembling and submission treat it as a model trained here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, PathError
from . import read_torch_file
from .config import DwiseNeuroCoreConfig, DwiseNeuroReadoutConfig, ModelConfig, MouseMeta
from .model import SensoriumModel

#: The reference's mouse order (its readout ``k`` is the ``k``-th mouse here): the five new
#: mice, then the five old ones.
REFERENCE_MICE: tuple[str, ...] = (
    "dynamic29515-10-12-Video-9b4f6a1a067fe51e15306b9628efea20",
    "dynamic29623-4-9-Video-9b4f6a1a067fe51e15306b9628efea20",
    "dynamic29647-19-8-Video-9b4f6a1a067fe51e15306b9628efea20",
    "dynamic29712-5-9-Video-9b4f6a1a067fe51e15306b9628efea20",
    "dynamic29755-2-8-Video-9b4f6a1a067fe51e15306b9628efea20",
    "dynamic29156-11-10-Video-8744edeac3b4d1ce16b680916b5267ce",
    "dynamic29228-2-10-Video-8744edeac3b4d1ce16b680916b5267ce",
    "dynamic29234-6-9-Video-8744edeac3b4d1ce16b680916b5267ce",
    "dynamic29513-3-5-Video-8744edeac3b4d1ce16b680916b5267ce",
    "dynamic29514-2-9-Video-8744edeac3b4d1ce16b680916b5267ce",
)

_CHECKPOINT = re.compile(r"-(\d+(?:\.\d+)?)\.pth$")


class WeightsError(PathError):
    """A reference checkpoint is missing, unreadable, or does not fit our model."""


def best_checkpoint(fold_dir: str | Path) -> Path:
    """The checkpoint of ``fold_dir`` with the highest score in its name (``model-017-0.2931.pth``),
    as the reference picks a fold's model."""
    fold_dir = Path(fold_dir)
    scored = []
    for path in sorted(fold_dir.glob("*.pth")):
        match = _CHECKPOINT.search(path.name)
        if match:
            scored.append((float(match.group(1)), path.name, path))
    if not scored:
        raise WeightsError(fold_dir, "no checkpoint named model-<epoch>-<score>.pth here")
    return max(scored)[2]


def fold_checkpoint(experiment_dir: str | Path, fold: int) -> Path:
    """The best checkpoint of fold ``fold`` of an experiment folder (``<experiment>/fold_<k>/``)."""
    return best_checkpoint(Path(experiment_dir) / f"fold_{int(fold)}")


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(params, state_dict)`` of a reference checkpoint (loaded without running any code from it)."""
    path = Path(path)
    payload = read_torch_file(path, WeightsError, "no checkpoint file here", "checkpoint")
    if not isinstance(payload, Mapping) or not {"params", "nn_state_dict"} <= set(payload):
        raise WeightsError(path, "not a reference checkpoint (expected the keys 'params' and 'nn_state_dict')")
    return dict(payload["params"]), dict(payload["nn_state_dict"])


@dataclass(frozen=True)
class ReferenceModel:
    """What a checkpoint's ``params`` say: our model config, the window and its readout sizes."""

    config: ModelConfig
    window_frames: int
    readout_sizes: tuple[int, ...]


def _groups(features: Sequence[int], strides: Sequence[int], path: Path) -> tuple[list[int], list[int], int]:
    """``(channels, depths, group_stride)`` of the reference's per-block widths and strides."""
    channels: list[int] = []
    depths: list[int] = []
    for width in features:
        if channels and channels[-1] == width:
            depths[-1] += 1
        else:
            channels.append(int(width))
            depths.append(1)
    group_stride = int(strides[0])
    firsts = {sum(depths[:g]) for g in range(len(depths))}
    expected = [group_stride if i in firsts else 1 for i in range(len(features))]
    if list(strides) != expected:
        raise WeightsError(
            path, f"spatial_strides {list(strides)} do not stride each group's first block alike ({expected})"
        )
    return channels, depths, group_stride


def reference_model(params: Mapping[str, Any], path: str | Path = "<params>") -> ReferenceModel:
    """Our model config for the reference experiment ``params`` (its ``argus_params``)."""
    path = Path(path)
    try:
        name, kw = params["nn_module"]
        stack = params["frame_stack"]
        processor, processor_kw = params["inputs_processor"]
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(path, f"params: expected nn_module, frame_stack and inputs_processor ({exc})") from exc
    if name != "dwiseneuro":
        raise WeightsError(path, f"params.nn_module: {name!r} is not 'dwiseneuro'")
    if processor != "stack_inputs" or float(processor_kw.get("pad_fill_value", 0.0)) != 0.0:
        raise WeightsError(path, f"params.inputs_processor: {processor!r} {processor_kw} is not stack_inputs padding 0")
    if stack.get("position", "last") != "last":
        raise WeightsError(path, f"params.frame_stack.position: {stack.get('position')!r} is not 'last'")
    responses = params.get("responses_processor", ("identity", {}))
    if responses[0] != "identity":
        raise WeightsError(path, f"params.responses_processor: {responses[0]!r} is not 'identity'")
    known = {
        "readout_outputs", "in_channels", "core_features", "spatial_strides", "spatial_kernel", "temporal_kernel",
        "expansion_ratio", "se_reduce_ratio", "cortex_features", "groups", "softplus_beta", "drop_rate",
        "drop_path_rate",
    }  # fmt: skip
    unknown = sorted(set(kw) - known)
    if unknown:
        raise WeightsError(path, f"params.nn_module: unknown arguments {unknown}")
    if int(kw.get("in_channels", 5)) != 5:
        raise WeightsError(path, f"params.nn_module.in_channels: {kw['in_channels']} is not 5 (video + 4 behaviour)")
    channels, depths, group_stride = _groups(kw["core_features"], kw["spatial_strides"], path)
    width, height = (int(v) for v in processor_kw["size"])  # the reference's size is (width, height)
    try:
        config = ModelConfig(
            core=DwiseNeuroCoreConfig(
                channels=tuple(channels),
                depths=tuple(depths),
                group_stride=group_stride,
                expansion=int(kw["expansion_ratio"]),
                spatial_kernel=int(kw["spatial_kernel"]),
                temporal_kernel=int(kw["temporal_kernel"]),
                se_reduction=int(kw["se_reduce_ratio"]),
                position_encoding=True,
                drop_path=float(kw["drop_path_rate"]),
                cortex_channels=tuple(int(c) for c in kw["cortex_features"]),
                cortex_groups=int(kw["groups"]),
                cortex_drop_path=float(kw["drop_path_rate"]),
            ),
            readout=DwiseNeuroReadoutConfig(groups=int(kw["groups"]), dropout=float(kw["drop_rate"])),
            shifter=None,
            inputs="raw",
            frame_step=int(stack["step"]),
            downsample=1,
            pad_to=(height, width),
            behavior_channels=True,
            pupil_channels=True,
            output="softplus",
            softplus_beta=float(kw["softplus_beta"]),
        )
    except ConfigError as exc:
        raise WeightsError(path, f"params do not make a valid model: {exc}") from exc
    return ReferenceModel(config, int(stack["size"]), tuple(int(n) for n in kw["readout_outputs"]))


# --- the tensor map ---------------------------------------------------------------------------

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
Reshape = Callable[[torch.Tensor], torch.Tensor]


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _drop_time_axis(x: torch.Tensor) -> torch.Tensor:
    """Conv3d ``(C, 1, 1, k, k)`` -> our 2D depth-wise ``(C, 1, k, k)``."""
    return x.squeeze(2)


def _drop_width_axis(x: torch.Tensor) -> torch.Tensor:
    """Conv3d ``(C, 1, k, 1, 1)`` -> our temporal ``(C, 1, k, 1)``."""
    return x.squeeze(-1)


Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str], Reshape]


def _rules(n_blocks: int, readout_keys: Sequence[str]) -> list[Rule]:
    """``(reference key pattern, our key, reshape)``. The reference interleaves a position
    encoding (module ``2i``) with each block (module ``2i + 1``)."""

    def block(m: re.Match[str]) -> int:
        index = int(m.group(1))
        if index % 2 == 0 or index // 2 >= n_blocks:
            raise KeyError(m.group(0))
        return index // 2

    def readout(m: re.Match[str]) -> str:
        k = int(m.group(1))
        if k >= len(readout_keys):
            raise KeyError(m.group(0))
        return f"readouts.{readout_keys[k]}.conv.{m.group(2)}"

    b = r"core\.blocks\.(\d+)\."
    return [
        (re.compile(r"core\.stem\.0\.weight"), lambda m: "core.stem.0.weight", _same),
        (re.compile(rf"core\.stem\.1\.bn\.{_BN}"), lambda m: f"core.stem.1.{m.group(1)}", _same),
        (re.compile(rf"{b}conv_pw\.0\.weight"), lambda m: f"core.blocks.{block(m)}.expand.weight", _same),
        (re.compile(rf"{b}conv_pw\.1\.bn\.{_BN}"), lambda m: f"core.blocks.{block(m)}.norm_expand.{m.group(2)}", _same),
        (
            re.compile(rf"{b}spat_covn_dw\.0\.weight"),
            lambda m: f"core.blocks.{block(m)}.spatial.weight",
            _drop_time_axis,
        ),
        (
            re.compile(rf"{b}spat_covn_dw\.1\.bn\.{_BN}"),
            lambda m: f"core.blocks.{block(m)}.norm_spatial.{m.group(2)}",
            _same,
        ),
        (
            re.compile(rf"{b}temp_covn_dw\.0\.weight"),
            lambda m: f"core.blocks.{block(m)}.temporal.weight",
            _drop_width_axis,
        ),
        (
            re.compile(rf"{b}temp_covn_dw\.1\.bn\.{_BN}"),
            lambda m: f"core.blocks.{block(m)}.norm_temporal.{m.group(2)}",
            _same,
        ),
        (
            re.compile(rf"{b}se\.conv_(reduce|expand)\.(weight|bias)"),
            lambda m: f"core.blocks.{block(m)}.excite.{m.group(2)}.{m.group(3)}",
            _same,
        ),
        (re.compile(rf"{b}conv_pwl\.0\.weight"), lambda m: f"core.blocks.{block(m)}.project.weight", _same),
        (
            re.compile(rf"{b}conv_pwl\.1\.bn\.{_BN}"),
            lambda m: f"core.blocks.{block(m)}.norm_project.{m.group(2)}",
            _same,
        ),
        (re.compile(rf"{b}bn_sc\.bn\.{_BN}"), lambda m: f"core.blocks.{block(m)}.shortcut.norm.{m.group(2)}", _same),
        (re.compile(r"cortex\.layers\.(\d+)\.conv\.weight"), lambda m: f"core.cortex.{m.group(1)}.conv.weight", _same),
        (
            re.compile(rf"cortex\.layers\.(\d+)\.bn\.bn\.{_BN}"),
            lambda m: f"core.cortex.{m.group(1)}.norm.{m.group(2)}",
            _same,
        ),
        (
            re.compile(rf"cortex\.layers\.(\d+)\.bn_sc\.bn\.{_BN}"),
            lambda m: f"core.cortex.{m.group(1)}.norm_shortcut.{m.group(2)}",
            _same,
        ),
        (re.compile(r"readouts\.(\d+)\.layer\.1\.(weight|bias)"), readout, _same),
    ]


#: Reference tensors that are not weights but fixed functions of the shape: checked, not copied.
_POSITION_FREQUENCIES = re.compile(r"core\.blocks\.(\d+)\.inv_freq")
#: Our tensors that come from the config, not the checkpoint.
_FROM_CONFIG = ("nonlinearity.log_beta",)


def _position_frequencies(channels: int) -> torch.Tensor:
    per_axis = 2 * -(-channels // 6)
    return 1.0 / (10000.0 ** (torch.arange(0, per_axis, 2, dtype=torch.float32) / per_axis))


def map_state_dict(
    reference: Mapping[str, torch.Tensor], model: SensoriumModel, path: str | Path = "<checkpoint>"
) -> dict[str, torch.Tensor]:
    """Our state dict filled from the reference's ``nn_state_dict``: every reference key
    mapped, every tensor of ours filled (or set by the config), shapes equal."""
    path = Path(path)
    ours = model.state_dict()
    blocks = list(model.core.blocks)
    rules = _rules(len(blocks), [model._key(m) for m in model.mice])
    out: dict[str, torch.Tensor] = {}
    for key, tensor in reference.items():
        match = _POSITION_FREQUENCIES.fullmatch(key)
        if match:
            index = int(match.group(1))
            if index % 2 or index // 2 >= len(blocks):
                raise WeightsError(path, f"{key}: no block of our model has this position encoding")
            expected = _position_frequencies(blocks[index // 2].expand.in_channels)
            if tensor.shape != expected.shape or not torch.allclose(tensor.float(), expected):
                raise WeightsError(path, f"{key}: position-encoding frequencies differ from ours")
            continue
        target = None
        for pattern, name, reshape in rules:
            m = pattern.fullmatch(key)
            if m:
                try:
                    target = name(m)
                except KeyError:
                    break
                value = reshape(tensor)
                break
        if target is None or target not in ours:
            raise WeightsError(path, f"{key}: this reference tensor maps onto nothing in our model")
        if target in out:
            raise WeightsError(path, f"{key}: a second reference tensor for our {target}")
        if tuple(value.shape) != tuple(ours[target].shape):
            raise WeightsError(
                path, f"{key}: shape {tuple(tensor.shape)} does not fit our {target} {tuple(ours[target].shape)}"
            )
        out[target] = value.to(ours[target].dtype).clone()
    for key in _FROM_CONFIG:
        if key in ours:
            out[key] = ours[key]
    missing = sorted(set(ours) - set(out))
    if missing:
        raise WeightsError(path, f"the checkpoint has no tensor for our {missing[0]} ({len(missing)} missing)")
    return out


def import_checkpoint(
    checkpoint: str | Path,
    mice: Sequence[MouseMeta],
    out: str | Path,
    *,
    fold: int | None = None,
    reference_mice: Sequence[str] = REFERENCE_MICE,
) -> SensoriumModel:
    """Write our ``model.pt`` for the reference checkpoint ``checkpoint``.

    ``reference_mice`` names the mouse of each of the checkpoint's readouts, in order; the
    model is built for ``mice`` (their unit ids and coordinates, from our stores), which
    must be exactly those mice with the readouts' neuron counts."""
    from . import save_trained

    checkpoint = Path(checkpoint)
    params, state = read_checkpoint(checkpoint)
    ref = reference_model(params, checkpoint)
    if len(reference_mice) != len(ref.readout_sizes):
        raise WeightsError(
            checkpoint,
            f"{len(ref.readout_sizes)} readouts in the checkpoint but {len(reference_mice)} mice named for them",
        )
    by_name = {m.name: m for m in mice}
    if set(by_name) != set(reference_mice):
        raise WeightsError(
            checkpoint, f"the checkpoint's mice {sorted(reference_mice)} are not the mice given {sorted(by_name)}"
        )
    ordered = [by_name[name] for name in reference_mice]
    for meta, size in zip(ordered, ref.readout_sizes, strict=True):
        if meta.n_neurons != size:
            raise WeightsError(
                checkpoint,
                f"mouse {meta.name}: {meta.n_neurons} neurons in our store, {size} in the checkpoint's readout",
            )
    model = SensoriumModel(ref.config, ordered)
    model.load_state_dict(map_state_dict(state, model, checkpoint))
    model.eval()
    extra = {
        "fold": fold,
        "imported_from": str(checkpoint),
        "training": {"window_frames": ref.window_frames, "targets": "raw", "batching": "mixed"},
    }
    save_trained(out, model, ref.config, ordered, extra)
    return model


def store_meta(store: str | Path) -> MouseMeta:
    """A mouse's neurons (unit ids, coordinates) as our converted store has them."""
    from ..data.store import open_mouse

    mouse = open_mouse(store)
    return MouseMeta(mouse.mouse, np.asarray(mouse.unit_ids), np.asarray(mouse.coordinates))


def import_fold(
    experiment_dir: str | Path,
    fold: int,
    stores: Sequence[str | Path],
    out: str | Path,
    *,
    reference_mice: Sequence[str] | None = None,
) -> Path:
    """Import the best checkpoint of ``<experiment_dir>/fold_<fold>/`` for the mice of ``stores``
    (``reference_mice``: the checkpoint's readout order; default the reference's ten mice).
    Returns the checkpoint it read."""
    checkpoint = fold_checkpoint(experiment_dir, fold)
    import_checkpoint(
        checkpoint,
        [store_meta(s) for s in stores],
        out,
        fold=int(fold),
        reference_mice=REFERENCE_MICE if reference_mice is None else tuple(reference_mice),
    )
    return checkpoint
