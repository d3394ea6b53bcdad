"""Shifters: where the eye looks moves each neuron's receptive field on the screen.

A small MLP per mouse maps the (z-scored) pupil centre of every frame to a shift of all
readout positions of that mouse, in grid units (``[-1, 1]`` spans the screen).
"""

from __future__ import annotations

import torch
from torch import nn


class MLPShifter(nn.Module):
    """``(batch, time, 2)`` pupil centre → ``(batch, time, 2)`` shift in ``[-1, 1]`` (tanh)."""

    def __init__(self, hidden: int = 5, layers: int = 3) -> None:
        super().__init__()
        widths = [2] + [hidden] * (layers - 1) + [2]
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks.append(nn.Linear(widths[i], widths[i + 1]))
            blocks.append(nn.Tanh())
        self.mlp = nn.Sequential(*blocks)
        # Start at "no shift": the last layer outputs 0 until training says otherwise.
        last = self.mlp[-2]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, pupil_center: torch.Tensor) -> torch.Tensor:
        return self.mlp(pupil_center)
