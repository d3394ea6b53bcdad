"""The 1st-place SENSORIUM 2023 model ("DwiseNeuro"), structured as its public reference
implementation (lRomul/sensorium, commit 6849050) so that its published weights load
tensor for tensor (:mod:`.import_weights`); our own code and names.

Video ``(B, C, T, H, W)`` -> point-wise stem -> (2+1)D depth-wise inverted residual blocks
-> average over space -> cortex (grouped point-wise 1D convolutions with channel shuffle,
shared by all mice) -> ``(B, C_cortex, T)`` -> per-mouse grouped point-wise readout.

The blocks form groups of equal width; a group's first block strides 2 in space, and its
last block widens to the next group's width (64 -> 128 at block 3, 128 -> 256 at block 6 at
the winners' size). Every block's shortcut (resize, cyclic channel repeat) ends in a batch
norm, as does every cortex layer's. Squeeze-and-excitation averages over time and space, so
each output of a window depends on the whole window: the temporal reach is unbounded
(:data:`WHOLE_WINDOW`), which makes training use every output of a window and prediction
average every window that covers a frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (
    DepthwiseSpatialConv,
    DepthwiseTemporalConv,
    DropPath,
    NormedShortcut,
    PositionEncoding3d,
    SqueezeExcite,
    channel_shuffle,
    cyclic_channels,
)
from .config import DwiseNeuroCoreConfig, DwiseNeuroReadoutConfig

#: Temporal reach (``context_frames`` / ``lookahead_frames``) of a model whose outputs depend
#: on every frame of their window: larger than any window.
WHOLE_WINDOW = 1 << 20


def block_widths(channels: Sequence[int], depths: Sequence[int]) -> list[int]:
    """Input width of every block: each group's width repeated ``depth`` times."""
    return [c for c, d in zip(channels, depths, strict=True) for _ in range(d)]


class InvertedResidual3d(nn.Module):
    """Narrow -> wide (point-wise) -> depth-wise spatial ``(1, k, k)`` (with the stride) ->
    depth-wise temporal ``(k_t, 1, 1)`` -> squeeze-and-excitation -> narrow (point-wise) to
    ``out_channels``; batch norm after every convolution, SiLU inside; plus a batch-normed
    shortcut. Stochastic depth drops the branch, not the shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        expansion: int,
        spatial_kernel: int,
        temporal_kernel: int,
        se_reduction: int,
        position_encoding: bool,
        drop_path: float,
        momentum: float,
    ) -> None:
        super().__init__()
        mid = in_channels * expansion
        self.position = PositionEncoding3d() if position_encoding else nn.Identity()
        self.expand = nn.Conv3d(in_channels, mid, 1, bias=False)
        self.norm_expand = nn.BatchNorm3d(mid, momentum=momentum)
        self.spatial = DepthwiseSpatialConv(mid, spatial_kernel, stride)
        self.norm_spatial = nn.BatchNorm3d(mid, momentum=momentum)
        self.temporal = DepthwiseTemporalConv(mid, temporal_kernel)
        self.norm_temporal = nn.BatchNorm3d(mid, momentum=momentum)
        self.excite = SqueezeExcite(mid, mid // se_reduction)
        self.project = nn.Conv3d(mid, out_channels, 1, bias=False)
        self.norm_project = nn.BatchNorm3d(out_channels, momentum=momentum)
        self.drop_path = DropPath(drop_path)
        self.shortcut = NormedShortcut(out_channels, momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.position(x)
        y = F.silu(self.norm_expand(self.expand(x)))
        y = F.silu(self.norm_spatial(self.spatial(y)))
        y = F.silu(self.norm_temporal(self.temporal(y)))
        y = self.norm_project(self.project(self.excite(y)))
        return self.drop_path(y) + self.shortcut(x, y)


class CortexBlock(nn.Module):
    """Per-frame grouped point-wise 1D convolution, batch norm, SiLU, channel shuffle; plus a
    cyclic-repeat shortcut with batch norm; stochastic depth on the branch:
    ``(B, C_in, T)`` -> ``(B, C_out, T)``."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, drop_path: float, momentum: float):
        super().__init__()
        self.groups = groups
        self.conv = nn.Conv1d(in_channels, out_channels, 1, groups=groups, bias=False)
        self.norm = nn.BatchNorm1d(out_channels, momentum=momentum)
        self.drop_path = DropPath(drop_path)
        self.norm_shortcut = nn.BatchNorm1d(out_channels, momentum=momentum)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = channel_shuffle(F.silu(self.norm(self.conv(x))), self.groups)
        return self.drop_path(y) + self.norm_shortcut(cyclic_channels(x, self.out_channels))


class DwiseNeuroCore(nn.Module):
    """Stem, inverted residual groups, spatial pooling, cortex: ``(B, C, T, H, W)`` -> ``(B, C', T)``."""

    def __init__(self, in_channels: int, config: DwiseNeuroCoreConfig) -> None:
        super().__init__()
        c = config
        channels, depths, momentum = c.channels, c.depths, c.batch_norm_momentum
        widths = block_widths(channels, depths)
        firsts = {sum(depths[:g]) for g in range(len(depths))}
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, widths[0], 1, bias=False), nn.BatchNorm3d(widths[0], momentum=momentum)
        )
        blocks: list[nn.Module] = []
        for i, width in enumerate(widths):
            blocks.append(
                InvertedResidual3d(
                    width,
                    widths[min(i + 1, len(widths) - 1)],
                    stride=c.group_stride if i in firsts else 1,
                    expansion=c.expansion,
                    spatial_kernel=c.spatial_kernel,
                    temporal_kernel=c.temporal_kernel,
                    se_reduction=c.se_reduction,
                    position_encoding=c.position_encoding,
                    drop_path=c.drop_path * i / len(widths),
                    momentum=momentum,
                )
            )
        self.blocks = nn.Sequential(*blocks)
        cortex: list[nn.Module] = []
        width = widths[-1]
        for out in c.cortex_channels:
            cortex.append(CortexBlock(width, out, c.cortex_groups, c.cortex_drop_path, momentum))
            width = out
        self.cortex = nn.Sequential(*cortex)
        self.out_channels = width
        self.context_frames = self.lookahead_frames = WHOLE_WINDOW
        init_as_reference(self)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The features are vectors per frame: no spatial map."""
        return 1, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.blocks(self.stem(x))
        return self.cortex(maps.mean(dim=(3, 4)))


class DwiseNeuroReadout(nn.Module):
    """One mouse's readout: channel-wise dropout (whole cortex channels of a window), then a
    grouped point-wise 1D convolution with bias from the cortex's ``(B, C, T)`` vectors to the
    mouse's neurons. A neuron count that ``groups`` does not divide is padded with unused
    outputs, which are cut off. Returns ``(B, T, N)`` pre-activations. With ``bias_init:
    mean_response`` the bias starts at ``init_bias`` (the mouse's mean response) when given."""

    def __init__(
        self, in_channels: int, n_neurons: int, config: DwiseNeuroReadoutConfig, init_bias: np.ndarray | None = None
    ) -> None:
        super().__init__()
        groups = config.groups
        self._n_neurons = int(n_neurons)
        padded = math.ceil(n_neurons / groups) * groups
        self.dropout = nn.Dropout1d(config.dropout)
        self.conv = nn.Conv1d(in_channels, padded, 1, groups=groups, bias=True)
        init_as_reference(self)
        if config.bias_init == "mean_response" and init_bias is not None:
            with torch.no_grad():
                self.bias[: self._n_neurons] = torch.as_tensor(init_bias, dtype=torch.float32)

    @property
    def n_neurons(self) -> int:
        return self._n_neurons

    @property
    def bias(self) -> nn.Parameter:
        """The per-neuron bias (padded to the groups like the weights)."""
        return self.conv.bias

    def l1(self) -> torch.Tensor:
        """L1 norm of the weights, summed per neuron, mean over neurons."""
        return self.conv.weight[: self.n_neurons].abs().sum((1, 2)).mean()

    def forward(self, features: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(self.dropout(features))[:, : self.n_neurons]  # (B, N, T)
        return out.transpose(1, 2)


def init_as_reference(module: nn.Module) -> None:
    """The reference's initialisation: every convolution's weight from ``N(0, 2 / fan_out)``
    (fan_out = kernel size x output channels / groups), biases 0, batch norms 1 and 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            fan_out = math.prod(m.kernel_size) * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, DepthwiseSpatialConv | DepthwiseTemporalConv):
            # depth-wise: one filter per output channel, so fan_out is the kernel size
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / math.prod(m.weight.shape[2:])))
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
