"""The model: a shared core, then one readout (Gaussian or factorized) and shifter per mouse.

Every model of the package has the same interface,
``forward(video, behavior, pupil_center, mouse) -> (batch, time, n_neurons of mouse)``, with
time-first inputs in the official normalisation: video ``(B, T, H, W)``, behaviour and pupil
centre ``(B, T, 2)``. Output frame ``t`` predicts the response at input frame ``t`` from
frames ``t - context_frames .. t`` (causal; see :mod:`.cores`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, MouseMeta
from .cores import Factorized3dCore
from ..layout import VIDEO_HEIGHT, VIDEO_WIDTH
from .readouts import FactorizedReadout, GaussianReadout
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
    """Softplus with a slope parameter (the winners used a small beta)."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x, beta=self.beta)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        y = np.maximum(np.asarray(y, dtype=np.float64), 1e-6)
        by = self.beta * y
        return np.where(by > 20.0, y, np.log(np.expm1(np.minimum(by, 20.0))) / self.beta)


class SensoriumModel(nn.Module):
    """Factorised 3D core → per-mouse readout (+ shifter) → positive output."""

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
        in_channels = 1 + 2 * config.behavior_channels + 2 * config.pupil_channels
        self.core = Factorized3dCore(
            in_channels,
            config.core_channels,
            config.spatial_kernels,
            config.temporal_kernels,
            momentum=config.batch_norm_momentum,
        )
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.nonlinearity = Elu1() if config.output == "elu1" else BetaSoftplus(config.softplus_beta)
        self.readouts = nn.ModuleDict()
        self.shifters = nn.ModuleDict()
        for meta in mice:
            key = self._index[meta.name]
            init_bias = None if meta.mean_response is None else self.nonlinearity.inverse(meta.mean_response)
            if config.readout == "factorized":
                self.readouts[key] = FactorizedReadout(
                    self.core.out_channels,
                    meta.n_neurons,
                    VIDEO_HEIGHT // config.downsample,
                    VIDEO_WIDTH // config.downsample,
                    init_bias=init_bias,
                )
            else:
                self.readouts[key] = GaussianReadout(
                    self.core.out_channels,
                    np.asarray(meta.coordinates),
                    position_hidden=config.position_hidden,
                    position_layers=config.position_layers,
                    init_sigma=config.init_sigma,
                    init_bias=init_bias,
                )
            if config.shifter_hidden > 0:
                self.shifters[key] = MLPShifter(config.shifter_hidden, config.shifter_layers)

    @property
    def context_frames(self) -> int:
        return self.core.context_frames

    def n_neurons(self, mouse: str) -> int:
        return self.readouts[self._key(mouse)].n_neurons

    def readout_l1(self, mouse: str) -> torch.Tensor:
        """Sparsity penalty of the mouse's readout (its ``l1``: weights summed per neuron, mean over neurons)."""
        return self.readouts[self._key(mouse)].l1()

    def _key(self, mouse: str) -> str:
        if mouse not in self._index:
            raise KeyError(f"the model knows no mouse {mouse!r}; it was built for {self.mice}")
        return self._index[mouse]

    def _inputs(self, video: torch.Tensor, behavior: torch.Tensor, pupil_center: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, h, w)`` core input: the (downsampled) video and broadcast behaviour channels."""
        batch, time, height, width = video.shape
        x = video.reshape(batch * time, 1, height, width)
        if self.config.downsample > 1:
            x = F.avg_pool2d(x, self.config.downsample)
        height, width = x.shape[-2:]
        channels = [x.reshape(batch, time, 1, height, width)]
        for flag, values in ((self.config.behavior_channels, behavior), (self.config.pupil_channels, pupil_center)):
            if flag:
                channels.append(values[:, :, :, None, None].expand(batch, time, 2, height, width))
        return torch.cat(channels, dim=2).transpose(1, 2)

    def forward(
        self, video: torch.Tensor, behavior: torch.Tensor, pupil_center: torch.Tensor, mouse: str
    ) -> torch.Tensor:
        key = self._key(mouse)
        features = self.dropout(self.core(self._inputs(video, behavior, pupil_center)))
        shift = self.shifters[key](pupil_center) if key in self.shifters else None
        return self.nonlinearity(self.readouts[key](features, shift))
