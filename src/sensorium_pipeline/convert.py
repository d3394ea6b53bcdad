"""Archive (zip) → converted store: the one-off conversion every later stage reads from.

The archive is validated from its headers first (:func:`archive.open_archive`), then the
trials are converted in parallel threads, each reading one trial through its own zip
handle and writing that trial's rows (one shard file per trial and array, so no two
threads ever touch the same file). Arrays become time-major, as training windows slice
time; chunks of ``chunk_frames`` frames make a random window read a few small chunks.
Memory stays bounded: only a few trials are in flight at once.

Everything is written into a temporary sibling of ``out_dir`` and renamed into place at
the end, after some trials were re-read and compared bit for bit with the archive, so an
existing ``out_dir`` is always a complete, verified store (layout: :mod:`store`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec

from .archive import Archive, open_archive
from .atomic import atomic_path, remove_stale_temporaries
from .errors import ArchiveError, ConfigError, StoreError
from .layout import MODALITIES, STATISTICS, VIDEO_HEIGHT, VIDEO_WIDTH
from .store import NEURONS_NAME, STORE_FORMAT, TRIALS_NAME, ZARR_NAME

STORE_DTYPES: tuple[str, ...] = ("float32", "float64")
#: Bump when a change here (or in ``archive``) changes what a conversion writes; the
#: ``convert`` rule can pass it as a param so that existing stores are rebuilt.
CONVERTER_VERSION = 1
#: Blosc-LZ4 with byte shuffle: several times faster than zstd for about the same size on
#: these float arrays (measured on a simulated mouse), so conversion stays I/O bound.
COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
#: Names of the axes after the trial axis, per modality (also the store's dimension names).
_AXES = {
    "videos": ("time", "height", "width"),
    "responses": ("time", "neuron"),
    "behavior": ("time", "channel"),
    "pupil_center": ("time", "channel"),
}
_PROGRESS_STEPS = 10


def convert_archive(
    archive: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "float32",
    chunk_frames: int = 50,
    verify_trials: int = 8,
    sha256: str | None = None,
    workers: int = 2,
    progress: Callable[[str], object] | None = None,
) -> dict:
    """Validate ``archive`` and write its store to ``out_dir``; return a summary.

    ``sha256`` is the archive's recorded checksum (computed when not given) and is stored
    in the group attributes, so a store always says which download it came from.
    Raises :class:`ArchiveError` for a broken archive and :class:`StoreError` when the
    written store does not read back as the archive; ``out_dir`` is then left untouched.
    """
    _check_options(dtype, chunk_frames, verify_trials, workers)
    archive, out_dir = Path(archive), Path(out_dir)
    say = progress or (lambda message: None)
    store_dtype = np.dtype(dtype)
    start = time.perf_counter()
    remove_stale_temporaries(out_dir)
    with open_archive(archive) as source:
        if source.root != archive.stem:
            raise ArchiveError(
                archive,
                f"root folder {source.root!r} differs from the zip's name {archive.stem!r} "
                "(the folder, the zip stem and the submission's mouse name must be the same)",
            )
        say(
            f"validated {archive.name}: {source.n_trials} trials, {source.n_neurons} neurons, "
            f"T_pad {source.t_pad}, {source.dtype.name}"
        )
        checksum = sha256 or file_sha256(archive)
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            group = zarr.open_group(str(tmp / ZARR_NAME), mode="w", zarr_format=3)
            arrays = _create_arrays(group, source, store_dtype, chunk_frames)
            trials = _convert_trials(source, arrays, store_dtype, workers, say)
            _write_statistics(group, source, store_dtype)
            group.attrs.update(
                {
                    "mouse": source.root,
                    "format": STORE_FORMAT,
                    "t_pad": int(source.t_pad),
                    "n_neurons": int(source.n_neurons),
                    "source_dtype": source.dtype.name,
                    "archive_sha256": checksum,
                    "converter_version": CONVERTER_VERSION,
                }
            )
            trials.to_parquet(tmp / TRIALS_NAME, index=False)
            neurons_table(source).to_parquet(tmp / NEURONS_NAME, index=False)
            verified = verify_store(tmp / ZARR_NAME, source, trials, store_dtype, verify_trials, report_as=out_dir)
        seconds = time.perf_counter() - start
        summary = {
            **source.summary(),
            "store": str(out_dir),
            "dtype": store_dtype.name,
            "chunk_frames": chunk_frames,
            "stimulus_groups": int(trials["stimulus_group"].nunique()),
            "verified_trials": verified,
            "archive_sha256": checksum,
            "seconds": round(seconds, 2),
            "trials_per_s": round(source.n_trials / max(seconds, 1e-9), 1),
        }
    say(f"wrote {out_dir} in {seconds:.1f} s ({summary['trials_per_s']} trials/s), verified {verified} trials")
    return summary


def _check_options(dtype: str, chunk_frames: int, verify_trials: int, workers: int) -> None:
    if dtype not in STORE_DTYPES:
        raise ConfigError(f"conversion.dtype: {dtype!r} is not one of {list(STORE_DTYPES)}")
    checks = (("chunk_frames", chunk_frames, 1), ("verify_trials", verify_trials, 0), ("workers", workers, 1))
    for key, value, minimum in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"conversion.{key}: expected an integer >= {minimum}, got {value!r}")


def file_sha256(path: str | Path, block: int = 8 * 2**20) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _create_arrays(
    group: zarr.Group, source: Archive, dtype: np.dtype, chunk_frames: int
) -> dict[str, zarr.Array]:
    """Per-trial arrays: chunks of one trial × ``chunk_frames`` frames, one shard per trial."""
    rest = {
        "videos": (VIDEO_HEIGHT, VIDEO_WIDTH),
        "responses": (source.n_neurons,),
        "behavior": (2,),
        "pupil_center": (2,),
    }
    frames = min(chunk_frames, source.t_pad)
    shard_frames = -(-source.t_pad // frames) * frames  # a multiple of the chunk, covering T_pad
    arrays = {}
    for modality in MODALITIES:
        arrays[modality] = group.create_array(
            modality,
            shape=(source.n_trials, source.t_pad, *rest[modality]),
            dtype=dtype,
            chunks=(1, frames, *rest[modality]),
            shards=(1, shard_frames, *rest[modality]),
            compressors=COMPRESSOR,
            fill_value=np.nan,
            dimension_names=("trial", *_AXES[modality]),
            config={"write_empty_chunks": True},  # skips a per-chunk scan; padding chunks are tiny
        )
    return arrays


def _time_major(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Archive layout (time last) → store layout (time first), cast to the store dtype."""
    return np.ascontiguousarray(np.moveaxis(array, -1, 0), dtype=dtype)


def _convert_one(
    source: Archive, arrays: dict[str, zarr.Array], row: int, trial_id: int, dtype: np.dtype
) -> tuple[int, int, bytes]:
    """Copy one trial into its store row; return ``(row, valid_frames, video digest)``."""
    trial = source.read_trial(trial_id)
    video = np.ascontiguousarray(trial.arrays["videos"])
    digest = hashlib.sha1(memoryview(video).cast("B"), usedforsecurity=False).digest()
    for modality in MODALITIES:
        arrays[modality][row] = _time_major(trial.arrays[modality], dtype)
    return row, trial.valid_frames, digest


def _convert_trials(
    source: Archive,
    arrays: dict[str, zarr.Array],
    dtype: np.dtype,
    workers: int,
    say: Callable[[str], object],
) -> pd.DataFrame:
    """Convert every trial with ``workers`` threads, a bounded number in flight; the trials table."""
    ids = source.trial_ids
    n = len(ids)
    valid = np.zeros(n, dtype=np.int64)
    digests: list[bytes] = [b""] * n
    step = max(1, -(-n // _PROGRESS_STEPS))
    start = time.perf_counter()
    done = 0
    pending: set[Future] = set()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convert")
    try:
        for row in range(n):
            pending.add(executor.submit(_convert_one, source, arrays, row, int(ids[row]), dtype))
            if len(pending) < 2 * workers:
                continue
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            done += _collect(finished, valid, digests)
            if done // step != (done - len(finished)) // step:
                _report(say, done, n, start)
        done += _collect(wait(pending).done, valid, digests)
        _report(say, done, n, start)
    finally:
        # On an error, let running tasks finish before the temporary folder is removed.
        executor.shutdown(wait=True, cancel_futures=True)
    first_seen: dict[bytes, int] = {}
    groups = np.array([first_seen.setdefault(d, len(first_seen)) for d in digests], dtype=np.int64)
    return pd.DataFrame(
        {
            "row": np.arange(n, dtype=np.int64),
            "trial_id": ids.astype(np.int64),
            "tier": [str(tier) for tier in source.tiers[ids]],
            "valid_frames": valid,
            "stimulus_group": groups,
        }
    )


def _collect(finished: set[Future], valid: np.ndarray, digests: list[bytes]) -> int:
    for future in finished:
        row, frames, digest = future.result()  # re-raises a task's ArchiveError here
        valid[row] = frames
        digests[row] = digest
    return len(finished)


def _report(say: Callable[[str], object], done: int, n: int, start: float) -> None:
    rate = done / max(time.perf_counter() - start, 1e-9)
    say(f"converted {done}/{n} trials ({rate:.1f} trials/s)")


def _write_statistics(group: zarr.Group, source: Archive, dtype: np.dtype) -> None:
    stats = group.require_group("statistics")
    for modality in MODALITIES:
        folder = stats.require_group(modality)
        for stat in STATISTICS:
            data = _time_major(source.statistic(modality, stat), dtype)
            array = folder.create_array(
                stat,
                shape=data.shape,
                dtype=dtype,
                chunks=data.shape,
                compressors=COMPRESSOR,
                fill_value=np.nan,
                dimension_names=_AXES[modality],
            )
            array[...] = data


def neurons_table(source: Archive) -> pd.DataFrame:
    """``unit_id, x, y, z`` in the archive's order (the order of the responses' neuron axis)."""
    coords = source.coordinates
    return pd.DataFrame(
        {"unit_id": source.unit_ids.astype(np.int64), "x": coords[:, 0], "y": coords[:, 1], "z": coords[:, 2]}
    )


def verify_rows(n_trials: int, verify_trials: int) -> list[int]:
    """``verify_trials`` rows spread evenly over the store, first and last included."""
    if verify_trials <= 0 or n_trials == 0:
        return []
    if verify_trials == 1:
        return [0]
    return sorted({int(round(x)) for x in np.linspace(0, n_trials - 1, min(verify_trials, n_trials))})


def verify_store(
    zarr_path: Path,
    source: Archive,
    trials: pd.DataFrame,
    dtype: np.dtype,
    verify_trials: int,
    *,
    report_as: Path,
) -> int:
    """Re-read some trials from the written store and compare them bit for bit with the archive."""
    group = zarr.open_group(str(zarr_path), mode="r")
    rows = verify_rows(len(trials), verify_trials)
    for row in rows:
        trial_id = int(trials["trial_id"].iloc[row])
        for modality in MODALITIES:
            stored = np.asarray(group[modality][row])
            expected = _time_major(source.read(modality, trial_id), dtype)
            if not same_bits(stored, expected):
                raise StoreError(
                    report_as / ZARR_NAME,
                    f"{modality} row {row} (trial {trial_id}) does not read back as "
                    f"{source.path}: the store was not written correctly (disk full or faulty?)",
                )
    return len(rows)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes, dtypes and bits, except that any NaN equals any NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    unsigned = np.dtype(f"u{a.dtype.itemsize}")
    equal = np.ascontiguousarray(a).view(unsigned) == np.ascontiguousarray(b).view(unsigned)
    return bool(np.all(equal | (np.isnan(a) & np.isnan(b))))
