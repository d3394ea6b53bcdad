"""Readouts: one per mouse, core feature maps in, that mouse's neurons out.

The Gaussian readout of the official baseline: each neuron reads the core's features at one
point of the feature map (bilinear sampling), weights the channels and adds a bias. The
point is not a free parameter: a small MLP predicts it from the neuron's cortical
coordinates, which is how retinotopy (neighbouring neurons see neighbouring places) enters.
During training the point is jittered with a learnt per-neuron Gaussian; evaluation reads
the mean. A shifter's output moves all points of a frame together (eye movements).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _standardise(coordinates: np.ndarray) -> np.ndarray:
    """Centre and scale each coordinate axis over neurons (an axis with no spread stays 0)."""
    coordinates = np.asarray(coordinates, dtype=np.float64)
    std = coordinates.std(axis=0)
    return (coordinates - coordinates.mean(axis=0)) / np.where(std > 0, std, 1.0)


class PositionMLP(nn.Module):
    """Cortical coordinates ``(N, 3)`` → readout positions ``(N, 2)`` as (x, y) in ``[-1, 1]``."""

    def __init__(self, hidden: int = 30, layers: int = 2) -> None:
        super().__init__()
        widths = [3] + [hidden] * layers
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(widths[i], widths[i + 1]), nn.ELU()]
        blocks += [nn.Linear(widths[-1], 2), nn.Tanh()]
        self.mlp = nn.Sequential(*blocks)

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        return self.mlp(coordinates)


class GaussianReadout(nn.Module):
    """``(B, C, T, h, w)`` features (+ optional ``(B, T, 2)`` shift) → ``(B, T, N)`` pre-activations."""

    def __init__(
        self,
        in_channels: int,
        coordinates: np.ndarray,
        *,
        position_hidden: int = 30,
        position_layers: int = 2,
        init_sigma: float = 0.2,
        init_bias: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        n_neurons = len(coordinates)
        self.register_buffer("coordinates", torch.as_tensor(_standardise(coordinates), dtype=torch.float32))
        self.positions = PositionMLP(position_hidden, position_layers)
        self.sigma = nn.Parameter(torch.full((n_neurons, 2), float(init_sigma)))
        self.weight = nn.Parameter(torch.full((in_channels, n_neurons), 1.0 / in_channels))
        bias = torch.zeros(n_neurons) if init_bias is None else torch.as_tensor(init_bias, dtype=torch.float32)
        self.bias = nn.Parameter(bias.clone())

    @property
    def n_neurons(self) -> int:
        return self.bias.shape[0]

    def mean_positions(self) -> torch.Tensor:
        """``(N, 2)`` grid positions (x, y) the readout uses at evaluation."""
        return self.positions(self.coordinates)

    def forward(self, features: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        batch, channels, time, height, width = features.shape
        grid = self.mean_positions()[None, None]  # (1, 1, N, 2)
        if self.training:
            noise = torch.randn(batch, 1, self.n_neurons, 2, device=features.device, dtype=features.dtype)
            grid = grid + noise * self.sigma
        if shift is not None:
            grid = grid + shift[:, :, None, :]
        grid = grid.expand(batch, time, self.n_neurons, 2).clamp(-1.0, 1.0)
        frames = features.transpose(1, 2).reshape(batch * time, channels, height, width)
        sampled = F.grid_sample(
            frames, grid.reshape(batch * time, 1, self.n_neurons, 2), mode="bilinear", align_corners=True
        )  # (B*T, C, 1, N)
        out = torch.einsum("bcn,cn->bn", sampled[:, :, 0], self.weight) + self.bias
        return out.reshape(batch, time, self.n_neurons)
