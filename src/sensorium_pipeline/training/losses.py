"""Training losses.

:func:`mice_poisson_loss` is the 1st-place (DwiseNeuro) loss with the reference's reduction:
the Poisson negative log-likelihood of rates (not log rates, no Stirling term)
``rate - target * log(rate + eps)``, summed over neurons and frames, each sample's sum times
its weight, over every mouse of the batch, divided by the sum of all weights. With weight 1
per sample that is the sum over neurons and frames averaged over the samples of a batch of
mixed mice; distillation adds the teacher's predictions for other mice as extra targets with
their own weights, and the division by the total weight keeps the scale of the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: The reference's ``eps`` inside the logarithm.
POISSON_EPS = 1e-8


def poisson_nll(rates: torch.Tensor, targets: torch.Tensor, eps: float = POISSON_EPS) -> torch.Tensor:
    """Element-wise Poisson negative log-likelihood of ``rates`` (> 0) without the constant
    ``log(target!)`` term."""
    return rates - targets * torch.log(rates + eps)


def mice_poisson_loss(
    rates: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    eps: float = POISSON_EPS,
) -> torch.Tensor:
    """The reference loss of a batch made of groups ``k`` (one per mouse, usually): ``rates[k]``
    and ``targets[k]`` of shape ``(b_k, ..., N_k)``, ``weights[k]`` of shape ``(b_k,)`` one
    weight per sample. Returns ``sum_k sum_i weights[k][i] * sum(poisson_nll(i)) / sum(weights)``
    (a 0-dim tensor)."""
    if not (len(rates) == len(targets) == len(weights)) or not rates:
        raise ValueError(
            f"mice_poisson_loss: {len(rates)} rate groups, {len(targets)} target groups, {len(weights)} weight groups"
        )
    total_weight = sum(w.sum() for w in weights)
    loss = rates[0].new_zeros(())
    for r, t, w in zip(rates, targets, weights, strict=True):
        if r.shape != t.shape or w.shape != r.shape[:1]:
            shapes = f"rates {tuple(r.shape)}, targets {tuple(t.shape)}, weights {tuple(w.shape)}"
            raise ValueError(f"mice_poisson_loss: {shapes}")
        per_sample = poisson_nll(r, t.to(r.dtype), eps).flatten(1).sum(1)
        loss = loss + (per_sample * w.to(per_sample.dtype)).sum()
    return loss / total_weight
