"""The official archive format: what the writer produces and what the reader promises.

A small simulated mouse stands in for a downloaded zip; bad archives are built from it by
rewriting members (``rewrite_zip``), and ``tests/test_convert.py`` reuses both helpers.
"""

from __future__ import annotations

import io
import shutil
import tracemalloc
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import FRAMES, MOUSE, N_NEURONS, load_member, npy_bytes, rewrite_zip, simulate_small
from sensorium_pipeline.data.archive import ZIP_DATE_TIME, ArchiveWriter, open_archive
from sensorium_pipeline.errors import ArchiveError
from sensorium_pipeline.layout import LABELLED_TIERS, MODALITIES, NO_FILES, STATISTICS, UNIT_IDS_MEMBER, data_member


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


def _replace_member(archive_path: Path, target: Path, member: str, change) -> Path:
    with open_archive(archive_path) as archive:
        modality, trial_id = member.split("/")[-2], int(member.split("/")[-1][:-4])
        array = np.array(archive.read(modality, trial_id))
    return rewrite_zip(archive_path, target, replace={member: npy_bytes(change(array))})


@pytest.mark.parametrize("modality", ["responses", "videos"])
@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinity_inside_the_valid_frames_names_member_row_and_frame(archive_path, tmp_path, modality, value):
    trial_id = _first_trial(archive_path)
    member = data_member(MOUSE, modality, trial_id)

    def poke(array: np.ndarray) -> np.ndarray:
        array[(1,) * (array.ndim - 1) + (7,)] = value
        return array

    bad = _replace_member(archive_path, tmp_path / archive_path.name, member, poke)
    with open_archive(bad) as archive, pytest.raises(ArchiveError) as error:
        archive.read_trial(trial_id)
    row = "1" if modality == "responses" else "(1, 1)"
    sign = "+inf" if value > 0 else "-inf"
    assert str(error.value) == (
        f"{bad}: member {member}: {sign} inside the valid frames (row {row}, frame 7; "
        "only whole frames of NaN at the end of a trial may pad it)"
    )


def test_nan_padding_after_the_valid_length_and_huge_finite_values_stay_legal(archive_path, tmp_path):
    """Only non-finite values are refused: finite values whose frame sum overflows are data."""
    trial_id = _first_trial(archive_path)
    member = data_member(MOUSE, "responses", trial_id)
    with open_archive(archive_path) as archive:
        valid = archive.read_trial(trial_id).valid_frames
    assert valid < archive.t_pad  # the padding is there and stays legal

    def huge(array: np.ndarray) -> np.ndarray:
        array[:, 2] = np.finfo(np.float32).max  # the frame's sum overflows to +inf
        return array

    changed = _replace_member(archive_path, tmp_path / archive_path.name, member, huge)
    with open_archive(changed) as archive:
        assert archive.read_trial(trial_id).valid_frames == valid


def test_nan_inside_the_valid_frames_names_row_and_frame(archive_path, tmp_path):
    trial_id = _first_trial(archive_path)
    member = data_member(MOUSE, "behavior", trial_id)

    def hole(array: np.ndarray) -> np.ndarray:
        array[:, 5] = np.nan  # a whole NaN frame before the end is no padding
        return array

    bad = _replace_member(archive_path, tmp_path / archive_path.name, member, hole)
    with open_archive(bad) as archive, pytest.raises(ArchiveError, match=r"NaN inside the valid frames \(row 0, frame 5"):
        archive.read_trial(trial_id)


def test_duplicate_member_names_are_refused(archive_path, tmp_path):
    """A zip may hold two members of one name (zipfile only warns); the last would win."""
    trial_id = _first_trial(archive_path)
    member = data_member(MOUSE, "responses", trial_id)
    bad = tmp_path / archive_path.name
    shutil.copyfile(archive_path, bad)
    with open_archive(archive_path) as archive:
        shape = archive.read("responses", trial_id).shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        with zipfile.ZipFile(bad, "a") as raw:
            raw.writestr(member, npy_bytes(np.full(shape, 999, np.float32)))
    with pytest.raises(ArchiveError) as error:
        open_archive(bad)
    assert str(error.value) == (
        f"{bad}: member {member} appears 2 times (1 names appear more than once; a zip must name each member once)"
    )


def test_trial_ids_must_be_ascii_digits(archive_path, tmp_path):
    """``'\u0663'.isdigit()`` is true and ``int('\u0663') == 3``: such a name must not alias trial 3."""
    bad = rewrite_zip(archive_path, tmp_path / archive_path.name, add={f"{MOUSE}/data/videos/\u0663.npy": b"x"})
    with pytest.raises(ArchiveError, match="expected data files named <trial id>.npy"):
        open_archive(bad)


def _npy_header(shape: tuple[int, ...], descr: str = "<i8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize("shape", [(2**62 + 5, 4), (2**70,), (-1,)])
def test_header_shapes_that_overflow_or_are_negative_give_one_line(archive_path, tmp_path, shape):
    member = f"{MOUSE}/{UNIT_IDS_MEMBER}"
    # (2**62 + 5) * 4 * 8 wraps to 160 in int64: give the member exactly that many data bytes
    bad = rewrite_zip(archive_path, tmp_path / archive_path.name, replace={member: _npy_header(shape) + b"\0" * 160})
    with pytest.raises(ArchiveError) as error:
        open_archive(bad)
    message = str(error.value)
    assert message.startswith(f"{bad}: member {member}: ") and "\n" not in message
    assert "header declares" in message or "not a valid .npy file" in message


def test_meta_file_that_inflates_to_a_gigantic_size_is_refused_unread(archive_path, tmp_path):
    """A 128 MiB unit_ids.npy deflated to about 130 KB: refused from the zip's directory alone."""
    member = f"{MOUSE}/{UNIT_IDS_MEMBER}"
    bad = rewrite_zip(archive_path, tmp_path / archive_path.name, drop=(member,))
    with zipfile.ZipFile(bad, "a", compression=zipfile.ZIP_DEFLATED) as raw:
        with raw.open(member, "w", force_zip64=True) as stream:
            stream.write(_npy_header((2**24,)))
            zeros = bytes(2**20)
            for _ in range(2**24 * 8 // len(zeros)):
                stream.write(zeros)
    assert bad.stat().st_size < archive_path.stat().st_size + 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match=r"declares 134217\d+ bytes uncompressed.*refused unread"):
            open_archive(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # nothing near the declared size was inflated


def test_messages_show_plain_strings_not_numpy_reprs(archive_path, tmp_path):
    with open_archive(archive_path) as archive:
        first = int(archive.trial_ids[0])
        tier = str(archive.tiers[first])
    member = data_member(MOUSE, "behavior", first)
    bad = rewrite_zip(archive_path, tmp_path / archive_path.name, drop=(member,))
    with pytest.raises(ArchiveError) as error:
        open_archive(bad)
    assert f"has tier '{tier}'" in str(error.value) and "np.str_" not in str(error.value)
