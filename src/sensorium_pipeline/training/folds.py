"""Cross-validation folds over the labelled trials, grouped so that one video never straddles folds.

Repeats of one video (the oracle tier shows each ~10 times) and near-duplicates (the same clip
re-encoded, or shown to another mouse) must never be split between training and validation,
or the validation score would reward memorising a video seen in training. Trials are therefore
grouped first (:func:`trial_groups`: the union of exact repeats, ``stimulus_group`` of each
mouse, and of perceptual-hash neighbours, which also link trials of different mice), then whole
groups are dealt to folds (:func:`assign_folds`): shuffled with the seed, then handed out largest
first to the fold with the fewest trials so far, which balances trial counts.
Fold ``k``'s validation set is the trials with fold id ``k``; every other labelled trial trains.
The perceptual-hash neighbours come from :func:`phash_groups` over the hashes the stores hold
(:mod:`phash`); :func:`fold_rows` puts it together for a training run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.phash import BITS, hamming
from ..data.store import open_mouse
from ..errors import ConfigError, StoreError
from ..layout import LABELLED_TIERS

if TYPE_CHECKING:
    from ..data.sources import WindowSource

logger = logging.getLogger(__name__)

UNLABELLED = -1
GROUPINGS = ("phash", "stimulus")


class _Components:
    """Union-find over ``n`` items; every root is the smallest index of its component, so the
    components come out numbered in order of first appearance."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def labels(self) -> np.ndarray:
        """Dense component ids (0..g-1) of the items, in order of first appearance."""
        roots = np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)
        _, dense = np.unique(roots, return_inverse=True)
        return dense.astype(np.int64).ravel()


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
    components = _Components(n)
    for label in arrays:
        first: dict = {}
        for i, value in enumerate(label.tolist()):
            j = first.setdefault(value, i)
            if j != i:
                components.union(i, j)
    return components.labels()


def phash_groups(hashes: np.ndarray, max_distance: int, *, block: int = 2048) -> np.ndarray:
    """Group ids (0, 1, ... in order of first appearance): connected components of hashes at
    Hamming distance ``<= max_distance``, so near-duplicates of near-duplicates group too.

    Memory is ``block x n`` distances at a time, so tens of thousands of trials are fine.
    """
    hashes = np.asarray(hashes, dtype=np.int64).ravel()
    if isinstance(max_distance, bool) or not 0 <= int(max_distance) <= BITS:
        raise ValueError(f"max_distance must be in 0..{BITS}, got {max_distance!r}")
    components = _Components(len(hashes))
    for start in range(0, len(hashes), block):
        near = hamming(hashes[start : start + block, None], hashes[None, start:]) <= max_distance
        rows, cols = np.nonzero(np.triu(near, k=1))  # each pair once, later rows only
        for i, j in zip((rows + start).tolist(), (cols + start).tolist(), strict=True):
            components.union(i, j)
    return components.labels()


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


def _unpool(pooled: np.ndarray, names: Sequence[str], sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """An array over the trials of ``names`` concatenated, cut back into one array per mouse."""
    bounds = np.cumsum([0, *(sizes[m] for m in names)])
    return {m: pooled[bounds[i] : bounds[i + 1]] for i, m in enumerate(names)}


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
    return _unpool(assign_folds(pooled, n_folds, seed, tiers), names, {m: len(mice[m]) for m in names})


def near_duplicate_groups(
    store_dirs: Sequence[str | Path], data: Mapping[str, WindowSource], max_distance: int
) -> dict[str, np.ndarray] | None:
    """Perceptual-hash groups of the labelled trials of every mouse, made over the pooled hashes
    (so a video shown to two mice is one group); ``None`` (exact repeats only) when a store
    holds no hashes (converted by an older version)."""
    hashes: dict[str, np.ndarray] = {}
    for path in store_dirs:
        store = open_mouse(path)
        try:
            values = np.asarray(store.video_phash(), dtype=np.int64)
        except StoreError as exc:
            logger.info(f"{path}: no perceptual video hashes ({exc}); folds group exact repeats only")
            return None
        by_id = dict(zip(store.trials["trial_id"].tolist(), values.tolist(), strict=True))
        hashes[store.mouse] = np.array([by_id[t] for t in data[store.mouse].trial_ids.tolist()], dtype=np.int64)
    names = sorted(hashes)
    return _unpool(phash_groups(np.concatenate([hashes[m] for m in names]), max_distance), names,
                   {m: len(hashes[m]) for m in names})


def fold_rows(
    store_dirs: Sequence[str | Path],
    data: Mapping[str, WindowSource],
    n_folds: int,
    seed: int,
    fold: int,
    grouping: str,
    phash_distance: int,
    tiers: Sequence[str] = LABELLED_TIERS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``(train_rows, validation_rows)`` of every mouse for ``fold``, over its trials of the
    labelled ``tiers``; trials grouped by ``grouping``: ``stimulus`` (exact repeats) or
    ``phash`` (exact repeats and perceptual-hash neighbours within ``phash_distance`` bits,
    across mice)."""
    if grouping not in GROUPINGS:
        raise ConfigError(f"training.fold_grouping: {grouping!r} is not one of {list(GROUPINGS)}")
    tables = {m: pd.DataFrame({"tier": d.tiers, "stimulus_group": d.stimulus_groups}) for m, d in data.items()}
    near = near_duplicate_groups(store_dirs, data, phash_distance) if grouping == "phash" else None
    folds = pooled_folds(tables, n_folds, seed, near, tiers=tiers)
    return {m: split_rows(folds[m], fold) for m in sorted(data)}
