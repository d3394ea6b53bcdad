"""Cores: the part of the model shared by all mice, video in, feature maps out.

Tensors are ``(batch, channels, time, height, width)``. Every core returns one output frame
per input frame and tells how far in time an output looks: ``context_frames`` (past) and
``lookahead_frames`` (future), and the spatial size of its maps (``output_size``).

The two cores here are the official baselines' (the SENSORIUM 2023 starter kit built with
neuralpredictors; ``tests/test_baseline_reference.py`` checks them against it). Both are
causal.

- :class:`Factorized3dCore`: its convolutions are unpadded in time, as the reference's, so a
  stack with temporal kernels ``k_i`` turns ``T`` frames into ``T - c`` with
  ``c = sum(k_i - 1)``. To keep one output per input frame the core puts ``c`` zero frames in
  front of its input: output ``t`` then depends on input frames ``t - c .. t``, outputs
  ``t >= c`` are exactly the reference's outputs for the same window, and the first ``c`` see
  the zero frames (the model contract's ``context_frames``; the loss leaves them out).
- :class:`Gru2dCore`: frame-wise 2D convolutions, then a convolutional GRU whose memory has no
  hard limit; its ``context_frames`` is a configured burn-in.

The DwiseNeuro core (not causal) lives in :mod:`.dwiseneuro`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import regularizers
from .config import Factorized3dCoreConfig, Gru2dCoreConfig


def _init_conv(module: nn.Module) -> None:
    """The reference cores' initialisation: Xavier-normal weights, zero biases."""
    if isinstance(module, nn.Conv2d | nn.Conv3d):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Factorized3dLayer(nn.Module):
    """Spatial ``(1, k, k)`` convolution, temporal ``(k_t, 1, 1)`` convolution (both with
    biases; the temporal one unpadded), batch norm, ELU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_kernel: int,
        temporal_kernel: int,
        *,
        padding: bool,
        momentum: float,
    ) -> None:
        super().__init__()
        pad = spatial_kernel // 2 if padding else 0
        self.spatial = nn.Conv3d(in_channels, out_channels, (1, spatial_kernel, spatial_kernel), padding=(0, pad, pad))
        self.temporal = nn.Conv3d(out_channels, out_channels, (temporal_kernel, 1, 1))
        self.norm = nn.BatchNorm3d(out_channels, momentum=momentum)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.temporal(self.spatial(x))))


class Factorized3dCore(nn.Module):
    """The official baseline core: a stack of :class:`Factorized3dLayer` (see module doc).

    ``spatial_laplace`` and ``temporal_laplace`` are the strengths of the smoothness
    penalties on the first layer's filters (:meth:`regularizer`; 10 and 0.01 in the baseline).
    """

    def __init__(self, in_channels: int, config: Factorized3dCoreConfig) -> None:
        super().__init__()
        channels, spatial_kernels, temporal_kernels = config.channels, config.spatial_kernels, config.temporal_kernels
        padding, momentum = config.padding, config.batch_norm_momentum
        widths = [in_channels, *channels]
        self.layers = nn.Sequential(
            *(
                Factorized3dLayer(
                    widths[i], widths[i + 1], spatial_kernels[i], temporal_kernels[i], padding=padding, momentum=momentum
                )
                for i in range(len(channels))
            )
        )
        self.layers.apply(_init_conv)
        self.out_channels = widths[-1]
        self.context_frames = sum(k - 1 for k in temporal_kernels)
        self.lookahead_frames = 0
        self._shrink = 0 if padding else sum(k - 1 for k in spatial_kernels)
        self.spatial_laplace = float(config.spatial_laplace)
        self.temporal_laplace = float(config.temporal_laplace)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return height - self._shrink, width - self._shrink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(F.pad(x, (0, 0, 0, 0, self.context_frames, 0)))

    def regularizer(self) -> torch.Tensor:
        """Laplace smoothness of the first layer's spatial and temporal filters, weighted."""
        first = self.layers[0]
        total = first.spatial.weight.new_zeros(())
        if self.spatial_laplace:
            total = total + self.spatial_laplace * regularizers.spatial_laplace(first.spatial.weight[:, :, 0])
        if self.temporal_laplace:
            total = total + self.temporal_laplace * regularizers.temporal_laplace(first.temporal.weight[:, :, :, 0, 0])
        return total


class Stacked2dLayer(nn.Module):
    """One frame-wise 2D layer: a ``k x k`` convolution (optionally depth-wise then
    point-wise), batch norm, and ELU unless ``activation`` is false."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        padding: int,
        bias: bool,
        depth_separable: bool,
        activation: bool,
        momentum: float,
    ) -> None:
        super().__init__()
        if depth_separable:
            self.conv: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, kernel, padding=padding, groups=in_channels, bias=False),
                nn.Conv2d(in_channels, out_channels, 1, bias=bias),
            )
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=padding, bias=bias)
        self.norm = nn.BatchNorm2d(out_channels, momentum=momentum)
        self.act = nn.ELU() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ConvGRU(nn.Module):
    """A convolutional GRU over time: ``(B, C, T, H, W)`` -> ``(B, G, T, H, W)``, state zero at
    the window's first frame; "same" padding. ``h' = (1 - z) h + z tanh(W x + U (r * h))`` with
    update gate ``z`` and reset gate ``r``, as the reference cell. The three input
    convolutions are one convolution run on all frames at once (channels: update, reset,
    candidate); only the recurrent convolutions run frame by frame."""

    def __init__(self, in_channels: int, channels: int, input_kernel: int, kernel: int) -> None:
        super().__init__()
        self.channels = channels
        self.input = nn.Conv2d(in_channels, 3 * channels, input_kernel, padding=input_kernel // 2)
        self.gates = nn.Conv2d(channels, 2 * channels, kernel, padding=kernel // 2)
        self.candidate = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        with torch.no_grad():  # Xavier per gate, as three separate convolutions would be
            for conv, parts in ((self.input, 3), (self.gates, 2), (self.candidate, 1)):
                for weight in conv.weight.chunk(parts, dim=0):
                    nn.init.xavier_normal_(weight)
                nn.init.zeros_(conv.bias)

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
            state = state * (1.0 - update) + new * update
            outputs.append(state)
        return torch.stack(outputs, dim=2)


class Gru2dCore(nn.Module):
    """The official baseline's second core: frame-wise 2D layers (the first with
    ``input_kernel``, unpadded unless ``pad_input``, without bias; the others with
    ``hidden_kernel``, "same" padding and biases; no ELU after the last unless
    ``final_nonlinearity``), then a convolutional GRU. Causal; the GRU starts from a zero
    state in every window, so the first ``burn_in_frames`` outputs are not trusted
    (``context_frames``).

    Penalties (:meth:`regularizer`): ``input_laplace`` x the Laplace smoothness of the first
    layer's filters, ``hidden_group_sparsity`` x the group sparsity of the other layers'
    (500 and 500,000 in the baseline; the latter is skipped for depth-separable layers, as
    the reference does).
    """

    def __init__(self, in_channels: int, config: Gru2dCoreConfig) -> None:
        super().__init__()
        c = config
        channels, input_kernel, hidden_kernel, pad_input = c.channels, c.input_kernel, c.hidden_kernel, c.pad_input
        depth_separable, momentum = c.depth_separable, c.batch_norm_momentum
        widths = [in_channels, *channels]
        n = len(channels)
        self.layers = nn.Sequential(
            *(
                Stacked2dLayer(
                    widths[i],
                    widths[i + 1],
                    input_kernel if i == 0 else hidden_kernel,
                    padding=(input_kernel // 2 if pad_input else 0) if i == 0 else hidden_kernel // 2,
                    bias=i > 0,
                    depth_separable=depth_separable and i > 0,
                    activation=c.final_nonlinearity or i < n - 1,
                    momentum=momentum,
                )
                for i in range(n)
            )
        )
        self.layers.apply(_init_conv)
        self.gru = ConvGRU(widths[-1], c.gru_channels, c.gru_input_kernel, c.gru_kernel)
        self.out_channels = c.gru_channels
        self.context_frames = c.burn_in_frames
        self.lookahead_frames = 0
        self.depth_separable = depth_separable
        self._shrink = 0 if pad_input else input_kernel - 1
        self.input_laplace = float(c.input_laplace)
        self.hidden_group_sparsity = float(c.hidden_group_sparsity)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return height - self._shrink, width - self._shrink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, time, height, width = x.shape
        frames = self.layers(x.transpose(1, 2).reshape(batch * time, channels, height, width))
        maps = frames.reshape(batch, time, *frames.shape[1:]).transpose(1, 2)
        return self.gru(maps)

    def regularizer(self) -> torch.Tensor:
        """Laplace smoothness of the input filters plus group sparsity of the hidden ones, weighted."""
        first = self.layers[0].conv
        total = first.weight.new_zeros(())
        if self.input_laplace:
            total = total + self.input_laplace * regularizers.spatial_laplace(first.weight)
        if self.hidden_group_sparsity and not self.depth_separable and len(self.layers) > 1:
            hidden = [layer.conv.weight for layer in self.layers[1:]]
            total = total + self.hidden_group_sparsity * regularizers.group_sparsity(hidden)
        return total
