"""Atomic outputs, the official normalisation and the store/predictions contracts."""

from __future__ import annotations

import numpy as np
import pytest

from factories import make_store
from sensorium_pipeline.atomic import atomic_path, write_text_atomic
from sensorium_pipeline.data.normalize import response_precision, usable_frames
from sensorium_pipeline.data.store import open_mouse
from sensorium_pipeline.errors import PredictionError, StoreError
from sensorium_pipeline.scoring.predictions import Predictions, load_predictions, save_predictions


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_a_directory_whole(tmp_path):
    final = tmp_path / "store"
    final.mkdir()
    (final / "old").write_text("old")
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    write_text_atomic(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").read_text() == "x"


def test_response_precision_applies_the_official_threshold():
    std = np.array([[1.0, 0.001], [2.0, np.nan]])
    precision = response_precision(std)
    threshold = 0.01 * np.nanmean(std)
    assert precision[0, 0] == pytest.approx(1.0)
    assert precision[1, 0] == pytest.approx(0.5)
    assert precision[0, 1] == pytest.approx(1 / threshold)
    assert np.isnan(precision[1, 1])


def test_usable_frames_cut_at_first_nan_of_any_statistic():
    stats = np.ones((10, 3))
    stats[7, 1] = np.nan
    assert usable_frames(9, stats) == 7
    assert usable_frames(5, stats) == 5
    assert usable_frames(9, np.ones((10, 3)), max_frames=4) == 4


def test_store_rows_and_usable_frames(tmp_path):
    store = open_mouse(make_store(tmp_path / "m", valid_frames=[30] * 8 + [36] * 8))
    assert store.rows("oracle").tolist() == [8, 9, 10, 11]
    # train trials end at frame 30, so the statistics are NaN after it and every trial is cut there
    assert store.usable_frames().tolist() == [30] * 16
    with pytest.raises(StoreError, match="unknown tier"):
        store.rows("validation")


def test_open_mouse_names_what_is_missing(tmp_path):
    path = make_store(tmp_path / "m")
    (path / "trials.parquet").unlink()
    with pytest.raises(StoreError, match=r"trials\.parquet is missing"):
        open_mouse(path)


def test_predictions_round_trip_sorted_by_trial(tmp_path):
    values = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    preds = Predictions("m", [9, 2], ["oracle", "final_test_main"], values, [3, 2], [1, 2, 5, 7])
    save_predictions(tmp_path / "p.zarr", preds)
    back = load_predictions(tmp_path / "p.zarr")
    assert back.trial_ids.tolist() == [2, 9]
    assert back.tiers.tolist() == ["final_test_main", "oracle"]
    np.testing.assert_array_equal(back.values, values[::-1])
    assert back.select("oracle").trial_ids.tolist() == [9]
    with pytest.raises(PredictionError, match="p2.zarr"):
        load_predictions(tmp_path / "p2.zarr")
