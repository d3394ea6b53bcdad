"""The core's input: the video (downsampled, zero-padded) plus behaviour as constant channels.

Behaviour enters every core the same way (the baseline stacks pupil dilation and running
speed; the winners also the pupil centre): each value becomes a channel filled with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InputStack(nn.Module):
    """``video (B, T, H, W)``, ``behavior``/``pupil_center (B, T, 2)`` -> ``(B, C, T, h, w)``."""

    def __init__(
        self,
        *,
        downsample: int = 1,
        pad_to: tuple[int, int] | None = None,
        behavior_channels: bool = True,
        pupil_channels: bool = False,
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.pad_to = pad_to
        self.behavior_channels = behavior_channels
        self.pupil_channels = pupil_channels
        self.out_channels = 1 + 2 * behavior_channels + 2 * pupil_channels

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the stacked input for a ``height x width`` video."""
        height, width = height // self.downsample, width // self.downsample
        if self.pad_to is not None:
            height, width = max(height, self.pad_to[0]), max(width, self.pad_to[1])
        return height, width

    def forward(self, video: torch.Tensor, behavior: torch.Tensor, pupil_center: torch.Tensor) -> torch.Tensor:
        batch, time, height, width = video.shape
        x = video.reshape(batch * time, 1, height, width)
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        height, width = x.shape[-2:]
        if self.pad_to is not None:
            dh, dw = max(0, self.pad_to[0] - height), max(0, self.pad_to[1] - width)
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
            height, width = x.shape[-2:]
        channels = [x.reshape(batch, time, 1, height, width)]
        for flag, values in ((self.behavior_channels, behavior), (self.pupil_channels, pupil_center)):
            if flag:
                channels.append(values.to(x.dtype)[:, :, :, None, None].expand(batch, time, 2, height, width))
        return torch.cat(channels, dim=2).transpose(1, 2)
