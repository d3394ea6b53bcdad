"""Cross-validation folds over the labelled trials, grouped so that one video never straddles folds.

Repeats of one video (the oracle tier shows each ~10 times) and near-duplicates (the same clip
re-encoded, or shown to another mouse) must never be split between training and validation,
or the validation score would reward memorising a video seen in training. Trials are therefore
grouped first (:func:`trial_groups`: the union of exact repeats, ``stimulus_group`` of each
mouse, and of perceptual-hash neighbours, which also link trials of different mice), then whole
groups are dealt to folds (:func:`assign_folds`): shuffled with the seed, then handed out largest
first to the fold with the fewest trials so far, which balances trial counts.
Fold ``k``'s validation set is the trials with fold id ``k``; every other labelled trial trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError
from .layout import LABELLED_TIERS

UNLABELLED = -1
GROUPINGS = ("phash", "stimulus")


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = int(parent[i])
    return i


def trial_groups(*labels: Sequence | np.ndarray) -> np.ndarray:
    """Connected components of trials that share any label: ``labels`` are arrays of equal length,
    each a partition of the trials (e.g. ``(mouse, stimulus_group)`` keys and perceptual-hash
    groups). Returns dense group ids (0..g-1) in order of first appearance."""
    arrays = [np.asarray(label) for label in labels]
    if not arrays:
        raise ValueError("trial_groups: no labels")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"trial_groups: labels of different lengths {[len(a) for a in arrays]}")
    parent = np.arange(n)
    for label in arrays:
        first: dict = {}
        for i, value in enumerate(label.tolist()):
            j = first.setdefault(value, i)
            if j != i:
                a, b = _find(parent, i), _find(parent, j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    roots = np.array([_find(parent, i) for i in range(n)], dtype=np.int64)
    _, dense = np.unique(roots, return_inverse=True)
    # renumber in order of first appearance so the ids do not depend on the root choice
    order: dict[int, int] = {}
    return np.array([order.setdefault(int(g), len(order)) for g in dense], dtype=np.int64)


def assign_folds(
    trials: pd.DataFrame,
    n_folds: int,
    seed: int,
    tiers: Sequence[str] = LABELLED_TIERS,
) -> np.ndarray:
    """Fold id (0..n_folds-1) of every row of ``trials``; ``-1`` for trials outside ``tiers``.

    ``trials`` needs the columns ``tier`` and ``stimulus_group`` (a group id: trials of one
    group always share a fold; :func:`trial_groups` makes duplicate-aware ids).
    The result depends only on the table's content and the seed.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ConfigError(f"training.n_folds: expected an integer >= 2, got {n_folds!r}")
    for column in ("tier", "stimulus_group"):
        if column not in trials.columns:
            raise ValueError(f"assign_folds: the trials table has no column {column!r}")
    labelled = trials["tier"].isin(list(tiers)).to_numpy()
    groups = trials["stimulus_group"].to_numpy()[labelled]
    unique, sizes = np.unique(groups, return_counts=True)
    if len(unique) < n_folds:
        raise ConfigError(
            f"training.n_folds: {n_folds} folds need at least {n_folds} distinct stimuli, "
            f"but the labelled tiers {list(tiers)} hold {len(unique)}"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(unique))
    # Largest groups first (stable, so equal sizes keep the shuffled order), each to the emptiest fold.
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
    load = np.zeros(n_folds, dtype=np.int64)
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    for g in order:
        k = int(np.argmin(load))
        fold_of_group[g] = k
        load[k] += sizes[g]
    folds = np.full(len(trials), UNLABELLED, dtype=np.int64)
    folds[labelled] = fold_of_group[np.searchsorted(unique, groups)]
    return folds


def split_rows(folds: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, validation_rows)`` of fold ``fold``, as row indices into the trials table."""
    folds = np.asarray(folds)
    validation = np.flatnonzero(folds == fold)
    if fold < 0 or validation.size == 0:
        raise ConfigError(f"fold: {fold} holds no trial (fold ids present: {sorted(set(folds[folds >= 0].tolist()))})")
    train = np.flatnonzero((folds != fold) & (folds != UNLABELLED))
    return train, validation


def pooled_folds(
    mice: dict[str, pd.DataFrame],
    n_folds: int,
    seed: int,
    near_groups: dict[str, np.ndarray] | None = None,
    *,
    tiers: Sequence[str] = LABELLED_TIERS,
) -> dict[str, np.ndarray]:
    """Folds of several mice at once: ``mice[m]`` has ``tier`` and ``stimulus_group`` per trial;
    ``near_groups[m]`` (optional) are perceptual-hash group ids of the same trials, comparable
    across mice (made over the pooled hashes), so a video shown to two mice lands in one fold.
    ``tiers`` are the labelled tiers dealt to folds (others get ``-1``). Returns each mouse's fold ids."""
    names = sorted(mice)
    keys = [f"{m}\x00{g}" for m in names for g in mice[m]["stimulus_group"].tolist()]
    labels: list[Sequence] = [keys]
    if near_groups is not None:
        labels.append(np.concatenate([np.asarray(near_groups[m]) for m in names]))
    pooled = pd.DataFrame(
        {
            "tier": np.concatenate([mice[m]["tier"].to_numpy() for m in names]),
            "stimulus_group": trial_groups(*labels),
        }
    )
    folds = assign_folds(pooled, n_folds, seed, tiers)
    out, start = {}, 0
    for m in names:
        out[m] = folds[start : start + len(mice[m])]
        start += len(mice[m])
    return out
