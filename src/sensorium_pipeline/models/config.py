"""The architecture's hyperparameters: the ``model:`` section of ``config/models/<name>.yaml``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

OUTPUTS = ("elu1", "softplus")
READOUTS = ("gaussian", "factorized")


def reject_unknown(cls: type, data: Mapping[str, Any], section: str) -> dict[str, Any]:
    """``data`` as a dict, or a ``ConfigError`` naming the first key ``cls`` has no field for."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key; expected some of {sorted(known)}")
    return dict(data)


@dataclass(frozen=True)
class ModelConfig:
    """Factorised 3D core + per-mouse Gaussian readout with position MLP and pupil shifter.

    Defaults are the official SENSORIUM 2023 baseline (spec §7).
    """

    #: Channels of each core layer; one spatial then one temporal convolution per layer.
    core_channels: tuple[int, ...] = (32, 64, 128)
    spatial_kernels: tuple[int, ...] = (11, 5, 5)
    temporal_kernels: tuple[int, ...] = (11, 5, 5)
    #: Integer factor of average pooling applied to the video before the core (1 = none).
    downsample: int = 1
    #: Stack pupil dilation and running speed as two extra input channels.
    behavior_channels: bool = True
    #: Also stack the pupil centre (x, y) as input channels.
    pupil_channels: bool = False
    batch_norm_momentum: float = 0.1
    #: ``gaussian`` (one point per neuron, predicted from its cortical coordinates: the
    #: baseline) or ``factorized`` (a free spatial mask per neuron: learns where neurons look
    #: in far fewer steps, the choice for a CPU budget).
    readout: str = "gaussian"
    #: Hidden units of the MLP that maps cortical coordinates to readout positions.
    position_hidden: int = 30
    position_layers: int = 2
    #: Initial std of the Gaussian position noise during training (grid units, [-1, 1]).
    init_sigma: float = 0.2
    #: Hidden units of the per-mouse pupil-centre shifter (0 = no shifter).
    shifter_hidden: int = 5
    shifter_layers: int = 3
    #: Output nonlinearity: ``elu1`` (ELU + 1) or ``softplus`` (with ``softplus_beta``).
    output: str = "elu1"
    softplus_beta: float = 1.0
    #: Dropout on the core features before the readout.
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("core_channels", "spatial_kernels", "temporal_kernels"):
            value = getattr(self, name)
            if isinstance(value, int | str) or not all(isinstance(v, int) and v >= 1 for v in value):
                raise ConfigError(f"model.{name}: expected a list of positive integers, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not len(self.core_channels) == len(self.spatial_kernels) == len(self.temporal_kernels) >= 1:
            raise ConfigError(
                "model.core_channels, spatial_kernels, temporal_kernels: expected lists of the same length "
                f"(got {len(self.core_channels)}, {len(self.spatial_kernels)}, {len(self.temporal_kernels)})"
            )
        for k in self.spatial_kernels:
            if k % 2 == 0:
                raise ConfigError(f"model.spatial_kernels: {k} is even; odd kernels keep the feature map centred")
        for name in ("downsample", "position_hidden", "position_layers", "shifter_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name}: expected a positive integer, got {value!r}")
        if isinstance(self.shifter_hidden, bool) or not isinstance(self.shifter_hidden, int) or self.shifter_hidden < 0:
            raise ConfigError(f"model.shifter_hidden: expected an integer >= 0, got {self.shifter_hidden!r}")
        if self.readout not in READOUTS:
            raise ConfigError(f"model.readout: {self.readout!r} is not one of {list(READOUTS)}")
        if self.output not in OUTPUTS:
            raise ConfigError(f"model.output: {self.output!r} is not one of {list(OUTPUTS)}")
        for name, low, high in (
            ("batch_norm_momentum", 0.0, 1.0),
            ("init_sigma", 0.0, 2.0),
            ("softplus_beta", 0.0, float("inf")),
            ("dropout", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ConfigError(f"model.{name}: expected a number in [{low}, {high}], got {value!r}")
        if self.softplus_beta <= 0:
            raise ConfigError(f"model.softplus_beta: expected a positive number, got {self.softplus_beta!r}")

    @property
    def context_frames(self) -> int:
        """Past frames an output frame depends on besides its own: sum of (temporal kernel - 1)."""
        return sum(k - 1 for k in self.temporal_kernels)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        return cls(**reject_unknown(cls, data, "model"))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


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

