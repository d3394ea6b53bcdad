"""Shifters: where the eye looks moves each neuron's receptive field on the screen.

A small MLP per mouse maps the (official-normalised) pupil centre of every frame to a shift
of all readout positions of that mouse, in grid units (``[-1, 1]`` spans the feature map).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ShifterConfig


class MLPShifter(nn.Module):
    """``(batch, time, 2)`` pupil centre -> ``(batch, time, 2)`` shift in ``[-1, 1]``: ``layers``
    linear layers (``hidden`` units between them), each followed by tanh, with PyTorch's
    default initialisation, as the starter kit's shifter (2-5-5-2, 57 parameters)."""

    def __init__(self, config: ShifterConfig) -> None:
        super().__init__()
        hidden, layers = config.hidden, config.layers
        widths = [2] + [hidden] * (layers - 1) + [2]
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks.append(nn.Linear(widths[i], widths[i + 1]))
            blocks.append(nn.Tanh())
        self.mlp = nn.Sequential(*blocks)

    def forward(self, pupil_center: torch.Tensor) -> torch.Tensor:
        return self.mlp(pupil_center)
