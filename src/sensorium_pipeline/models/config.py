"""The architecture's hyperparameters: the ``model:`` section of ``config/models/<name>.yaml``.

A model is four choices, each a small dataclass chosen by its ``type`` key::

    model:
      frame_step: 1            # the model sees every frame_step-th frame (the sampler honours it)
      inputs: official         # or raw: the values the model is fed (see INPUTS)
      behavior_channels: true  # inputs: video + broadcast behaviour (+ pupil centre) channels
      core: {type: factorized3d | gru2d | dwiseneuro, ...}
      readout: {type: gaussian | factorized | dwiseneuro, ...}
      shifter: {hidden: 5, layers: 3}   # or null (no shifter)
      output: elu1 | softplus
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from ..layout import INPUTS

OUTPUTS = ("elu1", "softplus")


def reject_unknown(cls: type, data: Mapping[str, Any], section: str) -> dict[str, Any]:
    """``data`` as a dict, or a ``ConfigError`` naming the first key ``cls`` has no field for."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key; expected some of {sorted(known)}")
    return dict(data)


# --- validation helpers: each names the key ``section.name`` in its error ---------------------


def _int(section: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{section}.{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _number(section: str, name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{section}.{name}: expected a number in [{low}, {high}], got {value!r}")
    return float(value)


def _bool(section: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{section}.{name}: expected true or false, got {value!r}")
    return value


def _ints(section: str, name: str, value: Any, minimum: int = 1) -> tuple[int, ...]:
    if isinstance(value, int | str | bool) or value is None:
        raise ConfigError(f"{section}.{name}: expected a list of integers >= {minimum}, got {value!r}")
    items = tuple(value)
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in items):
        raise ConfigError(f"{section}.{name}: expected a non-empty list of integers >= {minimum}, got {value!r}")
    return items


def _odd(section: str, name: str, values: tuple[int, ...]) -> None:
    for k in values:
        if k % 2 == 0:
            raise ConfigError(f"{section}.{name}: {k} is even; odd kernels keep the feature map centred")


def _same_length(section: str, **lists: tuple[int, ...]) -> None:
    if len({len(v) for v in lists.values()}) != 1:
        sizes = ", ".join(f"{k} ({len(v)})" for k, v in lists.items())
        raise ConfigError(f"{section}: expected lists of the same length: {sizes}")


class _Section:
    """``from_dict`` / ``to_dict`` for a frozen dataclass section; tuples become lists."""

    section: ClassVar[str] = "model"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):  # type: ignore[no-untyped-def]
        return cls(**reject_unknown(cls, data, cls.section))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


# --- cores --------------------------------------------------------------------------------------


def _penalty(section: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{section}.{name}: expected a number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Factorized3dCoreConfig(_Section):
    """The official baseline core: per layer a spatial ``(1, k, k)`` then a temporal
    ``(k_t, 1, 1)`` convolution (with biases, unpadded), batch norm, ELU. Architecture
    defaults are the starter kit's factorised-3D baseline; the penalty strengths default to
    0 (the baseline's YAML sets 10 and 0.01)."""

    section: ClassVar[str] = "model.core"
    type: str = "factorized3d"
    channels: tuple[int, ...] = (32, 64, 128)
    spatial_kernels: tuple[int, ...] = (11, 5, 5)
    temporal_kernels: tuple[int, ...] = (11, 5, 5)
    #: Zero-pad the spatial convolutions ("same" size maps); the baseline does not, so each
    #: layer shrinks the map by ``kernel - 1`` (36 x 64 -> 18 x 46).
    padding: bool = False
    #: PyTorch convention (weight of the new batch's statistics); the baseline's is 0.7.
    batch_norm_momentum: float = 0.7
    #: Strength of the Laplace smoothness penalty on the first layer's spatial filters
    #: (neuralpredictors' ``gamma_input_spatial``) and on its temporal filters (``gamma_input_temporal``).
    spatial_laplace: float = 0.0
    temporal_laplace: float = 0.0

    def __post_init__(self) -> None:
        s = self.section
        for name in ("channels", "spatial_kernels", "temporal_kernels"):
            object.__setattr__(self, name, _ints(s, name, getattr(self, name)))
        _same_length(
            s, channels=self.channels, spatial_kernels=self.spatial_kernels, temporal_kernels=self.temporal_kernels
        )
        _odd(s, "spatial_kernels", self.spatial_kernels)
        _bool(s, "padding", self.padding)
        _number(s, "batch_norm_momentum", self.batch_norm_momentum, 0.0, 1.0)
        for name in ("spatial_laplace", "temporal_laplace"):
            object.__setattr__(self, name, _penalty(s, name, getattr(self, name)))


@dataclass(frozen=True)
class Gru2dCoreConfig(_Section):
    """The baseline's other core: a 2D convolution stack per frame, then a convolutional GRU
    over time (causal; its state starts at zero in every window). Architecture defaults are
    the starter kit's 2D-core + GRU model (``models_demo`` notebook); penalty strengths
    default to 0 (the baseline's YAML sets 500 and 500,000)."""

    section: ClassVar[str] = "model.core"
    type: str = "gru2d"
    #: Channels of each 2D layer; the first uses ``input_kernel``, the others ``hidden_kernel``.
    channels: tuple[int, ...] = (64, 64, 64, 64)
    input_kernel: int = 9
    hidden_kernel: int = 7
    #: Hidden layers as depth-wise then point-wise convolutions (fewer parameters and FLOPs;
    #: not the baseline, which uses full convolutions).
    depth_separable: bool = False
    #: Zero-pad the first layer ("same" size); the baseline does not (36 x 64 -> 28 x 56).
    pad_input: bool = False
    #: ELU after the last 2D layer too; the baseline has none there.
    final_nonlinearity: bool = False
    gru_channels: int = 64
    gru_input_kernel: int = 7
    gru_kernel: int = 7
    #: Frames a window needs before its outputs are trusted (the GRU warms up from a zero
    #: state); reported as the model's ``context_frames``.
    burn_in_frames: int = 10
    batch_norm_momentum: float = 0.9
    #: Strength of the Laplace smoothness penalty on the first layer's filters
    #: (neuralpredictors' ``gamma_input``) and of the group sparsity of the hidden layers'
    #: filters (``gamma_hidden``).
    input_laplace: float = 0.0
    hidden_group_sparsity: float = 0.0

    def __post_init__(self) -> None:
        s = self.section
        object.__setattr__(self, "channels", _ints(s, "channels", self.channels))
        for name in ("input_kernel", "hidden_kernel", "gru_input_kernel", "gru_kernel"):
            _int(s, name, getattr(self, name), 1)
            _odd(s, name, (getattr(self, name),))
        _int(s, "gru_channels", self.gru_channels, 1)
        _int(s, "burn_in_frames", self.burn_in_frames, 0)
        for name in ("depth_separable", "pad_input", "final_nonlinearity"):
            _bool(s, name, getattr(self, name))
        _number(s, "batch_norm_momentum", self.batch_norm_momentum, 0.0, 1.0)
        for name in ("input_laplace", "hidden_group_sparsity"):
            object.__setattr__(self, name, _penalty(s, name, getattr(self, name)))


@dataclass(frozen=True)
class DwiseNeuroCoreConfig(_Section):
    """The 1st-place core, as its reference code builds it (see
    :mod:`sensorium_pipeline.models.dwiseneuro`): point-wise stem, (2+1)D depth-wise
    inverted residual blocks with position encoding, squeeze-and-excitation over time and
    space, stochastic depth and batch-normed shortcuts; average over space; the "cortex",
    grouped point-wise 1D convolutions with channel shuffle shared by all mice. Defaults are
    the winners' final stage-1 size (expansion 7; their distillation stage used 6)."""

    section: ClassVar[str] = "model.core"
    type: str = "dwiseneuro"
    #: Width of each group of blocks, and blocks per group. The stem outputs the first width;
    #: a group's first block strides ``group_stride`` in space, its last block widens to the
    #: next group's width.
    channels: tuple[int, ...] = (64, 128, 256)
    depths: tuple[int, ...] = (4, 3, 2)
    group_stride: int = 2
    #: Inverted residual: narrow -> ``expansion`` x wide -> narrow.
    expansion: int = 7
    spatial_kernel: int = 3
    temporal_kernel: int = 5
    #: Squeeze-and-excitation bottleneck = the block's wide width // ``se_reduction``.
    se_reduction: int = 32
    #: Add a fixed sinusoidal (t, y, x) position encoding to every block's input.
    position_encoding: bool = True
    #: Stochastic depth of block ``i`` of ``n``: ``drop_path * i / n``.
    drop_path: float = 0.1
    cortex_channels: tuple[int, ...] = (1024, 2048, 4096)
    cortex_groups: int = 2
    #: Stochastic depth of every cortex layer.
    cortex_drop_path: float = 0.1
    batch_norm_momentum: float = 0.1

    def __post_init__(self) -> None:
        s = self.section
        for name in ("channels", "depths", "cortex_channels"):
            object.__setattr__(self, name, _ints(s, name, getattr(self, name)))
        _same_length(s, channels=self.channels, depths=self.depths)
        for name in ("group_stride", "expansion", "se_reduction", "cortex_groups"):
            _int(s, name, getattr(self, name), 1)
        for name in ("spatial_kernel", "temporal_kernel"):
            _int(s, name, getattr(self, name), 1)
            _odd(s, name, (getattr(self, name),))
        _bool(s, "position_encoding", self.position_encoding)
        for name in ("drop_path", "cortex_drop_path", "batch_norm_momentum"):
            _number(s, name, getattr(self, name), 0.0, 1.0)
        for width in self.channels:
            if width * self.expansion < self.se_reduction:
                raise ConfigError(
                    f"{s}.se_reduction: {self.se_reduction} leaves no squeeze-and-excitation channel for the "
                    f"{width * self.expansion}-wide blocks of width {width} (expansion {self.expansion})"
                )
        for c in self.cortex_channels:
            if c % self.cortex_groups:
                raise ConfigError(f"{s}.cortex_channels: {c} is not divisible by cortex_groups ({self.cortex_groups})")


CORES: dict[str, type] = {
    "factorized3d": Factorized3dCoreConfig,
    "gru2d": Gru2dCoreConfig,
    "dwiseneuro": DwiseNeuroCoreConfig,
}


# --- readouts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianReadoutConfig(_Section):
    """One point of the feature map per neuron, predicted from its cortical coordinates
    (the starter kit's readout; defaults are its settings)."""

    section: ClassVar[str] = "model.readout"
    type: str = "gaussian"
    position_hidden: int = 30
    #: Hidden layers of the position MLP (the baseline has one).
    position_layers: int = 1
    #: Cortical coordinates the MLP sees: 2 (x, y; the baseline) or 3 (x, y, depth).
    position_dims: int = 2
    #: The 2x2 matrix that scales the training-time position noise starts with entries
    #: uniform in ``[-init_sigma, init_sigma]`` (grid units; the map spans [-1, 1]).
    init_sigma: float = 1.0
    #: Strength of the L1 penalty on the channel weights (summed; neuralpredictors'
    #: ``gamma_readout``, 0 in the baseline).
    l1: float = 0.0

    def __post_init__(self) -> None:
        s = self.section
        _int(s, "position_hidden", self.position_hidden, 1)
        _int(s, "position_layers", self.position_layers, 1)
        if self.position_dims not in (2, 3) or isinstance(self.position_dims, bool):
            raise ConfigError(f"{s}.position_dims: expected 2 or 3, got {self.position_dims!r}")
        _number(s, "init_sigma", self.init_sigma, 0.0, 2.0)
        object.__setattr__(self, "l1", _penalty(s, "l1", self.l1))


@dataclass(frozen=True)
class FactorizedReadoutConfig(_Section):
    """A free spatial mask x channel weights per neuron (learns fast; no coordinates)."""

    section: ClassVar[str] = "model.readout"
    type: str = "factorized"


@dataclass(frozen=True)
class DwiseNeuroReadoutConfig(_Section):
    """Per-mouse grouped point-wise 1D convolution on the cortex's vector per frame, after
    channel-wise dropout. Its bias starts at 0 (the reference) or, with ``bias_init:
    mean_response``, at the output nonlinearity's inverse of each neuron's mean response."""

    section: ClassVar[str] = "model.readout"
    type: str = "dwiseneuro"
    groups: int = 2
    dropout: float = 0.4
    bias_init: str = "zero"

    def __post_init__(self) -> None:
        _int(self.section, "groups", self.groups, 1)
        _number(self.section, "dropout", self.dropout, 0.0, 1.0)
        if self.bias_init not in ("zero", "mean_response"):
            raise ConfigError(f"{self.section}.bias_init: {self.bias_init!r} is not one of ['zero', 'mean_response']")


READOUTS: dict[str, type] = {
    "gaussian": GaussianReadoutConfig,
    "factorized": FactorizedReadoutConfig,
    "dwiseneuro": DwiseNeuroReadoutConfig,
}
#: Cores whose features are vectors per frame (no spatial map), and the readouts that read them.
VECTOR_CORES = ("dwiseneuro",)
VECTOR_READOUTS = ("dwiseneuro",)


@dataclass(frozen=True)
class ShifterConfig(_Section):
    """Per-mouse MLP: pupil centre -> shift of the readout positions (map readouts only)."""

    section: ClassVar[str] = "model.shifter"
    hidden: int = 5
    layers: int = 3

    def __post_init__(self) -> None:
        _int(self.section, "hidden", self.hidden, 1)
        _int(self.section, "layers", self.layers, 1)


def _typed(kinds: dict[str, type], data: Any, section: str, default: str) -> Any:
    """The dataclass of ``data['type']`` (a bare string names the type with its defaults)."""
    if isinstance(data, str):
        data = {"type": data}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section}: expected a mapping with a 'type' key, got {data!r}")
    data = dict(data)
    kind = data.setdefault("type", default)
    if kind not in kinds:
        raise ConfigError(f"{section}.type: {kind!r} is not one of {list(kinds)}")
    return kinds[kind].from_dict(data)


@dataclass(frozen=True)
class ModelConfig:
    """Inputs, core, readout, shifter and output nonlinearity of one model (see module doc)."""

    core: Any = field(default_factory=Factorized3dCoreConfig)
    readout: Any = field(default_factory=GaussianReadoutConfig)
    shifter: ShifterConfig | None = field(default_factory=ShifterConfig)
    #: The model sees frames ``start, start + frame_step, ...``: the window sampler and the
    #: sliding-window prediction honour it (see ``sensorium_pipeline.models``).
    frame_step: int = 1
    #: Integer factor of average pooling applied to the video before the core (1 = none).
    downsample: int = 1
    #: Zero-pad the (downsampled) video to ``[height, width]`` (the winners: 36x64 -> 64x64).
    pad_to: tuple[int, int] | None = None
    #: Stack pupil dilation and running speed as two extra input channels.
    behavior_channels: bool = True
    #: Also stack the pupil centre (x, y) as input channels.
    pupil_channels: bool = False
    #: Output nonlinearity: ``elu1`` (ELU + 1) or ``softplus`` (with ``softplus_beta``).
    output: str = "elu1"
    softplus_beta: float = 1.0
    #: Learn the Softplus beta (starting at ``softplus_beta``) instead of fixing it.
    softplus_learnable: bool = False
    #: Dropout on the core features before the readout.
    dropout: float = 0.0
    #: The input values the model expects (:data:`INPUTS`); the data side delivers them.
    inputs: str = "official"

    def __post_init__(self) -> None:
        s = "model"
        if isinstance(self.core, Mapping | str):
            object.__setattr__(self, "core", _typed(CORES, self.core, "model.core", "factorized3d"))
        if isinstance(self.readout, Mapping | str):
            object.__setattr__(self, "readout", _typed(READOUTS, self.readout, "model.readout", "gaussian"))
        if isinstance(self.shifter, Mapping):
            object.__setattr__(self, "shifter", ShifterConfig.from_dict(self.shifter))
        if not isinstance(self.core, tuple(CORES.values())):
            raise ConfigError(f"model.core: expected a mapping with a 'type' key, got {self.core!r}")
        if not isinstance(self.readout, tuple(READOUTS.values())):
            raise ConfigError(f"model.readout: expected a mapping with a 'type' key, got {self.readout!r}")
        if self.shifter is not None and not isinstance(self.shifter, ShifterConfig):
            raise ConfigError(f"model.shifter: expected a mapping or null, got {self.shifter!r}")
        vector_core = self.core.type in VECTOR_CORES
        if vector_core != (self.readout.type in VECTOR_READOUTS):
            wanted = list(VECTOR_READOUTS) if vector_core else [r for r in READOUTS if r not in VECTOR_READOUTS]
            raise ConfigError(
                f"model.readout.type: {self.readout.type!r} cannot read the {self.core.type!r} core; expected one of {wanted}"
            )
        if vector_core and self.shifter is not None:
            raise ConfigError(f"model.shifter: the {self.core.type!r} core has no feature map to shift; set it to null")
        _int(s, "frame_step", self.frame_step, 1)
        _int(s, "downsample", self.downsample, 1)
        if self.pad_to is not None:
            pad = _ints(s, "pad_to", self.pad_to)
            if len(pad) != 2:
                raise ConfigError(f"model.pad_to: expected [height, width] or null, got {self.pad_to!r}")
            object.__setattr__(self, "pad_to", pad)
        for name in ("behavior_channels", "pupil_channels", "softplus_learnable"):
            _bool(s, name, getattr(self, name))
        if self.inputs not in INPUTS:
            raise ConfigError(f"model.inputs: {self.inputs!r} is not one of {list(INPUTS)}")
        if self.output not in OUTPUTS:
            raise ConfigError(f"model.output: {self.output!r} is not one of {list(OUTPUTS)}")
        _number(s, "dropout", self.dropout, 0.0, 1.0)
        if (
            isinstance(self.softplus_beta, bool)
            or not isinstance(self.softplus_beta, int | float)
            or not self.softplus_beta > 0
        ):
            raise ConfigError(f"model.softplus_beta: expected a positive number, got {self.softplus_beta!r}")

    @property
    def in_channels(self) -> int:
        """Channels of the core input: the video plus the broadcast behaviour / pupil values."""
        return 1 + 2 * self.behavior_channels + 2 * self.pupil_channels

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"model: expected a mapping, got {type(data).__name__}")
        return cls(**reject_unknown(cls, dict(data), "model"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _Section):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


@dataclass(frozen=True)
class MouseMeta:
    """What the model must know about a mouse at construction: its neurons."""

    name: str
    unit_ids: Any  # (N,) int64 array
    coordinates: Any  # (N, 3) float array, µm
    #: Mean normalised response per neuron over training frames (initialises the readout bias).
    mean_response: Any = None

    @property
    def n_neurons(self) -> int:
        return len(self.unit_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit_ids": np.asarray(self.unit_ids, dtype=np.int64).tolist(),
            "coordinates": np.asarray(self.coordinates, dtype=np.float64).tolist(),
            "mean_response": None
            if self.mean_response is None
            else np.asarray(self.mean_response, dtype=np.float64).tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MouseMeta:
        data = reject_unknown(cls, data, "mouse")
        mean = data.get("mean_response")
        return cls(
            name=str(data["name"]),
            unit_ids=np.asarray(data["unit_ids"], dtype=np.int64),
            coordinates=np.asarray(data["coordinates"], dtype=np.float64).reshape(-1, 3),
            mean_response=None if mean is None else np.asarray(mean, dtype=np.float64),
        )
