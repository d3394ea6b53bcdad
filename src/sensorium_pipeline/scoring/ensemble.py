"""Ensembles: the (weighted) mean of several models' predictions of one mouse.

Members must describe exactly the same thing (mouse, trials, tiers, neurons, usable frames);
anything else is an error rather than a silent misalignment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .predictions import Predictions


def _check_same(reference: Predictions, other: Predictions, index: int) -> None:
    where = f"ensemble member {index} ({other.mouse})"
    if other.mouse != reference.mouse:
        raise ValueError(f"{where}: mouse differs from member 0 ({reference.mouse})")
    if not np.array_equal(other.trial_ids, reference.trial_ids):
        raise ValueError(f"{where}: its trials differ from member 0's")
    if not np.array_equal(other.tiers, reference.tiers):
        raise ValueError(f"{where}: its tiers differ from member 0's")
    if not np.array_equal(other.unit_ids, reference.unit_ids):
        raise ValueError(f"{where}: its neurons (unit ids) differ from member 0's")
    if not np.array_equal(other.n_frames, reference.n_frames):
        raise ValueError(f"{where}: its usable frames per trial differ from member 0's")
    if other.values.shape != reference.values.shape:
        raise ValueError(f"{where}: values shape {other.values.shape} differs from {reference.values.shape}")


def ensemble(preds: Sequence[Predictions], weights: Sequence[float] | None = None) -> Predictions:
    """Weighted mean (plain mean by default) of predictions of the same trials and neurons."""
    if not preds:
        raise ValueError("ensemble: no members")
    reference = preds[0]
    for i, member in enumerate(preds[1:], start=1):
        _check_same(reference, member, i)
    w = np.ones(len(preds)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(preds),) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"ensemble: weights {list(w)} must be {len(preds)} non-negative numbers, not all zero")
    w = w / w.sum()
    total = np.zeros(reference.values.shape, dtype=np.float64)
    for weight, member in zip(w, preds, strict=True):
        total += weight * member.values
    return Predictions(
        mouse=reference.mouse,
        trial_ids=reference.trial_ids,
        tiers=reference.tiers,
        values=total.astype(np.float32),
        n_frames=reference.n_frames,
        unit_ids=reference.unit_ids,
    )
