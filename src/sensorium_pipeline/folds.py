"""Cross-validation folds over the labelled trials, grouped by stimulus.

Repeats of one video (the oracle tier shows each ~10 times) must never straddle folds, or
the validation score would reward memorising a video seen in training. Folds are therefore
made of whole ``stimulus_group``s: groups are shuffled with the seed, then handed out
largest first to the fold with the fewest trials so far, which balances trial counts.
Fold ``k``'s validation set is the trials with fold id ``k``; every other labelled trial
trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError
from .layout import LABELLED_TIERS

UNLABELLED = -1


def assign_folds(
    trials: pd.DataFrame,
    n_folds: int,
    seed: int,
    tiers: Sequence[str] = LABELLED_TIERS,
) -> np.ndarray:
    """Fold id (0..n_folds-1) of every row of ``trials``; ``-1`` for trials outside ``tiers``.

    ``trials`` needs the columns ``tier`` and ``stimulus_group`` (as in ``trials.parquet``).
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
