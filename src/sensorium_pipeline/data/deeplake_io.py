"""Deep Lake 4 datasets in and out: an import/export path beside the zip archives.

A mouse's dataset is a local Deep Lake 4 folder laid out like the competition's 2023
Deep Lake datasets (docs/data-format.md, Deep Lake), one row per trial:

    videos        (1, T, 36, 64)   float, channel first, then time
    responses     (N, T)           neurons in ``neuron_ids`` order
    behavior      (2, T)           pupil dilation, running speed
    pupil_center  (2, T)           x, y
    id            int64            the trial id (the ``i`` of ``data/*/i.npy``)

and dataset metadata for what the old ``ds.info`` carried (all top-level keys; Deep Lake
keeps top-level lists of ints and strings and top-level bytes exactly):

    neuron_ids              list[int]   the responses' neuron order (= unit ids)
    cell_motor_coordinates  .npy bytes  (N, 3) x, y, z in µm
    statistics              .npz bytes  ``<modality>/<stat>`` arrays in the archive's layout
                                        (time last), e.g. ``videos/mean`` (36, 64, T_pad)
    trial_ids, tiers, valid_frames      lists, one entry per trial
    mouse, t_pad, source_dtype, archive_sha256, format

T may be shorter than the mouse's padded length T_pad (the statistics' length): ingest
pads with NaN. Deep Lake is imported lazily, so the rest of the package works without
it. The 2023 ``hub://`` datasets were written with the retired v3 API and cannot be read
by Deep Lake 4: :func:`dataset_path` says so and what to do instead.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_path, remove_stale_temporaries
from ..errors import SensoriumError
from ..layout import MODALITIES, STATISTICS, TIERS
from .deeplake_url import DeepLakeError, dataset_path
from .store import MouseStore, open_mouse
from .store_writer import DEFAULT_COMPRESSION, StoreOptions, frame_shape, same_bits, verify_rows, write_store

logger = logging.getLogger(__name__)

DATASET_FORMAT = "sensorium-pipeline/deeplake/v1"
ID_COLUMN = "id"
COLUMNS: tuple[str, ...] = (*MODALITIES, ID_COLUMN)
#: Metadata an ingest cannot do without.
REQUIRED_METADATA: tuple[str, ...] = ("neuron_ids", "cell_motor_coordinates", "statistics", "trial_ids", "tiers")
#: Bump when ingest or export change what they write.
DEEPLAKE_IO_VERSION = 2  # 2: written by store_writer, shard keys c.<row>.0.0 as a converted store
_BATCH_TRIALS = 8
#: Dimensions of each column's samples: videos (1, T, 36, 64), the others (C, T).
_DIMENSIONS = {"videos": 4, "responses": 2, "behavior": 2, "pupil_center": 2}


def _deeplake() -> Any:
    try:
        import deeplake
    except ImportError as exc:
        raise SensoriumError(
            "Deep Lake import/export needs the optional dependency: pip install -e '.[deeplake]'"
        ) from exc
    return deeplake


# --- encodings of metadata arrays -----------------------------------------------------


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _to_dataset(modality: str, frames: np.ndarray) -> np.ndarray:
    """Store layout (time first) → dataset layout: videos (1, T, 36, 64), others (C, T).

    Always a fresh array whose dtype is the native one (``float32``): Deep Lake 4.7 writes an
    array whose dtype is spelt ``<f4``, as zarr returns it, value by value, hundreds of times
    slower (``benchmarks/deeplake_speed.py``); numpy keeps that spelling through ``astype``
    and ``np.array(..., dtype=...)``.
    """
    sample = frames[np.newaxis] if modality == "videos" else frames.T
    out = np.empty(sample.shape, dtype=np.dtype(frames.dtype.name))
    out[...] = sample
    return out


def _to_store(modality: str, sample: np.ndarray) -> np.ndarray:
    """Dataset layout → store layout (time first); the inverse of :func:`_to_dataset`."""
    if modality == "videos":
        return sample[0]
    return np.ascontiguousarray(sample.T)


# --- export -----------------------------------------------------------------------------


def export_deeplake(
    store_dir: str | Path,
    dest: str | Path,
    *,
    verify_trials: int = StoreOptions.verify_trials,
) -> dict:
    """Write the converted store ``store_dir`` as a Deep Lake dataset at the local folder ``dest``.

    Written into a temporary sibling and renamed into place after some rows were read back
    and compared bit for bit, so an existing ``dest`` is always complete.
    """
    deeplake = _deeplake()
    dest = dataset_path(dest)
    start = time.perf_counter()
    store = open_mouse(store_dir)
    dtype = store.array("videos").dtype
    remove_stale_temporaries(dest)
    with atomic_path(dest) as tmp:
        ds = deeplake.create(str(tmp))
        for modality in MODALITIES:
            ds.add_column(modality, deeplake.types.Array(dtype.name, dimensions=_DIMENSIONS[modality]))
        ds.add_column(ID_COLUMN, deeplake.types.Int64())
        for key, value in _export_metadata(store).items():
            ds.metadata[key] = value
        rows = store.trials["row"].to_numpy(dtype=np.int64)
        ids = store.trials["trial_id"].to_numpy(dtype=np.int64)
        for first in range(0, len(rows), _BATCH_TRIALS):
            batch = rows[first : first + _BATCH_TRIALS]
            columns: dict[str, list] = {
                m: [_to_dataset(m, np.asarray(store.array(m)[r])) for r in batch] for m in MODALITIES
            }
            columns[ID_COLUMN] = [int(i) for i in ids[batch]]
            ds.append(columns)
            logger.info("exported %d/%d trials", first + len(batch), len(rows))
        ds.commit(f"{store.mouse}: exported from {store.path} by sensorium-pipeline")
        del ds
        verified = _verify_export(deeplake.open_read_only(str(tmp)), store, verify_trials, report_as=dest)
    seconds = time.perf_counter() - start
    logger.info("wrote %s in %.1f s, verified %d trials", dest, seconds, verified)
    return {
        "dataset": str(dest),
        "store": str(store.path),
        "mouse": store.mouse,
        "n_trials": len(rows),
        "verified_trials": verified,
        "seconds": round(seconds, 2),
    }


def _export_metadata(store: MouseStore) -> dict[str, object]:
    statistics = {f"{m}/{s}": np.moveaxis(store.statistic(m, s), 0, -1) for m in MODALITIES for s in STATISTICS}
    coords = store.neurons[["x", "y", "z"]].to_numpy()
    attrs = store.group.attrs
    return {
        "format": DATASET_FORMAT,
        "mouse": store.mouse,
        "t_pad": store.t_pad,
        "source_dtype": str(attrs.get("source_dtype", store.array("videos").dtype.name)),
        "archive_sha256": str(attrs.get("archive_sha256") or ""),
        "neuron_ids": [int(u) for u in store.unit_ids],
        "cell_motor_coordinates": _npy_bytes(coords),
        "statistics": _npz_bytes(statistics),
        "trial_ids": [int(i) for i in store.trials["trial_id"]],
        "tiers": [str(t) for t in store.trials["tier"]],
        "valid_frames": [int(v) for v in store.trials["valid_frames"]],
    }


def _verify_export(ds: Any, store: MouseStore, verify_trials: int, *, report_as: Path) -> int:
    rows = verify_rows(len(store.trials), verify_trials)
    for row in rows:
        for modality in MODALITIES:
            expected = np.asarray(store.array(modality)[row])
            if not same_bits(_to_store(modality, np.asarray(ds[modality][row])), expected):
                raise DeepLakeError(report_as, f"column {modality!r} row {row} does not read back as {store.path}")
    return len(rows)


# --- ingest -----------------------------------------------------------------------------


def ingest_deeplake(
    source: str | Path,
    out_dir: str | Path,
    *,
    mouse: str | None = None,
    dtype: str = StoreOptions.dtype,
    chunk_frames: int = StoreOptions.chunk_frames,
    verify_trials: int = StoreOptions.verify_trials,
    compression: str = DEFAULT_COMPRESSION,
    workers: int = StoreOptions.workers,
) -> dict:
    """Write the store of the Deep Lake dataset ``source`` to ``out_dir``; return a summary.

    The store is written by the writer :func:`convert.convert_archive` uses
    (:func:`store_writer.write_store`), so it is the store of the same trials' archive
    (arrays, tables, statistics, attributes) and every later stage reads it alike.
    ``mouse`` (the config's name) must match the dataset's ``mouse`` metadata when both
    are given. Raises :class:`DeepLakeError` naming the dataset and the column or key at
    fault; ``out_dir`` is then left untouched.
    """
    options = StoreOptions(dtype, chunk_frames, verify_trials, compression, workers)
    options.check()
    path = dataset_path(source)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    reader = _DatasetReader.open(path)
    info = reader.info(mouse)
    logger.info("opened %s: %d trials, %d neurons, T_pad %d", path, info.n_trials, info.n_neurons, info.t_pad)
    written = write_store(_DatasetTrials(reader, info), out_dir, options)
    seconds = time.perf_counter() - start
    logger.info("wrote %s in %.1f s, verified %d trials", out_dir, seconds, written.verified)
    return {
        "dataset": str(path),
        "store": str(out_dir),
        "mouse": info.mouse,
        "n_trials": info.n_trials,
        "n_neurons": info.n_neurons,
        "t_pad": info.t_pad,
        "tiers": written.trials["tier"].value_counts().to_dict(),
        "dtype": np.dtype(dtype).name,
        "verified_trials": written.verified,
        "seconds": round(seconds, 2),
    }


@dataclass(frozen=True)
class _DatasetInfo:
    """What the dataset's metadata and ``id`` column say about the mouse, checked."""

    mouse: str
    n_trials: int
    n_neurons: int
    t_pad: int
    trial_ids: np.ndarray  # sorted
    rows: np.ndarray  # dataset row of each sorted trial id
    tier_of: dict[int, str]
    statistics: dict[tuple[str, str], np.ndarray]  # time-major
    neurons: pd.DataFrame
    source_dtype: str
    archive_sha256: str


class _DatasetReader:
    """Reads one dataset, every problem reported against its path and the column or key."""

    def __init__(self, path: Path, ds: Any) -> None:
        self.path = path
        self.ds = ds

    @classmethod
    def open(cls, path: Path) -> _DatasetReader:
        deeplake = _deeplake()
        if not path.is_dir():
            raise DeepLakeError(path, "no such Deep Lake dataset folder")
        try:
            ds = deeplake.open_read_only(str(path))
        except Exception as exc:  # deeplake raises many types (v3 layout, corrupt log, ...)
            raise DeepLakeError(
                path,
                f"cannot open as a Deep Lake 4 dataset ({type(exc).__name__}: {exc}); "
                "a dataset written by deeplake 3 must be converted with deeplake.convert first",
            ) from exc
        names = {column.name for column in ds.schema.columns}
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise DeepLakeError(path, f"missing column(s) {missing}; expected columns {list(COLUMNS)}")
        return cls(path, ds)

    def _error(self, where: str, problem: str) -> DeepLakeError:
        return DeepLakeError(self.path, f"{where}: {problem}")

    def _meta(self, key: str) -> Any:
        return self.ds.metadata[key] if key in self.ds.metadata.keys() else None  # noqa: SIM118 (not a dict)

    def _array(self, key: str, data: Any) -> np.ndarray:
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            raise self._error(f"metadata {key!r}", f"not .npy/.npz bytes ({exc})") from exc

    def info(self, mouse: str | None) -> _DatasetInfo:
        missing = [k for k in REQUIRED_METADATA if self._meta(k) is None]
        if missing:
            raise self._error("metadata", f"missing key(s) {missing} (the facts the 2023 ds.info carried)")
        fmt = self._meta("format")
        if fmt is not None and fmt != DATASET_FORMAT:
            raise self._error("metadata 'format'", f"{fmt!r} is not {DATASET_FORMAT!r}")
        named = self._meta("mouse")
        if mouse is not None and named is not None and named != mouse:
            raise self._error("metadata 'mouse'", f"{named!r} differs from the configured mouse {mouse!r}")
        name = str(named or mouse or self.path.name)
        unit_ids = np.asarray(self._meta("neuron_ids"), dtype=np.int64)
        n_neurons = len(unit_ids)
        coords = self._array("cell_motor_coordinates", self._meta("cell_motor_coordinates"))
        if coords.shape != (n_neurons, 3):
            raise self._error("metadata 'cell_motor_coordinates'", f"shape {coords.shape}, expected ({n_neurons}, 3)")
        statistics, t_pad = self._statistics(n_neurons)
        if self._meta("t_pad") is not None and int(self._meta("t_pad")) != t_pad:
            raise self._error("metadata 't_pad'", f"{self._meta('t_pad')} differs from the statistics' {t_pad} frames")
        trial_ids, tier_of = self._trials()
        rows = self._rows(trial_ids)
        source_dtype = self._meta("source_dtype") or self._sample("videos", int(rows[0])).dtype.name
        return _DatasetInfo(
            mouse=name,
            n_trials=len(trial_ids),
            n_neurons=n_neurons,
            t_pad=t_pad,
            trial_ids=trial_ids,
            rows=rows,
            tier_of=tier_of,
            statistics=statistics,
            neurons=pd.DataFrame({"unit_id": unit_ids, "x": coords[:, 0], "y": coords[:, 1], "z": coords[:, 2]}),
            source_dtype=str(source_dtype),
            archive_sha256=str(self._meta("archive_sha256") or ""),
        )

    def _statistics(self, n_neurons: int) -> tuple[dict[tuple[str, str], np.ndarray], int]:
        """Time-major statistics and the padded length they share."""
        stats = self._array("statistics", self._meta("statistics"))
        out: dict[tuple[str, str], np.ndarray] = {}
        lengths = set()
        for modality in MODALITIES:
            for stat in STATISTICS:
                key = f"{modality}/{stat}"
                if key not in stats.files:
                    raise self._error("metadata 'statistics'", f"no array {key!r}")
                data = stats[key]
                expected = frame_shape(modality, n_neurons)
                if data.ndim != len(expected) + 1 or data.shape[:-1] != expected:
                    raise self._error(
                        "metadata 'statistics'", f"{key} has shape {data.shape}, expected ({expected}, T)"
                    )
                lengths.add(data.shape[-1])
                out[modality, stat] = np.moveaxis(data, -1, 0)
        if len(lengths) != 1:
            raise self._error("metadata 'statistics'", f"arrays of different lengths {sorted(lengths)}")
        return out, lengths.pop()

    def _trials(self) -> tuple[np.ndarray, dict[int, str]]:
        """Sorted trial ids of the metadata and the tier of each."""
        ids, tiers = self._meta("trial_ids"), self._meta("tiers")
        if len(ids) != len(tiers):
            raise self._error("metadata 'tiers'", f"{len(tiers)} tiers for {len(ids)} trial_ids")
        unknown = sorted({str(t) for t in tiers} - set(TIERS))
        if unknown:
            raise self._error("metadata 'tiers'", f"unknown tier(s) {unknown}; expected some of {list(TIERS)}")
        tier_of = {int(i): str(t) for i, t in zip(ids, tiers, strict=True)}
        if len(tier_of) != len(ids):
            raise self._error("metadata 'trial_ids'", "duplicate trial ids")
        return np.array(sorted(tier_of), dtype=np.int64), tier_of

    def _rows(self, trial_ids: np.ndarray) -> np.ndarray:
        """Dataset row of each trial id (sorted ids → rows)."""
        try:
            column = np.asarray(self.ds[ID_COLUMN][:])
        except Exception as exc:
            raise self._error(f"column {ID_COLUMN!r}", f"unreadable ({exc})") from exc
        if column.ndim != 1 or not np.issubdtype(column.dtype, np.integer):
            raise self._error(
                f"column {ID_COLUMN!r}", f"expected one integer per row, got {column.dtype} {column.shape}"
            )
        column = column.astype(np.int64)
        if len(np.unique(column)) != len(column):
            raise self._error(f"column {ID_COLUMN!r}", "duplicate trial ids")
        if not np.array_equal(np.sort(column), trial_ids):
            extra = sorted(set(column.tolist()) - set(trial_ids.tolist()))[:5]
            absent = sorted(set(trial_ids.tolist()) - set(column.tolist()))[:5]
            raise self._error(
                f"column {ID_COLUMN!r}",
                f"ids differ from metadata 'trial_ids' (e.g. rows without metadata {extra}, metadata without rows {absent})",
            )
        return np.argsort(column, kind="stable")

    def _sample(self, column: str, row: int) -> np.ndarray:
        try:
            return np.asarray(self.ds[column][row])
        except Exception as exc:
            raise self._error(f"column {column!r} row {row}", f"unreadable ({exc})") from exc

    def _store_layout(self, info: _DatasetInfo, modality: str, row: int) -> np.ndarray:
        """One sample, checked, in store layout, NaN-padded to T_pad (dtype of the dataset)."""
        sample = self._sample(modality, row)
        rest = frame_shape(modality, info.n_neurons)
        expected = (1, "T", *rest) if modality == "videos" else (*rest, "T")
        if modality == "videos":
            good = sample.ndim == 4 and sample.shape[0] == 1 and sample.shape[2:] == rest
        else:
            good = sample.ndim == 2 and sample.shape[:1] == rest
        if not good:
            raise self._error(f"column {modality!r} row {row}", f"shape {sample.shape}, expected {expected}")
        if not np.issubdtype(sample.dtype, np.floating):
            raise self._error(f"column {modality!r} row {row}", f"dtype {sample.dtype}, expected a float type")
        frames = _to_store(modality, sample)
        if len(frames) > info.t_pad:
            raise self._error(f"column {modality!r} row {row}", f"{len(frames)} frames, more than T_pad {info.t_pad}")
        if len(frames) < info.t_pad:
            padded = np.full((info.t_pad, *rest), np.nan, dtype=frames.dtype)
            padded[: len(frames)] = frames
            frames = padded
        return frames

    def _valid_frames(self, frames: np.ndarray, modality: str, row: int, trial_id: int) -> int:
        """Frames before the trailing NaN padding; NaN anywhere else is an error (as in an archive)."""
        nan = np.isnan(frames).reshape(len(frames), -1)
        some, every = nan.any(axis=1), nan.all(axis=1)
        where = f"column {modality!r} row {row} (trial {trial_id})"
        partial = np.flatnonzero(some & ~every)
        if partial.size:
            raise self._error(where, f"NaN inside the valid frames (frame {int(partial[0])} is partly NaN)")
        padded = np.flatnonzero(every)
        if padded.size == 0:
            return len(frames)
        first = int(padded[0])
        if padded.size != len(frames) - first:
            raise self._error(where, f"NaN inside the valid frames (frame {first} is NaN, a later one is not)")
        return first

    def recorded_valid_frames(self) -> dict[int, int] | None:
        """The metadata's frame count of each trial id, when it has them."""
        recorded = self._meta("valid_frames")
        if recorded is None:
            return None
        return {int(i): int(v) for i, v in zip(self._meta("trial_ids"), recorded, strict=False)}

    def trial(self, info: _DatasetInfo, row: int, trial_id: int) -> tuple[dict[str, np.ndarray], int]:
        """One trial's arrays (store layout, the dataset's dtype) and its valid frames."""
        arrays = {m: self._store_layout(info, m, row) for m in MODALITIES}
        return arrays, min(self._valid_frames(arrays[m], m, row, trial_id) for m in MODALITIES)


class _DatasetTrials:
    """A checked dataset as the writer's :class:`store_writer.TrialSource` (reads one at a time)."""

    def __init__(self, reader: _DatasetReader, info: _DatasetInfo) -> None:
        self.reader, self.info = reader, info
        self.path = reader.path
        self.n_trials, self.t_pad, self.n_neurons = info.n_trials, info.t_pad, info.n_neurons
        self.trial_ids = info.trial_ids
        self.row_tiers = [info.tier_of[int(i)] for i in info.trial_ids]
        self.mouse = info.mouse
        self.source_dtype = info.source_dtype
        self.archive_sha256 = info.archive_sha256
        self.extra_attributes = {"deeplake_source": str(reader.path), "deeplake_io_version": DEEPLAKE_IO_VERSION}
        self._row_of = dict(zip(info.trial_ids.tolist(), info.rows.tolist(), strict=True))
        self._recorded = reader.recorded_valid_frames()
        self._lock = threading.Lock()

    def read_trial(self, trial_id: int) -> tuple[dict[str, np.ndarray], int]:
        """The trial's arrays time last (the writer's layout); the metadata's frame count, when
        given, must be the one the arrays show."""
        with self._lock:
            arrays, valid = self.reader.trial(self.info, self._row_of[trial_id], trial_id)
        if self._recorded is not None and self._recorded.get(trial_id, valid) != valid:
            raise self.reader._error(
                "metadata 'valid_frames'",
                f"trial {trial_id} records {self._recorded[trial_id]} frames, its arrays hold {valid}",
            )
        return {m: np.moveaxis(a, 0, -1) for m, a in arrays.items()}, valid

    def release(self, trial_id: int) -> None:
        """Nothing is held beyond the arrays given out."""

    def range_error(self, modality: str, trial_id: int, frame: int, dtype: np.dtype) -> DeepLakeError:
        return self.reader._error(
            f"column {modality!r} row {self._row_of[trial_id]} (trial {trial_id})",
            f"frame {frame} holds a value beyond the range of {dtype.name} (ingest with conversion.dtype: float64)",
        )

    def frame_statistics(self, dtype: np.dtype) -> dict[tuple[str, str], np.ndarray]:
        return {key: np.ascontiguousarray(values, dtype=dtype) for key, values in self.info.statistics.items()}

    def neurons(self) -> pd.DataFrame:
        return self.info.neurons
