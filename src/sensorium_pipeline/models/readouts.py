"""Readouts: one per mouse, core features in, that mouse's neurons out as ``(B, T, N)``
pre-activations.

Map readouts (Gaussian, factorized) read ``(B, C, T, h, w)`` feature maps; the DwiseNeuro
readout (in :mod:`.dwiseneuro`) reads ``(B, C, T)`` feature vectors.

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

from .config import GaussianReadoutConfig


def centre_and_scale(coordinates: np.ndarray) -> np.ndarray:
    """Coordinates minus their mean over neurons, divided by the largest absolute value
    left (one number for all axes, so the cortical map keeps its aspect ratio); all values
    end in ``[-1, 1]``. All neurons at one place stay at 0."""
    coordinates = np.asarray(coordinates, dtype=np.float64)
    centred = coordinates - coordinates.mean(axis=0, keepdims=True)
    scale = np.abs(centred).max() if centred.size else 0.0
    return centred / scale if scale > 0 else centred


class PositionMLP(nn.Module):
    """Cortical coordinates ``(N, dims)`` -> readout positions ``(N, 2)`` as (x, y) in
    ``[-1, 1]``: ``layers`` hidden layers of ``hidden`` units with ELU, then a linear map to
    2 and tanh (PyTorch's default initialisation, as the reference)."""

    def __init__(self, hidden: int, layers: int, dims: int) -> None:
        super().__init__()
        widths = [dims] + [hidden] * layers
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(widths[i], widths[i + 1]), nn.ELU()]
        blocks += [nn.Linear(widths[-1], 2), nn.Tanh()]
        self.mlp = nn.Sequential(*blocks)

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        return self.mlp(coordinates)


class Readout(nn.Module):
    """What every readout shares: one bias per neuron (its initial value given by the model),
    and a weight penalty (:meth:`regularizer`, none unless a readout defines one)."""

    def __init__(self, n_neurons: int, init_bias: np.ndarray | None = None) -> None:
        super().__init__()
        bias = torch.zeros(n_neurons) if init_bias is None else torch.as_tensor(init_bias, dtype=torch.float32)
        self.bias = nn.Parameter(bias.clone())

    @property
    def n_neurons(self) -> int:
        return self.bias.shape[0]

    def regularizer(self) -> torch.Tensor:
        return self.bias.new_zeros(())


class GaussianReadout(Readout):
    """``(B, C, T, h, w)`` features (+ optional ``(B, T, 2)`` shift) -> ``(B, T, N)`` pre-activations.

    The official baseline's readout (neuralpredictors' full Gaussian readout with a position
    network). Neuron ``n`` reads the feature map at position ``mu_n`` (bilinear; zero outside
    the map), weights the channels with ``features[:, n]`` and adds ``bias[n]``. ``mu`` comes
    from :class:`PositionMLP` applied to the cortical coordinates (first ``position_dims``
    axes, :func:`centre_and_scale`). During training every frame reads at
    ``clamp(mu + sigma_n @ z, -1, 1)`` with ``z ~ N(0, I)`` drawn per frame and neuron, where
    ``sigma_n`` is a learnt 2x2 matrix (initialised uniform in ``[-init_sigma, init_sigma]``);
    evaluation reads at ``mu``. A shift is added after the clamp. ``features`` start at
    ``1 / C``. The penalty is ``l1 x sum |features|``.
    """

    def __init__(
        self,
        in_channels: int,
        coordinates: np.ndarray,
        config: GaussianReadoutConfig,
        init_bias: np.ndarray | None = None,
    ) -> None:
        n_neurons = len(coordinates)
        super().__init__(n_neurons, init_bias)
        position_dims, init_sigma = config.position_dims, config.init_sigma
        coordinates = np.asarray(coordinates, dtype=np.float64).reshape(n_neurons, -1)[:, :position_dims]
        self.register_buffer("coordinates", torch.as_tensor(centre_and_scale(coordinates), dtype=torch.float32))
        self.positions = PositionMLP(config.position_hidden, config.position_layers, position_dims)
        self.sigma = nn.Parameter(torch.empty(n_neurons, 2, 2).uniform_(-init_sigma, init_sigma))
        self.features = nn.Parameter(torch.full((in_channels, n_neurons), 1.0 / in_channels))
        self.l1_strength = float(config.l1)

    def l1(self) -> torch.Tensor:
        """L1 norm of the channel weights, summed over channels, mean over neurons."""
        return self.features.abs().sum(0).mean()

    def regularizer(self) -> torch.Tensor:
        """The reference's readout penalty: ``l1 x sum |features|`` (zero in the baseline)."""
        if not self.l1_strength:
            return self.features.new_zeros(())
        return self.l1_strength * self.features.abs().sum()

    def mean_positions(self) -> torch.Tensor:
        """``(N, 2)`` grid positions (x, y) the readout uses at evaluation."""
        return self.positions(self.coordinates)

    def forward(self, features: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        batch, channels, time, height, width = features.shape
        frames = batch * time
        grid = self.mean_positions()[None]  # (1, N, 2)
        if self.training:
            noise = torch.randn(frames, self.n_neurons, 2, device=features.device, dtype=grid.dtype)
            grid = grid + torch.einsum("ncd,fnd->fnc", self.sigma, noise)
        grid = grid.clamp(-1.0, 1.0).expand(frames, self.n_neurons, 2)
        if shift is not None:
            grid = grid + shift.reshape(frames, 1, 2).to(grid.dtype)
        maps = features.transpose(1, 2).reshape(frames, channels, height, width)
        sampled = F.grid_sample(maps, grid[:, :, None].to(maps.dtype), mode="bilinear", align_corners=True)
        out = torch.einsum("fcn,cn->fn", sampled[..., 0], self.features.to(sampled.dtype)) + self.bias
        return out.reshape(batch, time, self.n_neurons)


def translate(features: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Move ``(B, C, T, h, w)`` feature maps by ``(B, T, 2)`` shifts (x, y in grid units): the
    feature at ``p`` afterwards is the one at ``p + shift`` before, as a Gaussian readout whose
    points all move by ``shift`` would read it."""
    batch, channels, time, height, width = features.shape
    theta = torch.zeros(batch * time, 2, 3, device=features.device, dtype=features.dtype)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift.reshape(batch * time, 2)
    frames = features.transpose(1, 2).reshape(batch * time, channels, height, width)
    grid = F.affine_grid(theta, list(frames.shape), align_corners=True)
    moved = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return moved.reshape(batch, time, channels, height, width).transpose(1, 2)


class FactorizedReadout(Readout):
    """Spatial mask × channel weights per neuron (Klindt et al. 2017): ``(B, C, T, h, w)`` → ``(B, T, N)``.

    Each neuron's mask over the feature map is a free parameter, so learning where a neuron
    looks is a linear problem from the first step; that converges in far fewer steps than a
    Gaussian readout's positions, which matters on a CPU budget. Cortical coordinates are not
    used. A shift (eye movement) translates the feature maps before the masks read them.
    """

    def __init__(self, in_channels: int, n_neurons: int, height: int, width: int, init_bias: np.ndarray | None = None):
        super().__init__(n_neurons, init_bias)
        self.mask = nn.Parameter(torch.full((n_neurons, height, width), 1.0 / (height * width)))
        self.weight = nn.Parameter(torch.randn(in_channels, n_neurons) * (1.0 / in_channels))

    def l1(self) -> torch.Tensor:
        """Sparsity penalty: mask and channel weights, summed per neuron, mean over neurons."""
        return self.mask.abs().sum((1, 2)).mean() + self.weight.abs().sum(0).mean()

    def forward(self, features: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        if shift is not None:
            features = translate(features, shift)
        pooled = torch.einsum("bcthw,nhw->btcn", features, self.mask)  # (B, T, C, N)
        return torch.einsum("btcn,cn->btn", pooled, self.weight) + self.bias
