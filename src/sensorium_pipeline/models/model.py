"""The model: input stack, a shared core, then one readout (and shifter) per mouse, then a
positive output nonlinearity; each part chosen by the config (see :mod:`.config`).

Every model of the package has the same interface (the contract is in
:mod:`sensorium_pipeline.models`): ``forward(video, behavior, pupil_center, mouse) ->
(batch, time, n_neurons of mouse)``, with time-first inputs in the official normalisation:
video ``(B, T, H, W)``, behaviour and pupil centre ``(B, T, 2)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layout import VIDEO_HEIGHT, VIDEO_WIDTH
from .config import (
    DwiseNeuroCoreConfig,
    DwiseNeuroReadoutConfig,
    Factorized3dCoreConfig,
    FactorizedReadoutConfig,
    GaussianReadoutConfig,
    Gru2dCoreConfig,
    ModelConfig,
    MouseMeta,
)
from .cores import Factorized3dCore, Gru2dCore
from .dwiseneuro import DwiseNeuroCore, DwiseNeuroReadout
from .inputs import InputStack
from .readouts import FactorizedReadout, GaussianReadout, Readout
from .shifters import MLPShifter


class Elu1(nn.Module):
    """ELU + 1: positive rates, linear above 1 (the official output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x) + 1.0

    @staticmethod
    def inverse(y: np.ndarray) -> np.ndarray:
        y = np.maximum(np.asarray(y, dtype=np.float64), 1e-6)
        return np.where(y >= 1.0, y - 1.0, np.log(y))


class BetaSoftplus(nn.Module):
    """``softplus(beta x) / beta``; the winners used a small beta (0.07), optionally learnt
    (kept positive through its logarithm)."""

    def __init__(self, beta: float, learnable: bool = False) -> None:
        super().__init__()
        log_beta = torch.tensor(float(np.log(beta)))
        if learnable:
            self.log_beta = nn.Parameter(log_beta)
        else:
            self.register_buffer("log_beta", log_beta)

    @property
    def beta(self) -> float:
        return float(self.log_beta.exp())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.log_beta.exp().to(x.dtype)
        return F.softplus(x * beta) / beta

    def inverse(self, y: np.ndarray) -> np.ndarray:
        y = np.maximum(np.asarray(y, dtype=np.float64), 1e-6)
        beta = self.beta
        by = beta * y
        return np.where(by > 20.0, y, np.log(np.expm1(np.minimum(by, 20.0))) / beta)


#: The module of each core config: it is built from ``(in_channels, config)``.
CORE_MODULES: dict[type, type[nn.Module]] = {
    Factorized3dCoreConfig: Factorized3dCore,
    Gru2dCoreConfig: Gru2dCore,
    DwiseNeuroCoreConfig: DwiseNeuroCore,
}


def build_core(config: ModelConfig, in_channels: int) -> nn.Module:
    """The core of ``config.core``; it has ``out_channels``, ``context_frames``,
    ``lookahead_frames`` and ``output_size(height, width)``."""
    module = CORE_MODULES.get(type(config.core))
    if module is None:
        raise TypeError(f"no core for {type(config.core).__name__}")
    return module(in_channels, config.core)


def build_readout(
    config: ModelConfig, meta: MouseMeta, in_channels: int, map_size: tuple[int, int], init_bias: np.ndarray | None
) -> Readout | DwiseNeuroReadout:
    """The readout of ``config.readout`` for one mouse; ``init_bias`` is its initial bias."""
    r = config.readout
    if isinstance(r, GaussianReadoutConfig):
        return GaussianReadout(in_channels, np.asarray(meta.coordinates), r, init_bias=init_bias)
    if isinstance(r, FactorizedReadoutConfig):
        return FactorizedReadout(in_channels, meta.n_neurons, *map_size, init_bias=init_bias)
    if isinstance(r, DwiseNeuroReadoutConfig):
        return DwiseNeuroReadout(in_channels, meta.n_neurons, r, init_bias=init_bias)
    raise TypeError(f"no readout for {type(r).__name__}")


class SensoriumModel(nn.Module):
    """Input stack -> shared core -> per-mouse readout (+ shifter) -> positive output."""

    def __init__(self, config: ModelConfig, mice: Sequence[MouseMeta]) -> None:
        super().__init__()
        if not mice:
            raise ValueError("SensoriumModel: no mice")
        names = [m.name for m in mice]
        if len(set(names)) != len(names):
            raise ValueError(f"SensoriumModel: duplicate mice in {names}")
        self.config = config
        self.mice = names
        self._index = {name: f"m{i}" for i, name in enumerate(names)}  # ModuleDict keys must be plain
        self.inputs = InputStack(
            downsample=config.downsample,
            pad_to=config.pad_to,
            behavior_channels=config.behavior_channels,
            pupil_channels=config.pupil_channels,
        )
        self.core = build_core(config, self.inputs.out_channels)
        map_size = self.core.output_size(*self.inputs.output_size(VIDEO_HEIGHT, VIDEO_WIDTH))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.nonlinearity = (
            Elu1() if config.output == "elu1" else BetaSoftplus(config.softplus_beta, config.softplus_learnable)
        )
        self.readouts = nn.ModuleDict()
        self.shifters = nn.ModuleDict()
        for meta in mice:
            key = self._index[meta.name]
            init_bias = self._initial_bias(meta)
            self.readouts[key] = build_readout(config, meta, self.core.out_channels, map_size, init_bias)
            if config.shifter is not None:
                self.shifters[key] = MLPShifter(config.shifter)

    def _initial_bias(self, meta: MouseMeta) -> np.ndarray | None:
        """The readout bias a mouse starts with: the Gaussian readout's is the mean response
        itself (as the starter kit initialises it), the others' the output nonlinearity's
        inverse of it (so that the first predictions are the mean)."""
        if meta.mean_response is None:
            return None
        if isinstance(self.config.readout, GaussianReadoutConfig):
            return np.asarray(meta.mean_response, dtype=np.float64)
        return self.nonlinearity.inverse(meta.mean_response)

    @property
    def context_frames(self) -> int:
        """Model frames before output ``i`` that it depends on (GRU: the burn-in)."""
        return int(self.core.context_frames)

    @property
    def lookahead_frames(self) -> int:
        """Model frames after output ``i`` that it depends on (0 for a causal model)."""
        return int(self.core.lookahead_frames)

    @property
    def causal(self) -> bool:
        return self.lookahead_frames == 0

    @property
    def frame_step(self) -> int:
        """The model sees every ``frame_step``-th frame of a trial."""
        return int(self.config.frame_step)

    def readout(self, mouse: str) -> nn.Module:
        """``mouse``'s readout (for inspection, e.g. a Gaussian readout's positions)."""
        return self.readouts[self._key(mouse)]

    def n_neurons(self, mouse: str) -> int:
        return self.readout(mouse).n_neurons

    def readout_l1(self, mouse: str) -> torch.Tensor:
        """Sparsity penalty of the mouse's readout (its ``l1``: weights summed per neuron, mean over neurons)."""
        return self.readouts[self._key(mouse)].l1()

    def regularizer(self, mouse: str) -> torch.Tensor:
        """The weight penalties of the core and of ``mouse``'s readout with the strengths of the
        model config (0-dim): what the starter kit adds to its loss for a batch of that mouse,
        ``sum(core.regularizer()) + readout.regularizer(data_key)`` in neuralpredictors."""
        parts = (self.core, self.readouts[self._key(mouse)])
        penalties = [part.regularizer() for part in parts if hasattr(part, "regularizer")]
        zero = torch.zeros((), device=next(self.parameters()).device)
        return sum(penalties, zero)

    def _key(self, mouse: str) -> str:
        if mouse not in self._index:
            raise KeyError(f"the model knows no mouse {mouse!r}; it was built for {self.mice}")
        return self._index[mouse]

    def encode(
        self,
        video: torch.Tensor,
        behavior: torch.Tensor,
        pupil_center: torch.Tensor,
        mix: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The shared part: input stack and core (and feature dropout), once for windows of any
        mice. ``mix`` (CutMix, :mod:`sensorium_pipeline.training.cutmix`) maps the stacked input
        ``(B, C, T, h, w)`` to the one the core sees (it may drop windows: CutMix partners)."""
        x = self.inputs(video, behavior, pupil_center)
        if mix is not None:
            x = mix(x)
        return self.dropout(self.core(x))

    def decode(self, features: torch.Tensor, mouse: str, pupil_center: torch.Tensor) -> torch.Tensor:
        """``mouse``'s rates ``(B, T, n_neurons)`` from :meth:`encode`'s features (its shifter
        reads ``pupil_center``)."""
        key = self._key(mouse)
        shift = self.shifters[key](pupil_center) if key in self.shifters else None
        return self.nonlinearity(self.readouts[key](features, shift))

    def forward(
        self, video: torch.Tensor, behavior: torch.Tensor, pupil_center: torch.Tensor, mouse: str
    ) -> torch.Tensor:
        return self.decode(self.encode(video, behavior, pupil_center), mouse, pupil_center)
