"""Submission files: written in the official format, validated with the scorer's rules."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factories import make_store
from sensorium_pipeline.data.store import MouseStore, open_mouse
from sensorium_pipeline.errors import PredictionError, SubmissionError
from sensorium_pipeline.scoring.metrics import EvaluationWindow
from sensorium_pipeline.scoring.predictions import Predictions
from sensorium_pipeline.scoring.submission import COLUMNS, SCHEMA, validate_submission, write_submission

WINDOW = EvaluationWindow(skip_first=4, max_frames=40, skip_last=1)
MAIN = "main_track.zip"
LIVE_MAIN = "predictions_live_main.parquet.brotli"
TIERS_FULL = ["train"] * 6 + ["oracle"] * 2 + ["live_test_main"] * 3 + ["final_test_main"] * 2
TIERS_FULL += ["live_test_bonus"] * 2 + ["final_test_bonus"] * 3
# bonus trials are shorter: 30 usable frames -> 25 scored, natural ones 36 -> 31
VALID_FULL = [36] * 13 + [30] * 5
TIERS_MAIN = ["train"] * 6 + ["oracle"] * 2 + ["live_test_main"] * 2 + ["final_test_main"] * 2


def _predictions(store: MouseStore, seed: int, shuffle_neurons: bool = False) -> Predictions:
    rng = np.random.default_rng(seed)
    trials = store.trials[store.trials["tier"] != "train"]
    usable = store.usable_frames()[(store.trials["tier"] != "train").to_numpy()]
    values = rng.normal(size=(len(trials), store.t_pad, store.n_neurons)).astype(np.float32)
    for i, n in enumerate(usable):
        values[i, n:] = np.nan
    unit_ids = store.unit_ids
    if shuffle_neurons:  # the submission must put neurons back in unit_ids order
        order = rng.permutation(store.n_neurons)
        values, unit_ids = values[:, :, order], unit_ids[order]
    return Predictions(store.mouse, trials["trial_id"], trials["tier"], values, usable, unit_ids)


@pytest.fixture()
def written(tmp_path):
    stores = {
        "m1": open_mouse(make_store(tmp_path / "m1", mouse="dyn-m1", tiers=TIERS_FULL, valid_frames=VALID_FULL)),
        "m2": open_mouse(make_store(tmp_path / "m2", mouse="dyn-m2", tiers=TIERS_MAIN, n_neurons=5, seed=1)),
    }
    preds = {"m1": _predictions(stores["m1"], 0, shuffle_neurons=True), "m2": _predictions(stores["m2"], 1)}
    out = tmp_path / "submission"
    paths = write_submission(preds, stores, out, WINDOW)
    return out, stores, preds, paths


def _expected(preds: Predictions, store: MouseStore, trial_id: int) -> np.ndarray:
    i = int(np.flatnonzero(preds.trial_ids == trial_id)[0])
    column = {int(u): k for k, u in enumerate(preds.unit_ids)}
    order = [column[int(u)] for u in store.unit_ids]
    return WINDOW.cut(preds.values[i], int(preds.n_frames[i]))[:, order].T


def _read_member(zip_path: Path, member: str) -> pa.Table:
    with zipfile.ZipFile(zip_path) as archive, archive.open(member) as stream:
        return pq.read_table(pa.BufferReader(stream.read()))


def test_written_files_follow_the_official_format_and_validate(written):
    out, stores, preds, paths = written
    assert [p.name for p in paths] == ["main_track.zip", "bonus_live.zip", "bonus_final.zip", "csv"]
    with zipfile.ZipFile(out / MAIN) as archive:
        assert sorted(archive.namelist()) == sorted([LIVE_MAIN, "predictions_final_main.parquet.brotli"])
    with zipfile.ZipFile(out / "bonus_final.zip") as archive:
        assert archive.namelist() == ["predictions_final_test_bonus_ood.parquet.brotli"]
        with archive.open(archive.namelist()[0]) as stream:
            meta = pq.ParquetFile(pa.BufferReader(stream.read())).metadata
        assert meta.row_group(0).column(0).compression == "BROTLI"
    table = _read_member(out / MAIN, LIVE_MAIN)
    assert table.schema.names == list(COLUMNS)
    assert table.schema.equals(SCHEMA)
    rows = table.to_pylist()
    assert [(r["mouse"], r["trial_indices"]) for r in rows] == [("dyn-m1", 17), ("dyn-m1", 19), ("dyn-m1", 21)] + [
        ("dyn-m2", 17),
        ("dyn-m2", 19),
    ]
    for row in rows:
        key = "m1" if row["mouse"] == "dyn-m1" else "m2"
        assert row["neuron_ids"] == stores[key].unit_ids.tolist()
        matrix = np.asarray(row["prediction"], dtype=np.float32)
        np.testing.assert_array_equal(matrix, _expected(preds[key], stores[key], row["trial_indices"]))
    bonus = _read_member(out / "bonus_final.zip", "predictions_final_test_bonus_ood.parquet.brotli").to_pylist()
    assert {r["mouse"] for r in bonus} == {"dyn-m1"}  # m2 has no bonus tiers
    assert np.asarray(bonus[0]["prediction"]).shape == (12, 25)
    assert sorted(p.name for p in (out / "csv" / "m2").iterdir()) == ["final_test_main.csv", "live_test_main.csv"]
    validate_submission(out, stores, WINDOW)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_csv_round_trip_is_exact(written):
    out, stores, preds, _ = written
    frame = pd.read_csv(out / "csv" / "m1" / "live_test_main.csv")
    assert list(frame.columns) == ["file_name", "predictions"]
    assert frame["file_name"].tolist() == ["17.npy", "19.npy", "21.npy"]
    for name, cell in zip(frame["file_name"], frame["predictions"], strict=True):
        assert "..." not in cell
        back = np.asarray(json.loads(cell), dtype=np.float32)
        expected = _expected(preds["m1"], stores["m1"], int(name.split(".")[0]))
        assert back.shape == (12, 31)
        np.testing.assert_array_equal(back, expected)


def _rewrite(zip_path: Path, member: str, change, rename: str | None = None) -> None:
    """Re-zip ``zip_path`` with ``member``'s rows changed by ``change(rows) -> rows``."""
    with zipfile.ZipFile(zip_path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    table = pq.read_table(pa.BufferReader(contents[member]))
    rows = change(table.to_pylist())
    schema = SCHEMA if set(rows[0]) == set(COLUMNS) else None
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink, compression="brotli")
    contents[member] = sink.getvalue().to_pybytes()
    if rename:
        contents[rename] = contents.pop(member)
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


def _set(rows, index, key, value):
    rows[index] = {**rows[index], key: value}
    return rows


def _nan(rows):
    prediction = [list(r) for r in rows[0]["prediction"]]
    prediction[2][3] = float("nan")
    return _set(rows, 0, "prediction", prediction)


TAMPERINGS = {
    "extra column": (lambda rows: [{**r, "extra": 1} for r in rows], "columns"),
    "missing trial": (lambda rows: rows[1:], r"1 missing \(mouse, trial\) row"),
    "extra trial": (lambda rows: rows + [{**rows[0], "trial_indices": 999}], "trial 999: extra row"),
    "duplicate trial": (lambda rows: rows + [rows[0]], r"duplicate \(mouse, trial\) row"),
    "duplicate neuron id": (
        lambda rows: _set(rows, 0, "neuron_ids", rows[0]["neuron_ids"][:-1] + rows[0]["neuron_ids"][:1]),
        "duplicate neuron ids",
    ),
    "neuron order": (
        lambda rows: _set(rows, 0, "neuron_ids", rows[0]["neuron_ids"][::-1]),
        "not in unit_ids order",
    ),
    "wrong shape": (
        lambda rows: _set(rows, 0, "prediction", [r[:-1] for r in rows[0]["prediction"]]),
        r"shape \(12, 30\), expected \(12, 31\)",
    ),
    "NaN": (_nan, "non-finite"),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_each_tampering_fails_validation_naming_the_file(written, name):
    out, stores, _, _ = written
    change, problem = TAMPERINGS[name]
    _rewrite(out / MAIN, LIVE_MAIN, change)
    with pytest.raises(SubmissionError, match=problem) as info:
        validate_submission(out, stores, WINDOW)
    assert f"{out / MAIN}!{LIVE_MAIN}" in str(info.value)


def test_wrong_member_name_fails_validation(written):
    out, stores, _, _ = written
    _rewrite(out / MAIN, LIVE_MAIN, lambda rows: rows, rename="predictions_live.parquet")
    with pytest.raises(SubmissionError) as info:
        validate_submission(out, stores, WINDOW)
    message = str(info.value)
    assert f"{out / MAIN}: unexpected member 'predictions_live.parquet'" in message
    assert f"{out / MAIN}: member '{LIVE_MAIN}' is missing" in message


def test_truncated_csv_cell_and_every_problem_are_reported(written):
    out, stores, preds, _ = written
    path = out / "csv" / "m2" / "final_test_main.csv"
    frame = pd.read_csv(path)
    cell = np.array2string(np.asarray(json.loads(frame.loc[1, "predictions"])), threshold=10)
    assert "..." in cell  # the truncated printout pandas writes for an array cell
    frame.loc[1, "predictions"] = cell
    frame.to_csv(path, index=False)
    (out / "csv" / "m2" / "live_test_bonus.csv").write_text("file_name,predictions\n")
    _rewrite(out / MAIN, LIVE_MAIN, _nan)
    with pytest.raises(SubmissionError) as info:
        validate_submission(out, stores, WINDOW)
    problems = info.value.problems
    assert any(p.startswith(f"{path}: line 3 (trial 23): predictions cell is not a full JSON") for p in problems)
    assert any(p.startswith(f"{out / 'csv' / 'm2' / 'live_test_bonus.csv'}: unexpected file") for p in problems)
    assert any(p.startswith(f"{out / MAIN}!{LIVE_MAIN}") and "non-finite" in p for p in problems)
    assert len(problems) == 3


def test_csv_values_must_equal_the_parquet(written):
    out, stores, _, _ = written
    path = out / "csv" / "m1" / "live_test_main.csv"
    frame = pd.read_csv(path)
    matrix = np.asarray(json.loads(frame.loc[0, "predictions"]))
    matrix[0, 0] += 1.0
    frame.loc[0, "predictions"] = json.dumps(matrix.tolist())
    frame.to_csv(path, index=False)
    with pytest.raises(SubmissionError, match="values differ from the Parquet"):
        validate_submission(out, stores, WINDOW)


def test_write_refuses_predictions_missing_a_test_trial(tmp_path):
    store = open_mouse(make_store(tmp_path / "m", mouse="dyn-m", tiers=TIERS_MAIN))
    preds = _predictions(store, 0).select("oracle", "live_test_main")
    with pytest.raises(PredictionError, match=r"p\.zarr: no prediction for 2 trial\(s\) of tier final_test_main"):
        write_submission({"m": preds}, {"m": store}, tmp_path / "out", WINDOW, sources={"m": "p.zarr"})
    assert not (tmp_path / "out" / MAIN).exists()
    assert not [p for p in (tmp_path / "out").iterdir()]  # nothing half-written


def test_parquet_only_submission_without_the_csv_fallback(written, tmp_path):
    _, stores, preds, _ = written
    out = tmp_path / "parquet-only"
    paths = write_submission(preds, stores, out, WINDOW, csv_fallback=False)
    assert [p.name for p in paths] == ["main_track.zip", "bonus_live.zip", "bonus_final.zip"]
    assert not (out / "csv").exists()
    validate_submission(out, stores, WINDOW, csv_fallback=False)
    with pytest.raises(SubmissionError, match="csv: missing"):
        validate_submission(out, stores, WINDOW)


def _replace_column(zip_path: Path, member: str, column: str, values: pa.Array) -> None:
    """Re-zip ``zip_path`` with one column of ``member`` replaced (any Arrow type)."""
    with zipfile.ZipFile(zip_path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    table = pq.read_table(pa.BufferReader(contents[member]))
    table = table.set_column(table.schema.get_field_index(column), column, values)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="brotli")
    contents[member] = sink.getvalue().to_pybytes()
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


def _as_strings(table: pa.Table, column: str, nested: bool) -> pa.Array:
    rows = table.column(column).to_pylist()
    if not nested:
        return pa.array([json.dumps(r) for r in rows], pa.string())
    if column == "neuron_ids":
        return pa.array([[str(v) for v in r] for r in rows], pa.list_(pa.string()))
    return pa.array([[[str(v) for v in inner] for inner in r] for r in rows], pa.list_(pa.list_(pa.string())))


@pytest.mark.parametrize("column", ["prediction", "neuron_ids"])
@pytest.mark.parametrize("nested", [True, False], ids=["strings-inside-lists", "string-column"])
def test_strings_in_a_column_name_the_column_and_the_type_expected(written, column, nested):
    out, stores, _, _ = written
    values = _as_strings(_read_member(out / MAIN, LIVE_MAIN), column, nested)
    _replace_column(out / MAIN, LIVE_MAIN, column, values)
    with pytest.raises(SubmissionError) as info:
        validate_submission(out, stores, WINDOW)
    expected = {"prediction": "list<list<float32>>", "neuron_ids": "list<int64>"}[column]
    found = {True: {"prediction": "list<list<string>>", "neuron_ids": "list<string>"}[column], False: "string"}[nested]
    assert f"{out / MAIN}!{LIVE_MAIN}: column '{column}' holds {found}, expected {expected}" in str(info.value)


def test_two_runs_write_byte_identical_zips(written, tmp_path):
    """Member timestamps are fixed (not the write time) and the Parquet settings are pinned."""
    import hashlib
    import time

    first, stores, preds, _ = written
    time.sleep(2.1)  # zip timestamps have a 2 s resolution: a second run lands in another slot
    second = tmp_path / "again"
    write_submission(preds, stores, second, WINDOW)
    for name in ("main_track.zip", "bonus_live.zip", "bonus_final.zip"):
        digests = [hashlib.sha256((folder / name).read_bytes()).hexdigest() for folder in (first, second)]
        assert digests[0] == digests[1], name
        with zipfile.ZipFile(second / name) as archive:
            assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
