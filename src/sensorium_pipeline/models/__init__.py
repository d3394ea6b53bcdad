"""Models: composable blocks (inputs, cores, readouts, shifters), the model that stacks them,
and the file a trained model is saved in.

``build_model(config, mice)`` is the one way a model is made, from training and from a saved
file alike, so training, prediction and ensembling never branch on the architecture.
Architectures are chosen by ``config/models/<name>.yaml`` (see :mod:`.config`):
``core.type`` in ``factorized3d`` (official baseline), ``gru2d`` (2D core + convolutional
GRU), ``dwiseneuro`` (1st place); ``readout.type`` in ``gaussian``, ``factorized``,
``dwiseneuro``; ``output`` in ``elu1``, ``softplus``.

The contract every model honours (train.py, predict.py and sources.py rely on it)
------------------------------------------------------------------------------

1. ``model(video, behavior, pupil_center, mouse) -> (B, L, N_mouse)``, all outputs > 0.
   Inputs are time-first, in the official normalisation (``model.inputs: official``) or as
   recorded (``raw``: grey levels, raw behaviour and pupil centre): ``video (B, L, 36, 64)``,
   ``behavior (B, L, 2)`` (pupil dilation, running speed), ``pupil_center (B, L, 2)``, float32
   (or under autocast); ``mouse`` is one of ``model.mice``. One mouse per batch.
2. Frame step. ``s = model.frame_step`` (config key ``model.frame_step``, default 1). The L
   input frames are the trial's frames ``start, start + s, ..., start + (L - 1) s``, and
   output ``i`` is the prediction of the response at frame ``start + i s``. A window of L
   model frames spans ``(L - 1) s + 1`` trial frames; ``training.window_frames`` counts model
   frames. The window sampler draws such strided windows (behaviour, pupil centre and
   responses strided alike); the loss compares output ``i`` with the response at
   ``start + i s``.
3. Temporal reach, in *model* frames (multiply by ``s`` for trial frames):
   ``model.context_frames`` (c) and ``model.lookahead_frames`` (a). In eval mode output
   ``i`` depends only on inputs ``i - c .. i + a``; outputs with ``i < c`` or ``i > L-1-a``
   see zero padding instead of real frames (no loss of truth where the window starts at the
   trial's first frame or ends at its last). ``model.causal`` is ``a == 0``.
   factorized3d: c = sum(temporal_kernel - 1), a = 0. gru2d: a = 0 and c is the configured
   burn-in (a GRU's memory has no hard limit; its state starts at zero in every window).
   dwiseneuro: c = a = ``WHOLE_WINDOW`` (its squeeze-and-excitation averages over the whole
   window, so every output depends on every frame of it).
4. Training loss: skip the first c outputs of a window (``training.loss_skip_frames``
   defaults to c) -- except when the window is shorter than the reach (``c + a >= L``, as
   DwiseNeuro), where every output sees padding anyway: train on all L outputs, as the
   winners did. Configs of such models set ``training.loss_skip_frames: 0``.
5. Prediction with overlapping windows must cover every trial frame: for each phase
   ``r in range(s)``, slide windows of L model frames over the frames ``r, r + s, r + 2s,
   ...`` (the last window ending at that phase's last usable frame); every frame then lies in
   at least one window. Average, per frame, the outputs of the windows in which it sits at
   a "full" position (``c <= i <= L - 1 - a``, or the window touches the trial's first /
   last frame on that side); a frame no window sees at a full position (always the case
   for DwiseNeuro) takes the plain mean over all windows that cover it -- the winners'
   averaging, over every window offset with the default stride of 1 for such models. Predict with the training window length: position encodings
   (DwiseNeuro) and the GRU burn-in make outputs depend on the position in the window.
6. ``model.readout_l1(mouse)`` is a sparsity penalty of that mouse's readout (a tensor).
   ``model.n_neurons(mouse)``, ``model.mice``. Training-only randomness (dropout,
   stochastic depth, Gaussian readout jitter) is off in ``model.eval()``.
7. Speed: :func:`.performance.channels_last` converts a model to channels-last memory
   format, :func:`.performance.compile_core` compiles the shared core in place (state-dict
   keys unchanged, readouts eager, so no recompilation per mouse). Both are optional.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_path
from ..errors import PathError
from .config import ModelConfig, MouseMeta
from .model import SensoriumModel
from .performance import channels_last, compile_core

__all__ = [
    "ModelConfig",
    "MouseMeta",
    "SensoriumModel",
    "TrainedModel",
    "build_model",
    "channels_last",
    "compile_core",
    "load_trained",
    "save_trained",
]

MODEL_FORMAT = "sensorium-pipeline/model/v1"


class ModelFileError(PathError):
    """A trained-model file is missing, truncated or of an unknown format."""


def build_model(config: ModelConfig, mice: Sequence[MouseMeta]) -> nn.Module:
    """The model of ``config`` for ``mice`` (one readout each, in this order)."""
    return SensoriumModel(config, mice)


@dataclass
class TrainedModel:
    """A model rebuilt from its file, in eval mode, plus what was saved beside the weights."""

    model: nn.Module
    model_config: ModelConfig
    mice: list[MouseMeta]
    extra: dict[str, Any]

    def meta(self, mouse: str) -> MouseMeta:
        for m in self.mice:
            if m.name == mouse:
                return m
        raise KeyError(mouse)


def save_trained(
    path: str | Path, model: nn.Module, config: ModelConfig, mice: Sequence[MouseMeta], extra: dict[str, Any]
) -> None:
    """Write weights + everything ``load_trained`` needs to rebuild the model, atomically.

    ``extra`` holds plain data only (numbers, strings, lists, dicts): the training config,
    the fold, the validation score.
    """
    payload = {
        "format": MODEL_FORMAT,
        "model_config": config.to_dict(),
        "mice": [m.to_dict() for m in mice],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_torch_file(path: Path, error: type[PathError], missing: str, what: str) -> Any:
    """The payload of a ``torch.save`` file, loaded without running any code from it; a missing
    or unreadable file raises ``error`` naming the path (``missing``; ``cannot read the <what>``)."""
    if not path.is_file():
        raise error(path, missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise error(path, f"cannot read the {what}: {exc}") from exc


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild a model saved by :func:`save_trained` on ``device``, in eval mode."""
    path = Path(path)
    payload = read_torch_file(path, ModelFileError, "no trained model here (run the train step)", "model file")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(path, f"not a trained model of format {MODEL_FORMAT!r}")
    config = ModelConfig.from_dict(payload["model_config"])
    mice = [MouseMeta.from_dict(m) for m in payload["mice"]]
    model = build_model(config, mice)
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return TrainedModel(model=model, model_config=config, mice=mice, extra=dict(payload["extra"]))
