"""The one writer of a converted store (layout: :mod:`store`), fed trial by trial by a reader.

This module owns the on-disk format of what is written: the per-trial arrays (shape,
chunks, one shard per trial, the codecs of ``conversion.compression``, the axes' names, the
chunk-key separator), the per-frame and per-neuron statistics, the group attributes, the two
Parquet tables, and the read-back verification. A source only reads: :mod:`convert` feeds it
an archive (:class:`ArchiveTrials`), :mod:`deeplake_io` a Deep Lake dataset; both give trials
in the archive's layout (time last), so every store is written by the same code and no later
stage can tell where it came from.

The trials are written by ``workers`` threads, each reading one trial from the source and
writing that trial's rows: one shard file per trial and array, encoded here
(:mod:`shards`) rather than through zarr's per-chunk machinery, so no two writers ever touch
one file and the cost is close to reading the source. Each array is made time-major block by
block (``chunk_frames`` frames at a time), so a block is transposed, summarised and
compressed while it is in cache. Memory stays bounded: only a few trials are in flight, and
results are taken in row order.

The same pass computes the training extras: per-neuron statistics over the train trials
(:mod:`neuron_stats`), a perceptual hash of every trial's video (:mod:`phash`) and exact
repeat groups (sha1 of the video bytes), and the sha256 of every row as stored, which
``python -m sensorium_pipeline verify`` checks a store against later (:mod:`integrity`).

Before writing, the free space of the output's file system is compared with what the store
needs (exactly known without compression; projected from the trials written so far with it),
and a full disk ends in a :class:`StoreError` naming the path and the space needed, not in
an ``OSError`` traceback.

Everything is written into a temporary sibling of ``out_dir`` and renamed into place at the
end; ``verify_trials`` trials spread over the store are read back through zarr right after
they are written and compared bit for bit with the arrays read from the source, so an
existing ``out_dir`` is always a complete, verified store; a killed run leaves only a
temporary sibling, removed by the next run.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec

from ..atomic import atomic_path, remove_stale_temporaries
from ..errors import ConfigError, SensoriumError, StoreError
from ..layout import MODALITIES, STATISTICS, TEST_TIERS, TRAIN, VIDEO_HEIGHT, VIDEO_WIDTH
from .neuron_stats import MEDIAN_SAMPLES, NeuronStatistics, TrialAccumulator, TrialMoments, sample_frames
from .phash import video_phash
from .shards import ShardWriter
from .store import HASH_COLUMNS, NEURON_STATISTICS_GROUP, NEURONS_NAME, STORE_FORMAT, TRIALS_NAME, ZARR_NAME

logger = logging.getLogger(__name__)

STORE_DTYPES: tuple[str, ...] = ("float32", "float64")
#: Bump when a change here (or in a reader) changes what a conversion writes; the
#: ``convert`` rule passes it as a param so that existing stores are rebuilt.
#: 2: shards written directly, LZ4 level 1 without shuffle for responses, per-neuron
#: statistics, ``video_phash``. 3: per-row ``sha256_<modality>`` columns; ±inf refused.
CONVERTER_VERSION = 3
#: Codecs of the per-trial arrays, by ``conversion.compression``. ``lz4``: Blosc-LZ4 at level
#: 1, about half the size for responses (mostly exact zeros; better without the byte
#: shuffle), a little less for videos and behaviour (better with it); higher levels cost
#: about as much again for a few percent. ``none``: the bytes as they are, the fastest to
#: write and to read (conversion is then bound by reading the source and the disk).
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
#: Shard files side by side (``c.<row>.0.0``): no folder to create per trial.
CHUNK_KEY_ENCODING = {"name": "default", "separator": "."}
#: Seconds between progress lines.
PROGRESS_SECONDS = 5.0
#: Free bytes kept beyond the store's projected size (metadata, tables, other writers).
SPACE_MARGIN = 64 * 2**20


def frame_shape(modality: str, n_neurons: int) -> tuple[int, ...]:
    """Shape of one frame of ``modality`` in the store (the axes after time)."""
    return {
        "videos": (VIDEO_HEIGHT, VIDEO_WIDTH),
        "responses": (n_neurons,),
        "behavior": (2,),
        "pupil_center": (2,),
    }[modality]


class TrialSource(Protocol):
    """What the writer reads from: an archive, a Deep Lake dataset.

    ``read_trial`` may be called from several threads at once. Problems in the source
    raise the source's own :class:`SensoriumError` naming its path.
    """

    path: Path  #: named in errors
    n_trials: int
    t_pad: int
    n_neurons: int
    trial_ids: np.ndarray  #: one per store row, sorted
    row_tiers: Sequence[str]  #: the tier of each row
    mouse: str
    source_dtype: str
    archive_sha256: str
    extra_attributes: Mapping[str, object]  #: group attributes beyond the format's own

    def read_trial(self, trial_id: int) -> tuple[dict[str, np.ndarray], int]:
        """The trial's arrays, time last (archive layout), and its valid frames."""

    def release(self, trial_id: int) -> None:
        """The trial's arrays are written: let their memory go."""

    def frame_statistics(self, dtype: np.dtype) -> Mapping[tuple[str, str], np.ndarray]:
        """The per-frame statistics by ``(modality, stat)``, time-major, in ``dtype``, checked."""

    def neurons(self) -> pd.DataFrame:
        """``unit_id, x, y, z`` in the responses' neuron order."""

    def range_error(self, modality: str, trial_id: int, frame: int, dtype: np.dtype) -> SensoriumError:
        """The error for a value of ``frame`` that does not fit the (narrower) store dtype."""


@dataclass(frozen=True)
class StoreOptions:
    """The ``conversion.*`` settings every store writer takes."""

    dtype: str = "float32"
    chunk_frames: int = 50
    verify_trials: int = 8
    compression: str = DEFAULT_COMPRESSION
    workers: int = 2

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the ``conversion.*`` key of a bad option."""
        if self.dtype not in STORE_DTYPES:
            raise ConfigError(f"conversion.dtype: {self.dtype!r} is not one of {list(STORE_DTYPES)}")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(f"conversion.compression: {self.compression!r} is not one of {list(COMPRESSIONS)}")
        checks = (("chunk_frames", self.chunk_frames, 1), ("verify_trials", self.verify_trials, 0),
                  ("workers", self.workers, 1))  # fmt: skip
        for key, value, minimum in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"conversion.{key}: expected an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Written:
    """What a write produced: the trials table and the number of rows read back."""

    trials: pd.DataFrame
    verified: int


def write_store(
    source: TrialSource, out_dir: str | Path, options: StoreOptions, *, check_space: bool = True
) -> Written:
    """Write the store of ``source`` to ``out_dir`` atomically (options checked by the caller).

    ``check_space`` refuses to start (or to go on) when the file system cannot hold the
    store; without it only an actual full disk stops the write (both raise
    :class:`StoreError` naming the path, the space needed and the space free).
    """
    out_dir = Path(out_dir)
    dtype = np.dtype(options.dtype)
    remove_stale_temporaries(out_dir)
    space = _Space(out_dir, raw_store_bytes(source, dtype), options.compression == "none", check_space)
    space.check_before()
    try:
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            group = zarr.open_group(str(tmp / ZARR_NAME), mode="w", zarr_format=3)
            arrays = create_arrays(group, source, dtype, options.chunk_frames, COMPRESSIONS[options.compression])
            writers = {m: ShardWriter(arrays[m], tmp / ZARR_NAME / m) for m in MODALITIES}
            job = _Job.make(source, writers, dtype, options.verify_trials, tmp / ZARR_NAME, out_dir)
            trials, neuron_stats = _write_trials(job, options.workers, space)
            write_frame_statistics(group, source.frame_statistics(dtype), dtype)
            write_neuron_statistics(group, neuron_stats)
            group.attrs.update(
                {
                    "mouse": source.mouse,
                    "format": STORE_FORMAT,
                    "t_pad": int(source.t_pad),
                    "n_neurons": int(source.n_neurons),
                    "source_dtype": source.source_dtype,
                    "archive_sha256": source.archive_sha256,
                    "converter_version": CONVERTER_VERSION,
                    "compression": options.compression,
                    **source.extra_attributes,
                }
            )
            trials.to_parquet(tmp / TRIALS_NAME, index=False)
            source.neurons().to_parquet(tmp / NEURONS_NAME, index=False)
    except OSError as exc:
        if not _no_space(exc):
            raise
        raise space.error(exc) from exc
    return Written(trials, len(job.verify))


def create_arrays(
    group: zarr.Group, source: TrialSource, dtype: np.dtype, chunk_frames: int, codecs: Mapping[str, BloscCodec | None]
) -> dict[str, zarr.Array]:
    """Per-trial arrays: chunks of one trial × ``chunk_frames`` frames, one shard per trial."""
    frames = min(chunk_frames, source.t_pad)
    shard_frames = -(-source.t_pad // frames) * frames  # a multiple of the chunk, covering T_pad
    arrays = {}
    for modality in MODALITIES:
        rest = frame_shape(modality, source.n_neurons)
        arrays[modality] = group.create_array(
            modality,
            shape=(source.n_trials, source.t_pad, *rest),
            dtype=dtype,
            chunks=(1, frames, *rest),
            shards=(1, shard_frames, *rest),
            compressors=codecs[modality],
            fill_value=np.nan,
            dimension_names=("trial", *AXES[modality]),
            chunk_key_encoding=CHUNK_KEY_ENCODING,
        )
    return arrays


def write_frame_statistics(
    group: zarr.Group, statistics: Mapping[tuple[str, str], np.ndarray], dtype: np.dtype
) -> None:
    """The official per-frame statistics keyed by ``(modality, stat)``, time-major, under
    ``statistics/<modality>/<stat>``."""
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


def raw_store_bytes(source: TrialSource, dtype: np.dtype) -> int:
    """Bytes of the per-trial arrays without compression (the store's size with ``none``)."""
    per_frame = sum(int(np.prod(frame_shape(m, source.n_neurons))) for m in MODALITIES)
    return source.n_trials * source.t_pad * per_frame * np.dtype(dtype).itemsize


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


def time_major(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Source layout (time last) → store layout (time first), cast to the store dtype."""
    return np.ascontiguousarray(np.moveaxis(array, -1, 0), dtype=dtype)


# --- free space -----------------------------------------------------------------------------


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


# --- the trials -----------------------------------------------------------------------------

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
    """What the trials table and the neuron statistics need from one written trial."""

    row: int
    valid_frames: int
    digest: bytes
    phash: int
    moments: TrialMoments | None
    hashes: dict[str, str]  #: hex sha256 of each modality's row as stored
    nbytes: int  #: bytes of the shard files written


@dataclass
class _Job:
    """Settings shared by every trial of one write (read-only in the workers)."""

    source: TrialSource
    writers: dict[str, ShardWriter]
    dtype: np.dtype
    n_train: int
    constant_chunks: dict[tuple[str, float], tuple[list[bytes], str]]
    lock: threading.Lock
    verify: frozenset[int]  #: rows read back through zarr and compared with the source's arrays
    zarr_path: Path
    report_as: Path  #: the final store folder, named in errors

    @classmethod
    def make(
        cls, source: TrialSource, writers: dict[str, ShardWriter], dtype: np.dtype, verify_trials: int,
        zarr_path: Path, report_as: Path,
    ) -> _Job:  # fmt: skip
        verify = frozenset(verify_rows(source.n_trials, verify_trials))
        n_train = list(source.row_tiers).count(TRAIN)
        return cls(source, writers, dtype, n_train, {}, threading.Lock(), verify, zarr_path, report_as)


def _write_array(
    job: _Job, modality: str, trial_id: int, row: int, array: np.ndarray, stats: TrialAccumulator | None, valid: int
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
            raise job.source.range_error(modality, trial_id, frame, job.dtype)
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


def _write_one(job: _Job, row: int, trial_id: int, tier: str) -> _Converted:
    """Read and write one trial; return its facts and (train trials) its response moments."""
    arrays, valid = job.source.read_trial(trial_id)
    video = arrays["videos"]
    digest = hashlib.sha1(memoryview(np.ascontiguousarray(video)).cast("B"), usedforsecurity=False).digest()
    phash = video_phash(video, time_axis=-1, valid_frames=valid)
    stats = None
    if tier == TRAIN:
        sample = sample_frames(valid, job.n_train, MEDIAN_SAMPLES)
        stats = TrialAccumulator(job.source.n_neurons, sample)
    hashes: dict[str, str] = {}
    nbytes = 0
    for modality in MODALITIES:
        array = arrays[modality]
        if modality == "responses" and tier in TEST_TIERS and not array.any() and not np.signbit(array).any():
            # all +0.0 (a -0.0 is zero too, but not the same bits: it goes the general way)
            chunks, hashes[modality] = _constant_chunks(job, modality, 0.0, array.shape[-1])
            nbytes += job.writers[modality].write(row, chunks)
            continue
        hashes[modality], written = _write_array(
            job, modality, trial_id, row, array, stats if modality == "responses" else None, valid
        )
        nbytes += written
    if row in job.verify:
        _verify_trial(job, row, trial_id, arrays)
    job.source.release(trial_id)
    moments = stats.moments() if stats is not None else None
    return _Converted(row, valid, digest, phash, moments, hashes, nbytes)


def _verify_trial(job: _Job, row: int, trial_id: int, arrays: dict[str, np.ndarray]) -> None:
    """Read ``row`` back through zarr and compare it bit for bit with the arrays read from the source.

    This checks the whole chain a reader sees (shard files, index, codecs, zarr's metadata)
    against the source's data still in memory, without reading the source twice.
    """
    group = zarr.open_group(str(job.zarr_path), mode="r")
    for modality in MODALITIES:
        try:
            stored = np.asarray(group[modality][row])
        except Exception as exc:  # zarr and the codecs raise several types for damaged bytes
            raise StoreError(
                job.report_as / ZARR_NAME, f"{modality} row {row} (trial {trial_id}) cannot be read back: {exc}"
            ) from exc
        if not same_bits(stored, time_major(arrays[modality], job.dtype)):
            raise StoreError(
                job.report_as / ZARR_NAME,
                f"{modality} row {row} (trial {trial_id}) does not read back as "
                f"{job.source.path}: the store was not written correctly (disk full or faulty?)",
            )


def _write_trials(job: _Job, workers: int, space: _Space) -> tuple[pd.DataFrame, NeuronStatistics]:
    """Write every trial with ``workers`` threads; the trials table and the train neuron statistics.

    Results are taken in row order (a trial finishing early waits in a small window), so the
    statistics are summed in the same order whatever the number of workers.
    """
    source = job.source
    ids = np.asarray(source.trial_ids)
    tiers = [str(tier) for tier in source.row_tiers]
    n = len(ids)
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
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store-writer")
    try:
        while taken < n:
            while submitted < n and submitted < taken + window and len(pending) < 2 * workers:
                pending.add(executor.submit(_write_one, job, submitted, int(ids[submitted]), tiers[submitted]))
                submitted += 1
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()  # re-raises a task's error here
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
                rate = taken / max(now - start, 1e-9)
                logger.info("converted %d/%d trials (%.1f trials/s)", taken, n, rate)
                last_report = now
                space.check_progress(written, taken, n)
            elif not checked_early and taken >= min(window, n - 1):
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
