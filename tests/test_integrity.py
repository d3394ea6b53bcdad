"""A converted store that lost or changed data is noticed: by ``verify``, by ``inspect`` and
by any job that reads the damaged trial (Zarr alone would read a missing shard as NaN)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import MOUSE, simulate_small
from sensorium_pipeline.__main__ import main
from sensorium_pipeline.data.convert import convert_archive
from sensorium_pipeline.data.integrity import verify_store
from sensorium_pipeline.data.sources import load_mouse, open_lazy
from sensorium_pipeline.data.store import HASH_COLUMNS, TRIALS_NAME, ZARR_NAME, open_mouse, row_digest, storage_keys
from sensorium_pipeline.errors import StoreError
from sensorium_pipeline.layout import LABELLED_TIERS, MODALITIES


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    archive = simulate_small(tmp_path_factory.mktemp("zip"))
    out = tmp_path_factory.mktemp("stores") / MOUSE
    convert_archive(archive, out, verify_trials=1, compression="none")
    return out


@pytest.fixture()
def store_dir(pristine, tmp_path) -> Path:
    copy = tmp_path / MOUSE
    shutil.copytree(pristine, copy)
    return copy


def _labelled_row(store_dir: Path) -> tuple[int, int]:
    trials = open_mouse(store_dir).trials
    first = trials[trials["tier"] == "train"].iloc[2]
    return int(first["row"]), int(first["trial_id"])


def _shard(store_dir: Path, modality: str, row: int) -> Path:
    store = open_mouse(store_dir)
    (key,) = storage_keys(store.group[modality], row)
    return store_dir / ZARR_NAME / modality / key


def test_hashes_recorded_at_conversion_are_those_of_the_stored_rows(pristine):
    store = open_mouse(pristine)
    assert store.has_hashes()
    for modality in MODALITIES:
        for row in (0, len(store.trials) - 1):
            assert store.trials[HASH_COLUMNS[modality]][row] == row_digest(np.asarray(store.group[modality][row]))
    report = verify_store(pristine)
    assert report["ok"] and report["hash_mismatches"] == 0 and report["missing_rows"] == {}


def test_a_deleted_shard_fails_verify_inspect_and_every_read(store_dir, capsys):
    row, trial = _labelled_row(store_dir)
    _shard(store_dir, "responses", row).unlink()

    with pytest.raises(StoreError) as error:
        verify_store(store_dir)
    assert f"responses row {row} (trial {trial}): shard missing" in str(error.value)
    assert "\n" not in str(error.value)

    assert main(["inspect", str(store_dir)]) == 0
    integrity = json.loads(capsys.readouterr().out)["integrity"]
    assert integrity["complete"] is False
    assert integrity["missing_rows"] == {"responses": {"count": 1, "first": [row]}}

    assert main(["verify", str(store_dir)]) == 2
    assert f"responses row {row} (trial {trial}): shard missing" in capsys.readouterr().err

    # the read path every job uses: RAM loading, lazy windows, a direct row read
    expected = re.escape(f"row {row} (trial {trial}) has no data")
    with pytest.raises(StoreError, match=expected):
        load_mouse(store_dir, LABELLED_TIERS)
    lazy = open_lazy(store_dir, LABELLED_TIERS)
    index = int(np.flatnonzero(lazy.store_rows == row)[0])
    with pytest.raises(StoreError, match=expected):
        lazy.window([index], [0], 10)
    with pytest.raises(StoreError, match=expected):
        open_mouse(store_dir).array("responses")[row, :10]
    open_mouse(store_dir).array("responses")[row + 1, :10]  # the other rows still read


def test_changed_bytes_fail_verify_naming_the_row(store_dir):
    row, trial = _labelled_row(store_dir)
    shard = _shard(store_dir, "videos", row)
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # uncompressed: the bytes decode, only the hash can tell
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=rf"videos row {row} \(trial {trial}\): content differs from its hash") as error:
        verify_store(store_dir)
    assert error.value.report["hash_mismatches"] == 1


def test_store_without_hashes_says_reconvert(store_dir):
    trials = pd.read_parquet(store_dir / TRIALS_NAME).drop(columns=list(HASH_COLUMNS.values()))
    trials.to_parquet(store_dir / TRIALS_NAME, index=False)
    with pytest.raises(StoreError, match="records no per-trial hashes.*reconvert"):
        verify_store(store_dir)


def test_verify_prints_a_report(pristine, capsys):
    assert main(["verify", str(pristine)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["rows"] == 42 and report["trial_hashes"] == "recorded"
