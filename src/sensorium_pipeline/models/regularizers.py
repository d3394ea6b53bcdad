"""Weight penalties of the official baselines, with the values neuralpredictors computes.

The starter kit adds ``gamma * penalty`` to its training loss for: the smoothness of the first
layer's spatial filters (a discrete Laplacian, normalised by the filters' energy), the
smoothness of the first layer's temporal filters (a 1D second difference, normalised alike),
the group sparsity of the 2D core's hidden filters, and the L1 norm of the readout's channel
weights. Normalised penalties do not change when a filter is scaled, so they shape filters
without shrinking them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The 3x3 discrete Laplacian (4-neighbourhood) the spatial penalty convolves filters with.
LAPLACE_2D = ((0.0, -1.0, 0.0), (-1.0, 4.0, -1.0), (0.0, -1.0, 0.0))
#: The temporal penalty's 1D kernel: its centre weight is 4, not 2 (neuralpredictors' choice,
#: kept so that the penalty's value, and so its strength ``gamma``, mean the same).
LAPLACE_1D = (-1.0, 4.0, -1.0)


def spatial_laplace(weight: torch.Tensor) -> torch.Tensor:
    """``sum(laplace(w)^2) / sum(w^2)`` over all ``(out, in)`` filters of a ``(O, I, kh, kw)``
    weight; zero-padded by one pixel, so a filter's border counts as an edge."""
    out_channels, in_channels, kh, kw = weight.shape
    filters = weight.reshape(out_channels * in_channels, 1, kh, kw)
    kernel = weight.new_tensor(LAPLACE_2D)[None, None]
    return F.conv2d(filters, kernel, padding=1).pow(2).sum() / filters.pow(2).sum()


def temporal_laplace(weight: torch.Tensor) -> torch.Tensor:
    """``sum(laplace1d(w)^2) / sum(w^2)`` over all ``(out, in)`` filters of a ``(O, I, kt)``
    weight; zero-padded by one frame."""
    out_channels, in_channels, kt = weight.shape
    filters = weight.reshape(out_channels * in_channels, 1, kt)
    kernel = weight.new_tensor(LAPLACE_1D)[None, None]
    return F.conv1d(filters, kernel, padding=1).pow(2).sum() / filters.pow(2).sum()


def group_sparsity(weights: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean over ``(out, in)`` pairs of each filter's L2 norm: pushes
    whole input channels of a layer to zero. ``weights`` are ``(O, I, kh, kw)``."""
    if not weights:
        return torch.zeros(())
    norms = [w.pow(2).sum((2, 3)).sqrt().mean() for w in weights]
    return torch.stack(norms).sum() / len(weights)
