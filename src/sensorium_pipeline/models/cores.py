"""Cores: the part of the model shared by all mice, video in, feature maps out.

Tensors are ``(batch, channels, time, height, width)``. Temporal convolutions are causal:
each is left-padded with ``kernel - 1`` zero frames, so the core returns one output frame
per input frame and output frame ``t`` depends only on input frames ``t - context .. t``
with ``context = sum(temporal_kernel - 1)``. A window of ``L`` frames thus predicts all
``L`` frames; its first ``context`` outputs see zero padding instead of the true past.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CausalTemporalConv(nn.Module):
    """A ``(k, 1, 1)`` convolution over time, left-padded so that no output sees the future."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv3d(in_channels, out_channels, (kernel, 1, 1), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 0, 0, 0, self.kernel - 1, 0)))


class Factorized3dLayer(nn.Module):
    """Spatial ``(1, k, k)`` convolution, then causal temporal ``(k_t, 1, 1)``, batch norm, ELU."""

    def __init__(
        self, in_channels: int, out_channels: int, spatial_kernel: int, temporal_kernel: int, momentum: float = 0.1
    ) -> None:
        super().__init__()
        pad = spatial_kernel // 2
        self.spatial = nn.Conv3d(in_channels, out_channels, (1, spatial_kernel, spatial_kernel), padding=(0, pad, pad), bias=False)
        self.temporal = CausalTemporalConv(out_channels, out_channels, temporal_kernel)
        self.norm = nn.BatchNorm3d(out_channels, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.norm(self.temporal(self.spatial(x))))


class Factorized3dCore(nn.Module):
    """The official baseline core: a stack of :class:`Factorized3dLayer`.

    Spatial padding is "same", so the feature map covers the (downsampled) screen and
    readout positions in ``[-1, 1]`` mean the same place at every layer.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        spatial_kernels: Sequence[int],
        temporal_kernels: Sequence[int],
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.layers = nn.Sequential(
            *(
                Factorized3dLayer(widths[i], widths[i + 1], spatial_kernels[i], temporal_kernels[i], momentum)
                for i in range(len(channels))
            )
        )
        self.out_channels = widths[-1]
        self.context_frames = sum(k - 1 for k in temporal_kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
