"""Cores: the part of the model shared by all mice, video in, feature maps out.

Tensors are ``(batch, channels, time, height, width)``. Every core returns one output frame
per input frame and tells how far in time an output looks: ``context_frames`` (past) and
``lookahead_frames`` (future), and the spatial size of its maps (``output_size``).

The cores here are causal. Temporal convolutions are left-padded with ``kernel - 1`` zero
frames, so output frame ``t`` depends only on input frames ``t - context .. t`` with
``context = sum(temporal_kernel - 1)``; a window's first ``context`` outputs see zero padding
instead of the true past. The GRU core's memory is unbounded; its ``context_frames`` is a
configured burn-in. The DwiseNeuro core (not causal) lives in :mod:`.dwiseneuro`.
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
        self.spatial = nn.Conv3d(
            in_channels, out_channels, (1, spatial_kernel, spatial_kernel), padding=(0, pad, pad), bias=False
        )
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
        self.lookahead_frames = 0

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Stacked2dLayer(nn.Module):
    """One frame-wise 2D layer: a ``k x k`` convolution (optionally depth-wise then point-wise),
    batch norm, ELU; "same" padding."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, depth_separable: bool, momentum: float = 0.1
    ) -> None:
        super().__init__()
        pad = kernel // 2
        if depth_separable:
            self.conv: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, kernel, padding=pad, groups=in_channels, bias=False),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
            )
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=pad, bias=False)
        self.norm = nn.BatchNorm2d(out_channels, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.norm(self.conv(x)))


class ConvGRU(nn.Module):
    """A convolutional GRU over time: ``(B, C, T, H, W)`` -> ``(B, G, T, H, W)``, state zero at
    the window's first frame. The input convolution runs on all frames at once; only the
    recurrent convolutions run frame by frame."""

    def __init__(self, in_channels: int, channels: int, input_kernel: int, kernel: int) -> None:
        super().__init__()
        self.channels = channels
        self.input = nn.Conv2d(in_channels, 3 * channels, input_kernel, padding=input_kernel // 2)
        self.gates = nn.Conv2d(channels, 2 * channels, kernel, padding=kernel // 2, bias=False)
        self.candidate = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, time, height, width = x.shape
        frames = x.transpose(1, 2).reshape(batch * time, channels, height, width)
        drive = self.input(frames).reshape(batch, time, 3 * self.channels, height, width)
        state = x.new_zeros(batch, self.channels, height, width)
        outputs = []
        for frame in drive.unbind(1):  # one backward node for all frames (indexing makes T)
            x_update, x_reset, x_new = frame.chunk(3, dim=1)
            h_update, h_reset = self.gates(state).chunk(2, dim=1)
            update = torch.sigmoid(x_update + h_update)
            reset = torch.sigmoid(x_reset + h_reset)
            new = torch.tanh(x_new + self.candidate(reset * state))
            state = update * state + (1.0 - update) * new
            outputs.append(state)
        return torch.stack(outputs, dim=2)


class Gru2dCore(nn.Module):
    """The official baseline's second core: a stack of frame-wise 2D layers, then a
    convolutional GRU. Causal; the GRU starts from a zero state in every window, so the
    first ``burn_in_frames`` outputs of a window are not trusted (``context_frames``)."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        input_kernel: int,
        hidden_kernel: int,
        depth_separable: bool,
        gru_channels: int,
        gru_input_kernel: int,
        gru_kernel: int,
        burn_in_frames: int,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.layers = nn.Sequential(
            *(
                Stacked2dLayer(
                    widths[i],
                    widths[i + 1],
                    input_kernel if i == 0 else hidden_kernel,
                    depth_separable and i > 0,
                    momentum,
                )
                for i in range(len(channels))
            )
        )
        self.gru = ConvGRU(widths[-1], gru_channels, gru_input_kernel, gru_kernel)
        self.out_channels = gru_channels
        self.context_frames = burn_in_frames
        self.lookahead_frames = 0

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, time, height, width = x.shape
        frames = self.layers(x.transpose(1, 2).reshape(batch * time, channels, height, width))
        maps = frames.reshape(batch, time, -1, height, width).transpose(1, 2)
        return self.gru(maps)
