"""Folds as a user relies on them: a video (repeated, near-duplicated, or shown to another mouse)
never straddles training and validation, and folds stay balanced and reproducible."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sensorium_pipeline.errors import ConfigError
from sensorium_pipeline.training.folds import assign_folds, phash_groups, pooled_folds, split_rows, trial_groups


def test_trial_groups_join_trials_that_share_any_label():
    exact = [0, 0, 1, 2, 3, 4]
    near = [10, 11, 11, 12, 12, 13]  # 1 ~ 2 links exact groups 0 and 1; 3 ~ 4 joins 2 and 3
    assert trial_groups(exact, near).tolist() == [0, 0, 0, 1, 1, 2]
    assert trial_groups(exact).tolist() == [0, 0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="lengths"):
        trial_groups([0, 1], [0])


def _mouse(n_train: int, oracle_groups: int, repeats: int, offset: int = 0) -> pd.DataFrame:
    groups = list(range(n_train)) + [1000 + g for g in range(oracle_groups) for _ in range(repeats)]
    tiers = ["train"] * n_train + ["oracle"] * (oracle_groups * repeats)
    return pd.DataFrame({"tier": tiers + ["final_test_main"] * 3, "stimulus_group": groups + [2000] * 3})


def test_near_duplicates_across_mice_share_a_fold():
    rng = np.random.default_rng(0)
    a, b = _mouse(30, 3, 4), _mouse(25, 2, 5)
    # synthetic 64-bit hashes: every trial its own random hash, then mouse b's trials 0..9 show
    # mouse a's videos 0..9 with two bits flipped (a re-encoded copy)
    hashes_a = rng.integers(-(2**62), 2**62, size=len(a), dtype=np.int64)
    hashes_b = rng.integers(-(2**62), 2**62, size=len(b), dtype=np.int64)
    hashes_b[:10] = hashes_a[:10] ^ np.int64(0b101)
    pooled = phash_groups(np.concatenate([hashes_a, hashes_b]), 4)
    near = {"a": pooled[: len(a)], "b": pooled[len(a) :]}
    for seed in range(5):
        folds = pooled_folds({"a": a, "b": b}, n_folds=3, seed=seed, near_groups=near)
        assert np.array_equal(folds["a"][:10], folds["b"][:10]), seed
        for name, table in (("a", a), ("b", b)):
            assert (folds[name][-3:] == -1).all()  # test tiers are in no fold
            for _, members in table[table.tier != "final_test_main"].groupby("stimulus_group").groups.items():
                assert len(set(folds[name][list(members)])) == 1
    without = [pooled_folds({"a": a, "b": b}, n_folds=3, seed=s) for s in range(5)]
    assert any(not np.array_equal(f["a"][:10], f["b"][:10]) for f in without)  # the hash is what joins them
    again = pooled_folds({"a": a, "b": b}, n_folds=3, seed=1, near_groups=near)
    assert all(np.array_equal(again[m], pooled_folds({"a": a, "b": b}, 3, 1, near)[m]) for m in "ab")


def test_folds_are_balanced_and_split_every_labelled_trial_once():
    table = _mouse(60, 6, 10)
    folds = assign_folds(table, n_folds=7, seed=3)
    counts = np.bincount(folds[folds >= 0], minlength=7)
    assert counts.max() - counts.min() <= 10  # at most one oracle group apart
    seen = []
    for k in range(7):
        train, val = split_rows(folds, k)
        assert not set(train) & set(val)
        seen.extend(val.tolist())
    assert sorted(seen) == list(np.flatnonzero(folds >= 0))
    with pytest.raises(ConfigError, match="n_folds"):
        assign_folds(table, n_folds=1, seed=0)
    with pytest.raises(ConfigError, match="fold: 9"):
        split_rows(folds, 9)


def test_training_folds_read_the_stores_hashes_and_fall_back_to_exact_repeats(tmp_path):
    from factories import captured_logs, make_store

    from sensorium_pipeline.training.placement import load_sources
    from sensorium_pipeline.training.folds import fold_rows
    from sensorium_pipeline.data.store import TRIALS_NAME

    stores = [make_store(tmp_path / "a", mouse="mouse-a", seed=1), make_store(tmp_path / "b", mouse="mouse-b", seed=2)]
    data = load_sources(stores, mode="ram")
    with captured_logs() as messages:
        fold_rows(stores, data, 3, 0, 0, "phash", 4)
    assert any("exact repeats only" in m for m in messages)  # no hashes in these stores

    rng = np.random.default_rng(0)
    for path in stores:  # a converter of today writes one hash per trial; mouse b's trial 0 shows a's trial 0
        trials = pd.read_parquet(path / TRIALS_NAME)
        trials["video_phash"] = rng.integers(-(2**62), 2**62, size=len(trials), dtype=np.int64)
        trials.to_parquet(path / TRIALS_NAME)
    shared = int(pd.read_parquet(stores[0] / TRIALS_NAME)["video_phash"].iloc[0])
    trials = pd.read_parquet(stores[1] / TRIALS_NAME)
    trials.loc[0, "video_phash"] = shared ^ 1
    trials.to_parquet(stores[1] / TRIALS_NAME)
    for fold in range(3):
        rows = fold_rows(stores, data, 3, 0, fold, "phash", 4)
        in_val = [0 in rows[m][1] for m in ("mouse-a", "mouse-b")]
        assert in_val[0] == in_val[1], fold
