"""The official archive format: what the writer produces and what the reader promises.

A small simulated mouse stands in for a downloaded zip; bad archives are built from it by
rewriting members (``rewrite_zip``), and ``tests/test_convert.py`` reuses both helpers.
"""

from __future__ import annotations

import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import FRAMES, MOUSE, N_NEURONS, load_member, npy_bytes, rewrite_zip, simulate_small
from sensorium_pipeline.archive import ZIP_DATE_TIME, ArchiveWriter, open_archive
from sensorium_pipeline.errors import ArchiveError
from sensorium_pipeline.layout import LABELLED_TIERS, MODALITIES, NO_FILES, STATISTICS, data_member


@pytest.fixture(scope="module")
def archive_path(tmp_path_factory) -> Path:
    return simulate_small(tmp_path_factory.mktemp("archive"))


@pytest.fixture(scope="module")
def solutions(archive_path) -> pd.DataFrame:
    return pd.read_parquet(archive_path.with_name(f"{MOUSE}.solutions.parquet"))


def test_archive_layout_matches_the_competition(archive_path, solutions):
    with open_archive(archive_path) as archive:
        assert archive.root == archive_path.stem == MOUSE
        t_pad, n = archive.t_pad, archive.n_neurons
        assert n == N_NEURONS and FRAMES <= t_pad <= 70
        assert archive.dtype == np.float32
        tiers = archive.tiers
        assert np.sum(tiers == NO_FILES) == 4
        assert archive.trial_ids.tolist() == sorted(np.flatnonzero(tiers != NO_FILES).tolist())
        assert np.all(np.diff(archive.unit_ids) > 0) and archive.coordinates.shape == (n, 3)
        bonus_lengths = dict(zip(solutions["trial_indices"], solutions["responses"].map(lambda r: len(r[0]))))
        for trial_id in archive.trial_ids.tolist():
            trial = archive.read_trial(trial_id)
            tier = str(tiers[trial_id])
            assert trial.arrays["videos"].shape == (36, 64, t_pad)  # time last
            assert trial.arrays["responses"].shape == (n, t_pad)
            assert trial.arrays["behavior"].shape == trial.arrays["pupil_center"].shape == (2, t_pad)
            length = bonus_lengths.get(trial_id, FRAMES)
            assert trial.valid_frames == length
            for modality in ("videos", "behavior", "pupil_center"):
                array = trial.arrays[modality]
                assert np.all(np.isnan(array[..., length:])) and not np.any(np.isnan(array[..., :length]))
            responses = trial.arrays["responses"]
            if tier in LABELLED_TIERS:
                # non-negative up to the deconvolution residue (about -3e-7) of the real archives
                assert np.all(np.isnan(responses[:, length:])) and np.all(responses[:, :length] > -1e-5)
            else:  # withheld: zeros over the full (N, T_pad), no NaN padding
                assert np.all(responses == 0)
        for modality in MODALITIES:
            for stat in STATISTICS:
                assert archive.statistic(modality, stat).shape[-1] == t_pad


def test_reader_returns_the_member_arrays_without_extracting(archive_path):
    before = sorted(archive_path.parent.iterdir())
    with open_archive(archive_path) as archive, zipfile.ZipFile(archive_path) as raw:
        for trial_id in archive.trial_ids[:3].tolist():
            for modality in MODALITIES:
                expected = load_member(raw.read(data_member(MOUSE, modality, trial_id)))
                got = archive.read(modality, trial_id)
                assert got.dtype == expected.dtype
                np.testing.assert_array_equal(got, expected)
        stat = load_member(raw.read(f"{MOUSE}/meta/statistics/responses/all/std.npy"))
        np.testing.assert_array_equal(archive.statistic("responses", "std"), stat)
    assert sorted(archive_path.parent.iterdir()) == before


def test_threads_read_concurrently(archive_path):
    with open_archive(archive_path) as archive:
        ids = archive.trial_ids.tolist()
        serial = [archive.read("videos", i) for i in ids]
        with ThreadPoolExecutor(4) as pool:
            parallel = list(pool.map(lambda i: archive.read("videos", i), ids))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_writer_is_deterministic_and_atomic(tmp_path):
    arrays = {
        "videos": np.full((36, 64, 5), 7.5, np.float32),
        "responses": np.zeros((3, 5), np.float32),
        "behavior": np.ones((2, 5), np.float32),
        "pupil_center": np.ones((2, 5), np.float32),
    }

    def write(path: Path, compression: int) -> bytes:
        with ArchiveWriter(path, root="m", compression=compression) as writer:
            writer.add_trial(0, **arrays)
            writer.add_array("meta/trials/tiers.npy", np.array(["train"]))
        return path.read_bytes()

    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        assert write(tmp_path / "a.zip", compression) == write(tmp_path / "b.zip", compression)
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        assert {i.date_time for i in archive.infolist()} == {ZIP_DATE_TIME}
        assert "m/data/videos/0.npy" in archive.namelist()

    with pytest.raises(RuntimeError), ArchiveWriter(tmp_path / "c.zip", root="m") as writer:
        writer.add_trial(0, **arrays)
        raise RuntimeError("simulation failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "b.zip"]


def test_macosx_folder_and_config_json_are_ignored(archive_path, tmp_path):
    extra = rewrite_zip(
        archive_path,
        tmp_path / archive_path.name,
        add={f"__MACOSX/{MOUSE}/._tiers.npy": b"junk", f"{MOUSE}/config.json": b"{}"},
    )
    with open_archive(extra) as archive, open_archive(archive_path) as original:
        assert archive.root == MOUSE
        assert archive.trial_ids.tolist() == original.trial_ids.tolist()


def _first_trial(archive_path: Path) -> int:
    with open_archive(archive_path) as archive:
        return int(archive.trial_ids[0])


@pytest.mark.parametrize(
    "case",
    ["two root folders", "files for a trial of tier none", "member longer than its header", "not a zip"],
)
def test_structure_problems_name_the_archive_and_the_member(archive_path, tmp_path, case):
    bad = tmp_path / archive_path.name
    first = _first_trial(archive_path)
    videos = data_member(MOUSE, "videos", first)
    if case == "two root folders":
        rewrite_zip(archive_path, bad, add={"other/meta/trials/tiers.npy": npy_bytes(np.array(["train"]))})
        expected = ["one root folder", "other"]
    elif case == "files for a trial of tier none":
        with open_archive(archive_path) as archive:
            none_id = int(np.flatnonzero(archive.tiers == NO_FILES)[0])
        with zipfile.ZipFile(archive_path) as raw:
            members = {
                data_member(MOUSE, m, none_id): raw.read(data_member(MOUSE, m, first)) for m in MODALITIES
            }
        rewrite_zip(archive_path, bad, add=members)
        expected = [f"{MOUSE}/data/videos/{none_id}.npy", "tier 'none'"]
    elif case == "member longer than its header":
        with zipfile.ZipFile(archive_path) as raw:
            data = raw.read(videos)
        rewrite_zip(archive_path, bad, replace={videos: data + b"\0" * 16})
        expected = [videos, "longer than its header says"]
    else:
        bad.write_bytes(b"PK\x03\x04 this is not a zip")
        expected = ["not a readable zip"]
    with pytest.raises(ArchiveError) as error:
        open_archive(bad)
    message = str(error.value)
    assert message.startswith(str(bad))
    for fragment in expected:
        assert fragment in message


def test_copy_of_fixture_is_equal(archive_path, tmp_path):
    """``rewrite_zip`` without changes keeps every array (the bad-archive tests rely on it)."""
    copy = rewrite_zip(archive_path, tmp_path / archive_path.name)
    with open_archive(copy) as a, open_archive(archive_path) as b:
        trial_id = int(a.trial_ids[-1])
        for modality in MODALITIES:
            np.testing.assert_array_equal(a.read(modality, trial_id), b.read(modality, trial_id))


def test_stored_and_deflated_members_read_alike(archive_path, tmp_path):
    """Stored members are read through a memory map, deflated ones through zipfile: same arrays."""
    deflated = tmp_path / archive_path.name
    with zipfile.ZipFile(archive_path) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info.filename, source.read(info))
    with open_archive(archive_path) as stored, open_archive(deflated) as packed:
        for trial_id in stored.trial_ids[:3].tolist():
            a, b = stored.read_trial(trial_id), packed.read_trial(trial_id)
            assert a.valid_frames == b.valid_frames
            for modality in a.arrays:
                assert a.arrays[modality].tobytes() == b.arrays[modality].tobytes()
                assert not a.arrays[modality].flags.writeable
            stored.evict(trial_id)  # the pages go; the arrays still read (from the file cache)
            assert a.arrays["responses"].tobytes() == b.arrays["responses"].tobytes()


def test_frames_holding_both_infinities_are_not_padding(archive_path, tmp_path):
    """A frame whose sum is NaN without holding NaN (+inf and -inf) is a valid frame."""
    with open_archive(archive_path) as archive:
        trial_id = int(archive.trial_ids[0])
        responses = np.array(archive.read("responses", trial_id))
        valid = archive.read_trial(trial_id).valid_frames
    responses[0, 3], responses[1, 3] = np.inf, -np.inf
    member = data_member(MOUSE, "responses", trial_id)
    changed = rewrite_zip(archive_path, tmp_path / archive_path.name, replace={member: npy_bytes(responses)})
    with open_archive(changed) as archive:
        assert archive.read_trial(trial_id).valid_frames == valid > 3
