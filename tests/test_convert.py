"""Archive → store conversion: a faithful copy, or a clear error and nothing written."""

from __future__ import annotations

import re
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensorium_pipeline.data.archive import open_archive
from sensorium_pipeline.data.convert import convert_archive
from sensorium_pipeline.data.store import HASH_COLUMNS, PHASH_COLUMN, STORE_FORMAT, TRIAL_COLUMNS, ZARR_NAME, open_mouse
from sensorium_pipeline.data.store_writer import same_bits
from sensorium_pipeline.errors import ArchiveError, ConfigError, StoreError
from sensorium_pipeline.layout import MODALITIES, NO_FILES, STATISTICS, TIERS_MEMBER, UNIT_IDS_MEMBER, data_member
from factories import MOUSE, captured_logs, flip_member_bytes, npy_bytes, rewrite_zip, simulate_small


def _time_major(array: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(array, -1, 0)).astype(dtype)


def _leftovers(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.parent.glob(f".{out_dir.name}.tmp-*"))


@pytest.fixture(scope="module")
def archive_path(tmp_path_factory) -> Path:
    return simulate_small(tmp_path_factory.mktemp("archive"))


@pytest.fixture(scope="module")
def converted(archive_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("stores") / MOUSE
    with captured_logs() as messages:
        summary = convert_archive(archive_path, out, workers=2, chunk_frames=16)
    return out, summary, messages


def test_every_trial_is_the_archive_array_transposed(archive_path, converted):
    out, summary, _ = converted
    store = open_mouse(out)
    with open_archive(archive_path) as archive:
        assert store.mouse == MOUSE and store.t_pad == archive.t_pad and store.n_neurons == archive.n_neurons
        assert store.group.attrs["format"] == STORE_FORMAT
        assert store.group.attrs["source_dtype"] == "float32"
        assert store.group.attrs["archive_sha256"] == summary["archive_sha256"]
        assert len(summary["archive_sha256"]) == 64
        ids = store.trials["trial_id"].to_numpy()
        for modality in MODALITIES:
            stored = store.array(modality)
            assert stored.shape[:2] == (len(ids), archive.t_pad) and stored.dtype == np.float32
            assert stored.chunks[:2] == (1, 16)  # random windows read a few small chunks
            for row, trial_id in enumerate(ids.tolist()):
                expected = _time_major(archive.read(modality, trial_id), "float32")
                assert same_bits(np.asarray(stored[row]), expected), (modality, trial_id)
        for modality in MODALITIES:
            for stat in STATISTICS:
                expected = _time_major(archive.statistic(modality, stat), "float32")
                assert same_bits(store.statistic(modality, stat), expected), (modality, stat)
        neurons = store.neurons
        assert neurons["unit_id"].tolist() == archive.unit_ids.tolist()
        np.testing.assert_array_equal(neurons[["x", "y", "z"]].to_numpy(), archive.coordinates)


def test_trials_table_lists_trials_with_files_and_groups_repeats(archive_path, converted):
    out, summary, _ = converted
    trials = pd.read_parquet(out / "trials.parquet")
    assert tuple(trials.columns) == (*TRIAL_COLUMNS, PHASH_COLUMN, *HASH_COLUMNS.values())
    solutions = pd.read_parquet(archive_path.with_name(f"{MOUSE}.solutions.parquet"))
    with open_archive(archive_path) as archive:
        with_files = np.flatnonzero(archive.tiers != NO_FILES)
        assert trials["trial_id"].tolist() == sorted(with_files.tolist())  # sorted, `none` ids absent
        assert trials["row"].tolist() == list(range(len(trials)))
        assert trials["tier"].tolist() == archive.tiers[trials["trial_id"]].tolist()
        for trial_id, valid in zip(trials["trial_id"], trials["valid_frames"], strict=True):
            video = archive.read("videos", int(trial_id))
            assert valid == int(np.sum(~np.isnan(video[0, 0])))
    assert trials["stimulus_group"].dtype == np.int64
    # Repeats of a stimulus share one group, different stimuli never do, train trials are alone.
    stimuli = solutions.set_index("trial_indices")["stimulus_id"]
    merged = trials.assign(stimulus_id=trials["trial_id"].map(stimuli))
    merged["stimulus_id"] = merged["stimulus_id"].fillna(merged["trial_id"].map(lambda i: f"train/{i}"))
    assert merged.groupby("stimulus_id")["stimulus_group"].nunique().max() == 1
    assert merged.groupby("stimulus_group")["stimulus_id"].nunique().max() == 1
    assert merged["stimulus_group"].nunique() == merged["stimulus_id"].nunique() == summary["stimulus_groups"]
    assert set(merged.groupby("stimulus_id").size()) == {1, 3}


def test_store_opens_for_training(converted):
    out, summary, _ = converted
    store = open_mouse(out)
    assert len(store.rows("train")) == summary["tiers"]["train"] == 12
    usable = store.usable_frames()
    assert usable.max() <= 60 and usable.min() > 0  # cut where train statistics end
    assert summary["verified_trials"] == 8


def test_progress_is_plain_text(converted):
    _, _, messages = converted
    assert any(re.fullmatch(r"converted 42/42 trials \(\d+\.\d trials/s\)", m) for m in messages)
    assert all(m.isprintable() for m in messages)


def test_parallel_conversion_writes_identical_files(archive_path, converted, tmp_path):
    out, _, _ = converted
    serial = tmp_path / MOUSE
    convert_archive(archive_path, serial, workers=1, chunk_frames=16)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assert files(serial) == files(out)


def test_uncompressed_store_holds_the_same_values_and_says_so(archive_path, converted, tmp_path):
    out, summary, _ = converted
    plain = tmp_path / MOUSE
    summary_plain = convert_archive(archive_path, plain, chunk_frames=16, compression="none", verify_trials=3)
    a, b = open_mouse(out), open_mouse(plain)
    assert (a.group.attrs["compression"], b.group.attrs["compression"]) == ("lz4", "none")
    assert (summary["compression"], summary_plain["compression"]) == ("lz4", "none")
    for modality in MODALITIES:
        assert b.array(modality).compressors == ()
        assert same_bits(np.asarray(a.array(modality)[...]), np.asarray(b.array(modality)[...])), modality
    size = {
        name: sum(f.stat().st_size for f in (root / ZARR_NAME / "responses").rglob("*") if f.is_file())
        for name, root in (("lz4", out), ("none", plain))
    }
    assert size["lz4"] < size["none"]
    with pytest.raises(ConfigError, match="conversion.compression"):
        convert_archive(archive_path, tmp_path / "x" / MOUSE, compression="gzip")


def test_float64_archive_converts_to_float32_and_float64(tmp_path):
    archive_path = simulate_small(tmp_path / "zip", dtype="float64", compression="deflated")
    with open_archive(archive_path) as archive:
        assert archive.dtype == np.float64
        trial_id = int(archive.trial_ids[-1])
        source = {m: archive.read(m, trial_id) for m in MODALITIES}
    for dtype in ("float32", "float64"):
        out = tmp_path / dtype / MOUSE
        convert_archive(archive_path, out, dtype=dtype, verify_trials=2)
        store = open_mouse(out)
        assert store.group.attrs["source_dtype"] == "float64"
        row = int(np.flatnonzero(store.trials["trial_id"] == trial_id)[0])
        for modality in MODALITIES:
            assert same_bits(np.asarray(store.array(modality)[row]), _time_major(source[modality], dtype))


def test_rerun_replaces_the_store_and_clears_stale_temporaries(archive_path, tmp_path):
    out = tmp_path / MOUSE
    stale = tmp_path / f".{MOUSE}.tmp-999999999-0badc0de"  # left by a killed run
    (stale / ZARR_NAME).mkdir(parents=True)
    out.mkdir()
    (out / "old-file").write_text("from an earlier conversion")
    convert_archive(archive_path, out, verify_trials=1)
    assert not stale.exists() and not (out / "old-file").exists()
    assert open_mouse(out).trials["trial_id"].size == 42


def _bad_archive(case: str, good: Path, bad: Path) -> list[str]:
    """Write a broken copy of ``good`` to ``bad``; return fragments the error must name."""
    with open_archive(good) as archive:
        ids = archive.trial_ids.tolist()
        first, last = ids[0], ids[-1]
        t_pad, n = archive.t_pad, archive.n_neurons
        train = int(ids[[str(archive.tiers[i]) for i in ids].index("train")])
    responses = data_member(MOUSE, "responses", last)
    if case == "truncated zip":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return ["not a readable zip"]
    if case == "corrupted member":  # found only when the data is read, after other trials were written
        shutil.copyfile(good, bad)
        flip_member_bytes(bad, responses)
        return [responses, "CRC"]
    if case == "member of the wrong shape":
        rewrite_zip(good, bad, replace={responses: lambda a: a[:, :-1]})
        return [responses, f"shape ({n}, {t_pad - 1}) differs from ({n}, {t_pad})"]
    if case == "float16 video":
        member = data_member(MOUSE, "videos", first)
        rewrite_zip(good, bad, replace={member: lambda a: a.astype(np.float16)})
        return [member, "dtype float16"]
    if case == "int16 behaviour":
        member = data_member(MOUSE, "behavior", last)
        rewrite_zip(good, bad, replace={member: lambda a: np.nan_to_num(a).astype(np.int16)})
        return [member, "dtype int16"]
    if case == "NaN inside the valid frames":
        member = data_member(MOUSE, "responses", train)

        def poke(array: np.ndarray) -> np.ndarray:
            array = array.copy()
            array[3, 10] = np.nan
            return array

        rewrite_zip(good, bad, replace={member: poke})
        return [member, "NaN inside the valid frames"]
    if case == "unknown tier value":
        member = f"{MOUSE}/{TIERS_MEMBER}"

        def rename(tiers: np.ndarray) -> np.ndarray:
            tiers = tiers.astype("<U20")
            tiers[tiers == "oracle"] = "validation"
            return tiers

        rewrite_zip(good, bad, replace={member: rename})
        return [member, "unknown tier", "'validation'"]
    if case == "missing unit_ids":
        member = f"{MOUSE}/{UNIT_IDS_MEMBER}"
        rewrite_zip(good, bad, drop=(member,))
        return [member, "missing"]
    if case == "missing statistics file":
        member = f"{MOUSE}/meta/statistics/pupil_center/all/median.npy"
        rewrite_zip(good, bad, drop=(member,))
        return [member, "missing"]
    if case == "trial missing in responses":
        member = data_member(MOUSE, "responses", first)
        rewrite_zip(good, bad, drop=(member,))
        return [member, "missing", "present in videos"]
    if case == "member shorter than its header":
        member = data_member(MOUSE, "videos", last)
        with open_archive(good) as archive:
            data = npy_bytes(archive.read("videos", last))
        rewrite_zip(good, bad, replace={member: data[:-100]})
        return [member, "shorter than its header says"]
    if case == "infinite statistic":
        member = f"{MOUSE}/meta/statistics/responses/all/std.npy"

        def infinite(array: np.ndarray) -> np.ndarray:
            array = array.copy()
            array[1, 4] = np.inf
            return array

        rewrite_zip(good, bad, replace={member: infinite})
        return [member, "frame 4 holds an infinite value"]
    if case == "infinity inside the valid frames":
        member = data_member(MOUSE, "videos", train)

        def poke_inf(array: np.ndarray) -> np.ndarray:
            array = array.copy()
            array[2, 3, 10] = -np.inf
            return array

        rewrite_zip(good, bad, replace={member: poke_inf})
        return [member, "-inf inside the valid frames (row (2, 3), frame 10"]
    if case == "duplicate member":
        member = data_member(MOUSE, "responses", last)
        shutil.copyfile(good, bad)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with zipfile.ZipFile(bad, "a") as raw:
                raw.writestr(member, npy_bytes(np.full((n, t_pad), 999, np.float32)))
        return [member, "appears 2 times"]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "truncated zip",
        "corrupted member",
        "member of the wrong shape",
        "float16 video",
        "int16 behaviour",
        "NaN inside the valid frames",
        "unknown tier value",
        "missing unit_ids",
        "missing statistics file",
        "trial missing in responses",
        "member shorter than its header",
        "infinite statistic",
        "infinity inside the valid frames",
        "duplicate member",
    ],
)
def test_bad_archive_stops_with_a_clear_error_and_writes_nothing(archive_path, tmp_path, case):
    bad = tmp_path / "download" / archive_path.name
    bad.parent.mkdir()
    fragments = _bad_archive(case, archive_path, bad)
    out = tmp_path / "data" / MOUSE
    with pytest.raises(ArchiveError) as error:
        convert_archive(bad, out, workers=2, sha256="0" * 64)
    message = str(error.value)
    assert message.startswith(f"{bad}: ")
    for fragment in fragments:
        assert fragment in message
    assert not out.exists() and _leftovers(out) == []
    # The user fixes the download and reruns: the same call now succeeds.
    shutil.copyfile(archive_path, bad)
    convert_archive(bad, out, workers=2, verify_trials=2)
    assert open_mouse(out).trials["trial_id"].size == 42


def test_root_folder_must_be_named_like_the_zip(archive_path, tmp_path):
    renamed = tmp_path / "mouse-x.zip"
    shutil.copyfile(archive_path, renamed)
    with pytest.raises(ArchiveError, match="root folder"):
        convert_archive(renamed, tmp_path / "mouse-x")
    assert not (tmp_path / "mouse-x").exists()


def test_written_store_is_checked_against_the_archive(archive_path, tmp_path, monkeypatch):
    """A write that silently goes wrong is caught by the read-back, and nothing is left."""
    from sensorium_pipeline.data import store_writer

    original = store_writer.ShardWriter.encode_chunk

    def faulty(self, block):  # as if a block went bad on its way to the disk
        if self.folder.name == "responses" and len(block):
            block = block.copy()
            block.flat[0] += 1.0
        return original(self, block)

    monkeypatch.setattr(store_writer.ShardWriter, "encode_chunk", faulty)
    out = tmp_path / MOUSE
    with pytest.raises(StoreError, match="does not read back"):
        convert_archive(archive_path, out, verify_trials=2)
    assert not out.exists() and _leftovers(out) == []


def test_neuron_statistics_are_those_of_the_valid_train_frames(archive_path, converted):
    out, _, _ = converted
    store = open_mouse(out)
    table = store.neuron_statistics()
    with open_archive(archive_path) as archive:
        train = [i for i in archive.trial_ids.tolist() if archive.tiers[i] == "train"]
        frames = [archive.read("responses", i) for i in train]
    values = np.concatenate([f[:, : int(np.sum(~np.isnan(f[0])))] for f in frames], axis=1).astype(np.float64)
    assert table["unit_id"].tolist() == store.unit_ids.tolist()
    assert (table["n_frames"] == values.shape[1]).all()
    np.testing.assert_allclose(table["mean"], values.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(table["std"], values.std(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(table["min"], values.min(axis=1))
    np.testing.assert_array_equal(table["max"], values.max(axis=1))
    np.testing.assert_allclose(table["median"], np.median(values, axis=1), rtol=1e-6)  # few frames: exact
    np.testing.assert_allclose(table["positive_fraction"], (values > 0).mean(axis=1))
    assert store.group["neuron_statistics"].attrs["train_trials"] == len(train)


def test_median_sample_is_bounded_and_spread_over_the_trial():
    from sensorium_pipeline.data.neuron_stats import sample_frames

    assert sample_frames(60, 12, budget=2048).tolist() == list(range(60))
    picked = sample_frames(300, 340, budget=2048)
    assert len(picked) == 7 and picked.min() >= 0 and picked.max() < 300 and np.all(np.diff(picked) > 30)


def test_video_phash_groups_repeats_like_the_exact_groups(converted):
    out, _, _ = converted
    store = open_mouse(out)
    hashes = store.video_phash()
    assert hashes.dtype == np.int64 and len(hashes) == len(store.trials)
    groups = store.trials["stimulus_group"].to_numpy()
    for group in np.unique(groups):  # exact repeats: identical hashes
        assert len(set(hashes[groups == group].tolist())) == 1
    assert len(set(hashes.tolist())) == len(np.unique(groups))  # different clips: different hashes


def test_store_from_an_older_converter_says_reconvert(converted, tmp_path):
    out, _, _ = converted
    old = tmp_path / MOUSE
    shutil.copytree(out, old)
    shutil.rmtree(old / ZARR_NAME / "neuron_statistics")
    trials = pd.read_parquet(old / "trials.parquet").drop(columns=[PHASH_COLUMN])
    trials.to_parquet(old / "trials.parquet", index=False)
    store = open_mouse(old)
    with pytest.raises(StoreError, match="reconvert"):
        store.video_phash()
    with pytest.raises(StoreError, match="reconvert"):
        store.neuron_statistics()
