"""Small parameter-light building blocks shared by the cores (timm style: one job each).

Tensors are ``(batch, channels, time, height, width)`` for video features and
``(batch, channels, time)`` for per-frame vectors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples with probability ``p``
    during training (survivors scaled by ``1 / (1 - p)``); the identity in eval mode."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def cyclic_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``x`` with its channels (dim 1) repeated cyclically (or cut) to ``channels``: the
    shortcut's channel change when a block widens (no weights)."""
    have = x.shape[1]
    if have == channels:
        return x
    if channels > have:
        x = x.repeat(1, math.ceil(channels / have), *([1] * (x.dim() - 2)))
    return x[:, :channels]


class NormedShortcut(nn.Module):
    """Residual shortcut without weights to learn but a batch norm: nearest-neighbour resize
    to the branch's size when a block strides, cyclic channel repeat when it widens, then
    batch norm (always, also when the shape does not change), as DwiseNeuro's blocks do."""

    def __init__(self, out_channels: int, momentum: float = 0.1, dims: int = 3) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.norm = (nn.BatchNorm3d if dims == 3 else nn.BatchNorm1d)(out_channels, momentum=momentum)

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if x.shape[2:] != like.shape[2:]:
            x = F.interpolate(x, size=like.shape[2:], mode="nearest")
        return self.norm(cyclic_channels(x, self.out_channels))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (ShuffleNet), so the next grouped layer
    mixes information across groups. ``(B, C, ...)`` -> same shape."""
    if groups == 1:
        return x
    batch, channels = x.shape[:2]
    rest = x.shape[2:]
    return x.reshape(batch, groups, channels // groups, *rest).transpose(1, 2).reshape(batch, channels, *rest)


class SqueezeExcite(nn.Module):
    """Channel attention: average over time and space, a bottleneck of ``hidden`` channels
    (SiLU), a sigmoid gate per channel. Pooling over time as well makes every output of a
    window depend on the whole window."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv3d(channels, hidden, 1)
        self.expand = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3, 4), keepdim=True)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(scale))))


def sinusoidal_encoding_3d(
    channels: int, time: int, height: int, width: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``(1, channels, time, height, width)`` fixed sin/cos encoding of (t, y, x): the
    channels are split in three, each half sines, half cosines of geometric frequencies."""
    per_axis = 2 * math.ceil(channels / 6)
    freqs = 1.0 / (10000.0 ** (torch.arange(0, per_axis, 2, device=device, dtype=torch.float32) / per_axis))

    def axis(n: int) -> torch.Tensor:  # (per_axis, n)
        angles = freqs[:, None] * torch.arange(n, device=device, dtype=torch.float32)[None]
        return torch.cat([angles.sin(), angles.cos()], dim=0)

    t, y, x = axis(time), axis(height), axis(width)
    enc = torch.cat(
        [
            t[:, :, None, None].expand(-1, time, height, width),
            y[:, None, :, None].expand(-1, time, height, width),
            x[:, None, None, :].expand(-1, time, height, width),
        ],
        dim=0,
    )[:channels]
    return enc[None].to(dtype)


class PositionEncoding3d(nn.Module):
    """Adds the fixed (t, y, x) encoding of :func:`sinusoidal_encoding_3d` to its input, so
    depth-wise blocks know where on the screen and where in the window they are."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, time, height, width = x.shape
        return x + sinusoidal_encoding_3d(channels, time, height, width, x.device, x.dtype)


class DepthwiseSpatialConv(nn.Module):
    """Depth-wise ``(1, k, k)`` convolution of ``(B, C, T, H, W)``, run as one 2D convolution
    over the ``C x T`` planes (the weight repeated per frame). The same result as
    ``Conv3d(groups=C)``, several times faster on CPUs, where depth-wise 3D has no fast kernel."""

    def __init__(self, channels: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel, kernel))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.stride = stride
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, time, height, width = x.shape
        weight = self.weight.repeat_interleave(time, dim=0)
        y = F.conv2d(
            x.reshape(batch, channels * time, height, width),
            weight,
            stride=self.stride,
            padding=self.padding,
            groups=channels * time,
        )
        return y.reshape(batch, channels, time, *y.shape[-2:])


class DepthwiseTemporalConv(nn.Module):
    """Depth-wise ``(k, 1, 1)`` convolution of ``(B, C, T, H, W)`` with centred ("same")
    padding, run as a ``(k, 1)`` 2D convolution of the ``(B, C, T, H*W)`` view (no copy)."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel, 1))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, time, height, width = x.shape
        y = F.conv2d(
            x.reshape(batch, channels, time, height * width), self.weight, padding=(self.padding, 0), groups=channels
        )
        return y.reshape(batch, channels, time, height, width)
