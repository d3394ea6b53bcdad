"""Archive (zip) → converted store: the one-off conversion every later stage reads from.

The archive is validated from its headers first (:func:`archive.open_archive`), then the
trials are converted by ``workers`` threads, each reading one trial through its own zip
handle, checking it (CRC, NaN only as end padding) and writing that trial's rows: one shard
file per trial and array, encoded here (:mod:`shards`) rather than through zarr's per-chunk
machinery, so no two writers ever touch one file and the cost is close to reading the
archive. Each array is made time-major block by block (``chunk_frames`` frames at a time),
so a block is transposed, summarised and compressed while it is in cache. Memory stays
bounded: only a few trials are in flight, and results are taken in row order.

The same pass computes the training extras: per-neuron statistics over the train trials
(:mod:`neuron_stats`), a perceptual hash of every trial's video (:mod:`phash`) and exact
repeat groups (sha1 of the video bytes), and the sha256 of every row as stored, which
``python -m sensorium_pipeline verify`` checks a store against later (:mod:`integrity`).

Before writing, the free space of the output's file system is compared with what the store
needs (exactly known without compression; projected from the trials written so far with it),
and a full disk ends in a :class:`StoreError` naming the path and the space needed, not in
an ``OSError`` traceback.

Everything is written into a temporary sibling of ``out_dir`` and renamed into place at
the end; ``verify_trials`` trials spread over the store are read back through zarr right
after they are written and compared bit for bit with the arrays read from the archive, so an existing ``out_dir`` is always a complete, verified store (layout:
:mod:`store`); a killed run leaves only a temporary sibling, removed by the next run.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec

from .archive import Archive, open_archive
from .atomic import atomic_path, remove_stale_temporaries
from .errors import ArchiveError, ConfigError, StoreError
from .layout import MODALITIES, STATISTICS, TEST_TIERS, TRAIN, VIDEO_HEIGHT, VIDEO_WIDTH, statistic_member
from .neuron_stats import MEDIAN_SAMPLES, NeuronStatistics, TrialAccumulator, TrialMoments, sample_frames
from .phash import video_phash
from .response_stats import response_statistics
from .shards import ShardWriter
from .store import HASH_COLUMNS, NEURON_STATISTICS_GROUP, NEURONS_NAME, STORE_FORMAT, TRIALS_NAME, ZARR_NAME, open_mouse

STORE_DTYPES: tuple[str, ...] = ("float32", "float64")
#: Bump when a change here (or in ``archive``) changes what a conversion writes; the
#: ``convert`` rule passes it as a param so that existing stores are rebuilt.
#: 2: shards written directly, LZ4 level 1 without shuffle for responses, per-neuron
#: statistics, ``video_phash``. 3: per-row ``sha256_<modality>`` columns; ±inf refused.
CONVERTER_VERSION = 3
#: Codecs of the per-trial arrays, by ``conversion.compression``. ``lz4``: Blosc-LZ4 at level
#: 1, about half the size for responses (mostly exact zeros; better without the byte
#: shuffle), a little less for videos and behaviour (better with it); higher levels cost
#: about as much again for a few percent. ``none``: the bytes as they are, the fastest to
#: write and to read (conversion is then bound by reading the archive and the disk).
COMPRESSIONS: dict[str, dict[str, BloscCodec | None]] = {
    "lz4": {
        "videos": BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),
        "responses": BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle"),
        "behavior": BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),
        "pupil_center": BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),
    },
    "none": dict.fromkeys(MODALITIES),
}
DEFAULT_COMPRESSION = "lz4"
COMPRESSOR = COMPRESSIONS["lz4"]["videos"]  # small arrays (per-frame and per-neuron statistics)
#: Names of the axes after the trial axis, per modality (the store's dimension names).
AXES: dict[str, tuple[str, ...]] = {
    "videos": ("time", "height", "width"),
    "responses": ("time", "neuron"),
    "behavior": ("time", "channel"),
    "pupil_center": ("time", "channel"),
}
#: Seconds between progress lines.
PROGRESS_SECONDS = 5.0
#: Free bytes kept beyond the store's projected size (metadata, tables, other writers).
SPACE_MARGIN = 64 * 2**20


def convert_archive(
    archive: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "float32",
    chunk_frames: int = 50,
    verify_trials: int = 8,
    sha256: str | None = None,
    workers: int = 2,
    compression: str = DEFAULT_COMPRESSION,
    progress: Callable[[str], object] | None = None,
    check_space: bool = True,
) -> dict:
    """Validate ``archive`` and write its store to ``out_dir``; return a summary.

    ``check_space`` refuses to start (or to go on) when the file system cannot hold the
    store; without it only an actual full disk stops the conversion (both raise
    :class:`StoreError` naming the path, the space needed and the space free).

    ``sha256`` is the archive's recorded checksum (computed when not given) and is stored
    in the group attributes, so a store always says which download it came from.
    Raises :class:`ArchiveError` for a broken archive and :class:`StoreError` when the
    written store does not read back as the archive; ``out_dir`` is then left untouched.
    """
    check_options(dtype, chunk_frames, verify_trials, compression, workers)
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
        space = _Space(out_dir, raw_store_bytes(source, store_dtype), compression == "none", check_space)
        space.check_before()
        try:
            with atomic_path(out_dir) as tmp:
                trials, neuron_stats = _write_store(
                    source, tmp, store_dtype, chunk_frames, compression, workers, say, verify_trials, out_dir, space
                )
                _write_tables(source, tmp, store_dtype, trials, neuron_stats, checksum, compression)
        except OSError as exc:
            if not _no_space(exc):
                raise
            raise space.error(exc) from exc
        verified = len(verify_rows(len(trials), verify_trials))
        seconds = time.perf_counter() - start
        summary = {
            **source.summary(),
            "store": str(out_dir),
            "dtype": store_dtype.name,
            "chunk_frames": chunk_frames,
            "compression": compression,
            "stimulus_groups": int(trials["stimulus_group"].nunique()),
            "verified_trials": verified,
            "archive_sha256": checksum,
            "seconds": round(seconds, 2),
            "trials_per_s": round(source.n_trials / max(seconds, 1e-9), 1),
        }
    say(f"wrote {out_dir} in {seconds:.1f} s ({summary['trials_per_s']} trials/s), verified {verified} trials")
    responses = response_statistics(open_mouse(out_dir))  # the scale the models will fit
    say(responses.describe())
    summary["responses"] = responses.to_dict()
    return summary


def _write_store(
    source: Archive,
    tmp: Path,
    store_dtype: np.dtype,
    chunk_frames: int,
    compression: str,
    workers: int,
    say: Callable[[str], object],
    verify_trials: int,
    out_dir: Path,
    space: _Space,
) -> tuple[pd.DataFrame, NeuronStatistics]:
    """Create the arrays in ``tmp`` and convert every trial into them."""
    tmp.mkdir()
    group = zarr.open_group(str(tmp / ZARR_NAME), mode="w", zarr_format=3)
    arrays = _create_arrays(group, source, store_dtype, chunk_frames, COMPRESSIONS[compression])
    writers = {m: ShardWriter(arrays[m], tmp / ZARR_NAME / m) for m in MODALITIES}
    return _convert_trials(
        source, writers, store_dtype, workers, say,
        verify_trials=verify_trials, zarr_path=tmp / ZARR_NAME, report_as=out_dir, space=space,
    )  # fmt: skip


def _write_tables(
    source: Archive,
    tmp: Path,
    store_dtype: np.dtype,
    trials: pd.DataFrame,
    neuron_stats: NeuronStatistics,
    checksum: str,
    compression: str,
) -> None:
    """Statistics, group attributes and the two Parquet tables."""
    group = zarr.open_group(str(tmp / ZARR_NAME), mode="r+")
    _write_statistics(group, source, store_dtype)
    write_neuron_statistics(group, neuron_stats)
    group.attrs.update(
        {
            "mouse": source.root,
            "format": STORE_FORMAT,
            "t_pad": int(source.t_pad),
            "n_neurons": int(source.n_neurons),
            "source_dtype": source.dtype.name,
            "archive_sha256": checksum,
            "converter_version": CONVERTER_VERSION,
            "compression": compression,
        }
    )
    trials.to_parquet(tmp / TRIALS_NAME, index=False)
    neurons_table(source).to_parquet(tmp / NEURONS_NAME, index=False)


def raw_store_bytes(source: Archive, dtype: np.dtype) -> int:
    """Bytes of the per-trial arrays without compression (the store's size with ``none``)."""
    per_frame = VIDEO_HEIGHT * VIDEO_WIDTH + source.n_neurons + 2 + 2
    return source.n_trials * source.t_pad * per_frame * np.dtype(dtype).itemsize


def _no_space(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc)


def _size(n: float) -> str:
    """Bytes for a message: MiB below 1 GiB, else GiB."""
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


@dataclass
class _Space:
    """The store's space needs, checked against the output file system's free space."""

    out_dir: Path
    raw_bytes: int  #: the per-trial arrays uncompressed
    exact: bool  #: no compression: ``raw_bytes`` is what the store takes
    enabled: bool

    def free(self) -> int:
        folder = self.out_dir.parent
        while not folder.exists():
            folder = folder.parent
        return shutil.disk_usage(folder).free

    def _refuse(self, need: float, free: int, how: str) -> StoreError:
        return StoreError(
            self.out_dir, f"not enough free space on the file system of {self.out_dir.parent}: the store "
            f"needs {how}{_size(need)} (and {_size(SPACE_MARGIN)} to spare), {_size(free)} are free "
            "(free some space, or write the store elsewhere)",
        )  # fmt: skip

    def check_before(self) -> None:
        """Before writing: the exact size (no compression) must fit."""
        if self.enabled and self.exact:
            free = self.free()
            if self.raw_bytes + SPACE_MARGIN > free:
                raise self._refuse(self.raw_bytes, free, "")

    def check_progress(self, written: int, done: int, total: int) -> None:
        """While writing (compressed): the rest, projected from the trials written so far, must fit."""
        if self.enabled and not self.exact and 0 < done < total:
            rest = written / done * (total - done)
            free = self.free()
            if rest + SPACE_MARGIN > free:
                raise self._refuse(written + rest, free + written, "about ")

    def error(self, exc: OSError) -> StoreError:
        """A full disk met while writing, as a message naming the path and the space needed."""
        where = getattr(exc, "filename", None) or self.out_dir.parent
        need = "" if self.exact else "at most "
        return StoreError(
            self.out_dir, f"no space left on the device while writing {where}: the store needs {need}"
            f"{_size(self.raw_bytes)} on the file system of {self.out_dir.parent}, "
            f"{_size(self.free())} are free now (the partial store was removed)",
        )  # fmt: skip


def check_options(
    dtype: str, chunk_frames: int, verify_trials: int, compression: str, workers: int = 1
) -> None:
    """Raise :class:`ConfigError` naming the ``conversion.*`` key of a bad option (shared by
    :mod:`deeplake_io`, which writes the same store)."""
    if dtype not in STORE_DTYPES:
        raise ConfigError(f"conversion.dtype: {dtype!r} is not one of {list(STORE_DTYPES)}")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"conversion.compression: {compression!r} is not one of {list(COMPRESSIONS)}")
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
    group: zarr.Group, source: Archive, dtype: np.dtype, chunk_frames: int, codecs: Mapping[str, BloscCodec | None]
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
            compressors=codecs[modality],
            fill_value=np.nan,
            dimension_names=("trial", *AXES[modality]),
            # Shard files side by side (c.<row>.0.0): no folder to create per trial.
            chunk_key_encoding={"name": "default", "separator": "."},
        )
    return arrays


def _time_major(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Archive layout (time last) → store layout (time first), cast to the store dtype."""
    return np.ascontiguousarray(np.moveaxis(array, -1, 0), dtype=dtype)


#: Elements of the non-time axes transposed at once: a block of rows that stays in cache.
_TRANSPOSE_ROWS = 512


def _transpose_block(flat: np.ndarray, start: int, stop: int, dtype: np.dtype) -> np.ndarray:
    """Frames ``start:stop`` of ``flat`` ``(elements, T)`` as a C-contiguous ``(frames, elements)``."""
    out = np.empty((stop - start, flat.shape[0]), dtype=dtype)
    for row in range(0, flat.shape[0], _TRANSPOSE_ROWS):
        out[:, row : row + _TRANSPOSE_ROWS] = flat[row : row + _TRANSPOSE_ROWS, start:stop].T
    return out


@dataclass(frozen=True)
class _Converted:
    """What the trials table and the neuron statistics need from one converted trial."""

    row: int
    valid_frames: int
    digest: bytes
    phash: int
    moments: TrialMoments | None
    hashes: dict[str, str]  #: hex sha256 of each modality's row as stored
    nbytes: int  #: bytes of the shard files written


@dataclass
class _Job:
    """Settings shared by every trial of one conversion (read-only in the workers)."""

    source: Archive
    writers: dict[str, ShardWriter]
    dtype: np.dtype
    n_train: int
    constant_chunks: dict[tuple[str, float], tuple[list[bytes], str]]
    lock: threading.Lock
    verify: frozenset[int]  #: rows read back through zarr and compared with the archive's arrays
    zarr_path: Path
    report_as: Path  #: the final store folder, named in errors
    trial_ids: np.ndarray  #: trial id of each row


def _write_array(
    job: _Job, modality: str, row: int, array: np.ndarray, stats: TrialAccumulator | None, valid: int
) -> tuple[str, int]:
    """Write one trial's array (time last) as its shard, block by block; feed ``stats`` the valid
    frames. Returns the row's sha256 as stored (the blocks in order are its time-major bytes)
    and the bytes written."""
    writer = job.writers[modality]
    frames = array.shape[-1]
    flat = array.reshape(-1, frames)
    narrowed = array.dtype.itemsize > job.dtype.itemsize
    digest = hashlib.sha256()
    chunks = []
    for index in range(writer.chunks_per_shard):
        start = index * writer.frames
        stop = min(start + writer.frames, frames)
        block = _transpose_block(flat, start, max(start, stop), job.dtype)
        if narrowed and start < valid and not np.isfinite(block[: valid - start]).all():
            frame = start + int(np.flatnonzero(~np.isfinite(block[: valid - start]).all(axis=1))[0])
            member = f"{job.source.root}/data/{modality}/{int(job.trial_ids[row])}.npy"
            raise ArchiveError(
                job.source.path, f"member {member}: frame {frame} holds a value beyond the range of "
                f"{job.dtype.name} (convert with conversion.dtype: float64)",
            )  # fmt: skip
        digest.update(memoryview(np.ascontiguousarray(block)).cast("B"))
        if stats is not None and start < valid:
            stats.add(block[: valid - start])
        chunks.append(writer.encode_chunk(block.reshape(len(block), *writer.chunk_shape[2:])))
    return digest.hexdigest(), writer.write(row, chunks)


def _constant_chunks(job: _Job, modality: str, value: float, frames: int) -> tuple[list[bytes], str]:
    """Encoded chunks of an array that is ``value`` throughout (withheld test responses are
    zeros), and the row's sha256 as stored."""
    key = (modality, value)
    with job.lock:
        cached = job.constant_chunks.get(key)
    if cached is None:
        writer = job.writers[modality]
        chunks = []
        digest = hashlib.sha256()
        for index in range(writer.chunks_per_shard):
            start = index * writer.frames
            n = max(0, min(start + writer.frames, frames) - start)
            block = np.full((n, *writer.chunk_shape[2:]), value, dtype=job.dtype)
            digest.update(memoryview(block).cast("B"))
            chunks.append(writer.encode_chunk(block))
        cached = (chunks, digest.hexdigest())
        with job.lock:
            job.constant_chunks[key] = cached
    return cached


def _convert_one(job: _Job, row: int, trial_id: int, tier: str) -> _Converted:
    """Read, check and write one trial; return its facts and (train trials) its response moments."""
    trial = job.source.read_trial(trial_id)
    valid = trial.valid_frames
    video = trial.arrays["videos"]
    digest = hashlib.sha1(memoryview(np.ascontiguousarray(video)).cast("B"), usedforsecurity=False).digest()
    phash = video_phash(video, time_axis=-1, valid_frames=valid)
    stats = None
    if tier == TRAIN:
        sample = sample_frames(valid, job.n_train, MEDIAN_SAMPLES)
        stats = TrialAccumulator(job.source.n_neurons, sample)
    hashes: dict[str, str] = {}
    nbytes = 0
    for modality in MODALITIES:
        array = trial.arrays[modality]
        if modality == "responses" and tier in TEST_TIERS and not array.any() and not np.signbit(array).any():
            # all +0.0 (a -0.0 is zero too, but not the same bits: it goes the general way)
            chunks, hashes[modality] = _constant_chunks(job, modality, 0.0, array.shape[-1])
            nbytes += job.writers[modality].write(row, chunks)
            continue
        hashes[modality], written = _write_array(
            job, modality, row, array, stats if modality == "responses" else None, valid
        )
        nbytes += written
    if row in job.verify:
        _verify_trial(job, row, trial_id, trial.arrays)
    job.source.evict(trial_id)
    moments = stats.moments() if stats is not None else None
    return _Converted(row, valid, digest, phash, moments, hashes, nbytes)


def _verify_trial(job: _Job, row: int, trial_id: int, arrays: dict[str, np.ndarray]) -> None:
    """Read ``row`` back through zarr and compare it bit for bit with the arrays read from the archive.

    This checks the whole chain a reader sees (shard files, index, codecs, zarr's metadata)
    against the CRC-checked archive data still in memory, without reading the zip twice.
    """
    group = zarr.open_group(str(job.zarr_path), mode="r")
    for modality in MODALITIES:
        try:
            stored = np.asarray(group[modality][row])
        except Exception as exc:  # zarr and the codecs raise several types for damaged bytes
            raise StoreError(
                job.report_as / ZARR_NAME, f"{modality} row {row} (trial {trial_id}) cannot be read back: {exc}"
            ) from exc
        if not same_bits(stored, _time_major(arrays[modality], job.dtype)):
            raise StoreError(
                job.report_as / ZARR_NAME,
                f"{modality} row {row} (trial {trial_id}) does not read back as "
                f"{job.source.path}: the store was not written correctly (disk full or faulty?)",
            )


def _convert_trials(
    source: Archive,
    writers: dict[str, ShardWriter],
    dtype: np.dtype,
    workers: int,
    say: Callable[[str], object],
    *,
    verify_trials: int,
    zarr_path: Path,
    report_as: Path,
    space: _Space | None = None,
) -> tuple[pd.DataFrame, NeuronStatistics]:
    """Convert every trial with ``workers`` threads; the trials table and the train neuron statistics.

    Results are taken in row order (a trial finishing early waits in a small window), so the
    statistics are summed in the same order whatever the number of workers.
    """
    ids = source.trial_ids
    tiers = [str(tier) for tier in source.tiers[ids]]
    n = len(ids)
    verify = frozenset(verify_rows(n, verify_trials))
    job = _Job(
        source, writers, dtype, tiers.count(TRAIN), {}, threading.Lock(), verify, zarr_path, report_as, ids
    )  # fmt: skip
    valid = np.zeros(n, dtype=np.int64)
    phashes = np.zeros(n, dtype=np.int64)
    digests: list[bytes] = [b""] * n
    hashes: dict[str, list[str]] = {m: [""] * n for m in MODALITIES}
    written = 0
    checked_early = False
    statistics = NeuronStatistics(source.n_neurons)
    window = 4 * workers
    start = last_report = time.perf_counter()
    finished: dict[int, _Converted] = {}
    taken = 0  # rows [0, taken) are in the tables
    submitted = 0
    pending: set[Future] = set()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convert")
    try:
        while taken < n:
            while submitted < n and submitted < taken + window and len(pending) < 2 * workers:
                pending.add(executor.submit(_convert_one, job, submitted, int(ids[submitted]), tiers[submitted]))
                submitted += 1
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()  # re-raises a task's ArchiveError here
                finished[result.row] = result
            while taken in finished:
                result = finished.pop(taken)
                valid[taken], phashes[taken], digests[taken] = result.valid_frames, result.phash, result.digest
                for modality in MODALITIES:
                    hashes[modality][taken] = result.hashes[modality]
                written += result.nbytes
                if result.moments is not None:
                    statistics.add(result.moments)
                taken += 1
            now = time.perf_counter()
            if now - last_report >= PROGRESS_SECONDS or taken == n:
                _report(say, taken, n, start)
                last_report = now
                if space is not None:
                    space.check_progress(written, taken, n)
            elif space is not None and not checked_early and taken >= min(window, n - 1):
                checked_early = True  # a store far too big for the disk stops after a few trials
                space.check_progress(written, taken, n)
    finally:
        # On an error, let running tasks finish before the temporary folder is removed.
        executor.shutdown(wait=True, cancel_futures=True)
    first_seen: dict[bytes, int] = {}
    groups = np.array([first_seen.setdefault(d, len(first_seen)) for d in digests], dtype=np.int64)
    table = pd.DataFrame(
        {
            "row": np.arange(n, dtype=np.int64),
            "trial_id": ids.astype(np.int64),
            "tier": tiers,
            "valid_frames": valid,
            "stimulus_group": groups,
            "video_phash": phashes,
            **{HASH_COLUMNS[m]: hashes[m] for m in MODALITIES},
        }
    )
    return table, statistics


def _report(say: Callable[[str], object], done: int, n: int, start: float) -> None:
    rate = done / max(time.perf_counter() - start, 1e-9)
    say(f"converted {done}/{n} trials ({rate:.1f} trials/s)")


def _write_statistics(group: zarr.Group, source: Archive, dtype: np.dtype) -> None:
    """The per-frame statistics in the store dtype; NaN (frames no train trial reaches) passes,
    ±inf (in the archive, or a float64 value beyond float32) is an error naming the member."""
    statistics = {}
    for modality in MODALITIES:
        for stat in STATISTICS:
            with np.errstate(over="ignore"):
                values = _time_major(source.statistic(modality, stat), dtype)
            if np.isinf(values).any():
                frame = int(np.flatnonzero(np.isinf(values).reshape(len(values), -1).any(axis=1))[0])
                raise ArchiveError(
                    source.path, f"member {statistic_member(source.root, modality, stat)}: frame {frame} holds "
                    f"an infinite value (or one beyond the range of {dtype.name})",
                )  # fmt: skip
            statistics[modality, stat] = values
    write_frame_statistics(group, statistics, dtype)


def write_frame_statistics(
    group: zarr.Group, statistics: Mapping[tuple[str, str], np.ndarray], dtype: np.dtype
) -> None:
    """The official per-frame statistics keyed by ``(modality, stat)``, time-major, under
    ``statistics/<modality>/<stat>`` (shared with :mod:`store_writer`, so both stores agree)."""
    stats = group.require_group("statistics")
    for modality in MODALITIES:
        folder = stats.require_group(modality)
        for stat in STATISTICS:
            data = np.ascontiguousarray(statistics[modality, stat], dtype=dtype)
            array = folder.create_array(
                stat,
                shape=data.shape,
                dtype=dtype,
                chunks=data.shape,
                compressors=COMPRESSOR,
                fill_value=np.nan,
                dimension_names=AXES[modality],
            )
            array[...] = data


def write_neuron_statistics(group: zarr.Group, statistics: NeuronStatistics) -> None:
    """One ``(N,)`` array per column of :mod:`neuron_stats` under ``neuron_statistics/``."""
    folder = group.require_group(NEURON_STATISTICS_GROUP)
    for name, values in statistics.arrays().items():
        array = folder.create_array(
            name,
            shape=values.shape,
            dtype=values.dtype,
            chunks=values.shape,
            compressors=COMPRESSOR,
            fill_value=0,
            dimension_names=("neuron",),
        )
        array[...] = values
    folder.attrs.update(
        {"tiers": [TRAIN], "train_trials": statistics.n_trials, "median_samples": statistics.median_samples}
    )


def neurons_table(source: Archive) -> pd.DataFrame:
    """``unit_id, x, y, z`` in the archive's order (the order of the responses' neuron axis)."""
    coords = source.coordinates
    native = np.dtype(np.float32) if coords.dtype == np.float16 else coords.dtype.newbyteorder("=")
    coords = coords.astype(native, copy=False)  # Parquet takes neither big-endian nor half floats
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


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes, dtypes and bits, except that any NaN equals any NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    unsigned = np.dtype(f"u{a.dtype.itemsize}")
    equal = np.ascontiguousarray(a).view(unsigned) == np.ascontiguousarray(b).view(unsigned)
    return bool(np.all(equal | (np.isnan(a) & np.isnan(b))))
