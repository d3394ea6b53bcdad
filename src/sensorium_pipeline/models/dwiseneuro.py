"""The 1st-place SENSORIUM 2023 core ("DwiseNeuro"), reimplemented from its written description
(docs/models.md), top to bottom: the inverted residual block, the cortex
block, then the core that stacks them.

Video ``(B, C, T, H, W)`` -> point-wise stem -> (2+1)D depth-wise inverted residual blocks
-> global average over space -> cortex (grouped point-wise 1D convolutions with channel
shuffle, shared by all mice) -> ``(B, C_cortex, T)``: one feature vector per frame.

Temporal convolutions are centred ("same" padding), so the core is not causal: output frame
``t`` depends on input frames ``t - r .. t + r`` with ``r = blocks x (temporal_kernel // 2)``
(squeeze-and-excitation pools over space only, per frame, to keep ``r`` finite). With the
winners' sizes ``r`` = 18 model frames, more than their 16-frame window: every output of a
window sees the whole window and some zero padding, and prediction averages overlapping
windows (see ``sensorium_pipeline.models``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (
    DepthwiseSpatialConv,
    DepthwiseTemporalConv,
    DropPath,
    PositionEncoding3d,
    Shortcut,
    SqueezeExcite,
    channel_shuffle,
    cyclic_channels,
)


class InvertedResidual3d(nn.Module):
    """Narrow -> wide (point-wise) -> depth-wise spatial ``(1, k, k)`` (with the stride) ->
    depth-wise temporal ``(k_t, 1, 1)`` -> squeeze-and-excitation -> narrow (point-wise),
    batch norm after every convolution, SiLU inside; plus a parameter-free shortcut whose sum
    with the branch is subject to stochastic depth."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        expansion: int = 6,
        spatial_kernel: int = 3,
        temporal_kernel: int = 5,
        se_ratio: float = 0.25,
        position_encoding: bool = True,
        drop_path: float = 0.0,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        mid = in_channels * expansion
        sk, tk = spatial_kernel, temporal_kernel
        self.position = PositionEncoding3d() if position_encoding else nn.Identity()
        self.expand = nn.Conv3d(in_channels, mid, 1, bias=False)
        self.norm_expand = nn.BatchNorm3d(mid, momentum=momentum)
        self.spatial = DepthwiseSpatialConv(mid, sk, stride)
        self.norm_spatial = nn.BatchNorm3d(mid, momentum=momentum)
        self.temporal = DepthwiseTemporalConv(mid, tk)
        self.norm_temporal = nn.BatchNorm3d(mid, momentum=momentum)
        hidden = max(1, round(in_channels * se_ratio))
        self.excite = SqueezeExcite(mid, hidden) if se_ratio > 0 else nn.Identity()
        self.project = nn.Conv3d(mid, out_channels, 1, bias=False)
        self.norm_project = nn.BatchNorm3d(out_channels, momentum=momentum)
        self.drop_path = DropPath(drop_path)
        self.shortcut = Shortcut(out_channels)
        self.radius = tk // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.position(x)
        y = F.silu(self.norm_expand(self.expand(x)))
        y = F.silu(self.norm_spatial(self.spatial(y)))
        y = F.silu(self.norm_temporal(self.temporal(y)))
        y = self.norm_project(self.project(self.excite(y)))
        return self.shortcut(x, y) + self.drop_path(y)


class CortexBlock(nn.Module):
    """Per-frame grouped point-wise 1D convolution, channel shuffle, batch norm, SiLU, and a
    cyclic-repeat shortcut with stochastic depth: ``(B, C_in, T)`` -> ``(B, C_out, T)``."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, drop_path: float, momentum: float = 0.1):
        super().__init__()
        self.groups = groups
        self.conv = nn.Conv1d(in_channels, out_channels, 1, groups=groups, bias=False)
        self.norm = nn.BatchNorm1d(out_channels, momentum=momentum)
        self.drop_path = DropPath(drop_path)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.norm(channel_shuffle(self.conv(x), self.groups)))
        return cyclic_channels(x, self.out_channels) + self.drop_path(y)


class DwiseNeuroCore(nn.Module):
    """Stem, inverted residual groups, spatial pooling, cortex: ``(B, C, T, H, W)`` -> ``(B, C', T)``."""

    def __init__(
        self,
        in_channels: int,
        *,
        stem_channels: int = 64,
        channels: Sequence[int] = (64, 128, 256),
        depths: Sequence[int] = (4, 3, 2),
        group_stride: int = 2,
        expansion: int = 6,
        spatial_kernel: int = 3,
        temporal_kernel: int = 5,
        se_ratio: float = 0.25,
        position_encoding: bool = True,
        drop_path: float = 0.1,
        cortex_channels: Sequence[int] = (1024, 2048, 4096),
        cortex_groups: int = 2,
        cortex_drop_path: float = 0.1,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, stem_channels, 1, bias=False), nn.BatchNorm3d(stem_channels, momentum=momentum)
        )
        n_blocks = sum(depths)
        blocks: list[nn.Module] = []
        width = stem_channels
        for out, depth in zip(channels, depths, strict=True):
            for j in range(depth):
                rate = drop_path * len(blocks) / max(1, n_blocks - 1)
                blocks.append(
                    InvertedResidual3d(
                        width,
                        out,
                        stride=group_stride if j == 0 else 1,
                        expansion=expansion,
                        spatial_kernel=spatial_kernel,
                        temporal_kernel=temporal_kernel,
                        se_ratio=se_ratio,
                        position_encoding=position_encoding,
                        drop_path=rate,
                        momentum=momentum,
                    )
                )
                width = out
        self.blocks = nn.Sequential(*blocks)
        cortex: list[nn.Module] = []
        for out in cortex_channels:
            cortex.append(CortexBlock(width, out, cortex_groups, cortex_drop_path, momentum))
            width = out
        self.cortex = nn.Sequential(*cortex)
        self.out_channels = width
        self.context_frames = self.lookahead_frames = n_blocks * (temporal_kernel // 2)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The features are vectors per frame: no spatial map."""
        return 1, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.blocks(self.stem(x))
        return self.cortex(maps.mean(dim=(3, 4)))
