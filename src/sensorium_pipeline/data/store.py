"""The converted per-mouse store: one folder holding a Zarr v3 group and two Parquet tables.

Layout of ``<mouse_dir>`` (``results/data/<mouse>`` in the workflow)::

    store.zarr/                 Zarr v3 group, attrs below
      videos        (n_trials, T_pad, 36, 64)   time-major, NaN padding as in the archive
      responses     (n_trials, T_pad, N)        raw units, neurons in unit_ids order
      behavior      (n_trials, T_pad, 2)        pupil dilation, running speed
      pupil_center  (n_trials, T_pad, 2)        x, y
      statistics/<modality>/<stat>              per-frame, time-major: (T_pad, 36, 64),
                                                (T_pad, N), (T_pad, 2), (T_pad, 2)
      neuron_statistics/<column>  (N,)          per neuron over the valid frames of train trials:
                                                n_frames, mean, std, median, min, max,
                                                positive_fraction (see ``neuron_stats``)
    trials.parquet   row, trial_id, tier, valid_frames, stimulus_group, video_phash,
                     sha256_videos, sha256_responses, sha256_behavior, sha256_pupil_center
    neurons.parquet  unit_id, x, y, z

Row ``r`` of every per-trial array is the trial ``trials.trial_id[r]``; rows are sorted by
trial id. ``stimulus_group`` is equal for trials that show the same video (repeats), so
folds and correlation-to-average can group them. ``video_phash`` is a 64-bit perceptual
hash of the trial's video (:mod:`phash`; int64 holding the uint64 bit pattern): near-copies
of a clip are a few bits apart, for duplicate-aware folds. Group attrs: ``mouse``, ``format``
(= ``STORE_FORMAT``), ``t_pad``, ``n_neurons``, ``source_dtype``, ``archive_sha256``,
``converter_version``, ``compression`` (``lz4`` or ``none``: the per-trial arrays' codec,
``conversion.compression``; absent from the first version-2 stores, which are ``lz4``).
``neuron_statistics`` and ``video_phash`` were added to format v1 by converter version 2;
stores of older converters lack them (reconvert). The ``sha256_<modality>`` columns (converter
version 3) are the hex sha256 of each row's array as stored (time-major, little-endian, the
padding included; :func:`row_digest`): :mod:`integrity` checks a store against them.

Reading a trial goes through :meth:`MouseStore.array`, which refuses rows whose data is not on
disk: Zarr reads a missing shard back as its fill value (NaN) without a word, and a job
would otherwise train or score on it.

The store is written by :mod:`store_writer` (from an archive or a Deep Lake dataset) into a temporary folder and
renamed into place, so an existing ``<mouse_dir>`` is always complete.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from ..errors import StoreError
from ..layout import MAX_FRAMES, MODALITIES, STATISTICS, TIERS
from .normalize import usable_frames

STORE_FORMAT = "sensorium-pipeline/store/v1"
ZARR_NAME = "store.zarr"
TRIALS_NAME = "trials.parquet"
NEURONS_NAME = "neurons.parquet"
TRIAL_COLUMNS = ("row", "trial_id", "tier", "valid_frames", "stimulus_group")
NEURON_COLUMNS = ("unit_id", "x", "y", "z")
#: Trials-table columns written by converter version 2 and later.
PHASH_COLUMN = "video_phash"
NEURON_STATISTICS_GROUP = "neuron_statistics"
NEURON_STATISTICS_COLUMNS = ("n_frames", "mean", "std", "median", "min", "max", "positive_fraction")
#: Trials-table columns of the per-row hashes (converter version 3 and later), by modality.
HASH_COLUMNS: dict[str, str] = {m: f"sha256_{m}" for m in MODALITIES}
#: What to tell a user whose store is damaged.
REPAIR = "the store is damaged: delete the folder and rerun the convert step (or `snakemake --forcerun convert`)"


def row_digest(array: np.ndarray) -> str:
    """Hex sha256 of one row's array as stored: time-major, C order, little-endian."""
    data = np.ascontiguousarray(array, dtype=np.dtype(array.dtype).newbyteorder("<"))
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()


def storage_keys(array: zarr.Array, row: int) -> list[str]:
    """Keys (relative to the array's folder) of the objects holding ``row``: its shard(s), or
    its chunks for an array without shards."""
    metadata = array.metadata
    grid_shape = tuple(array.shards or array.chunks)
    rest = [range(math.ceil(n / g)) for n, g in zip(array.shape[1:], grid_shape[1:], strict=True)]
    return [metadata.encode_chunk_key((row // grid_shape[0], *index)) for index in itertools.product(*rest)]


def missing_rows(array: zarr.Array, folder: Path) -> list[int]:
    """Rows none of whose storage objects exist under ``folder`` (they would read as fill value)."""
    return [row for row in range(array.shape[0]) if not any((folder / k).exists() for k in storage_keys(array, row))]


@dataclass
class TrialArray:
    """A per-trial array of a store, read like the ``zarr.Array`` it wraps (``array[row, frames]``),
    that refuses rows whose data is missing on disk and names the damage instead of a traceback.

    The folder is listed once, at the first read; other attributes are the Zarr array's.
    """

    array: zarr.Array
    folder: Path
    trial_ids: np.ndarray
    _missing: frozenset[int] | None = field(default=None, repr=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("array", "folder", "trial_ids"):
            raise AttributeError(name)  # not yet set (unpickling): never recurse
        return getattr(self.array, name)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def __len__(self) -> int:
        return self.array.shape[0]

    def _rows(self, key: Any) -> np.ndarray:
        first = key[0] if isinstance(key, tuple) and key else key
        n = self.array.shape[0]
        if first is Ellipsis or (isinstance(key, tuple) and not key):
            return np.arange(n)
        if isinstance(first, slice):
            return np.arange(*first.indices(n))
        rows = np.asarray(first)
        if rows.dtype == bool:
            return np.flatnonzero(rows)
        return np.where(rows < 0, rows + n, rows).ravel().astype(np.int64)

    def check_rows(self, rows: np.ndarray) -> None:
        """Raise :class:`StoreError` if any of ``rows`` has no data on disk."""
        if self._missing is None:
            self._missing = frozenset(missing_rows(self.array, self.folder))
        if not self._missing:
            return
        hit = sorted(set(rows.tolist()) & self._missing)
        if hit:
            row = hit[0]
            trial = int(self.trial_ids[row]) if 0 <= row < len(self.trial_ids) else "?"
            key = storage_keys(self.array, row)[0]
            raise StoreError(
                self.folder, f"row {row} (trial {trial}) has no data: {key} is missing, so it would read as "
                f"NaN ({len(self._missing)} row(s) missing in all); {REPAIR}",
            )  # fmt: skip

    def __getitem__(self, key: Any) -> np.ndarray:
        self.check_rows(self._rows(key))
        try:
            return self.array[key]
        except (IndexError, TypeError):
            raise
        except Exception as exc:  # zarr and the codecs raise several types for damaged bytes
            rows = self._rows(key)
            where = f"row {int(rows[0])}" if len(rows) == 1 else f"{len(rows)} rows"
            raise StoreError(self.folder, f"cannot read {where}: {type(exc).__name__}: {exc}; {REPAIR}") from exc


@dataclass
class MouseStore:
    """Read access to one converted mouse. Arrays are opened lazily (zarr)."""

    path: Path
    group: zarr.Group
    trials: pd.DataFrame
    neurons: pd.DataFrame

    @property
    def mouse(self) -> str:
        return str(self.group.attrs["mouse"])

    @property
    def t_pad(self) -> int:
        return int(self.group.attrs["t_pad"])

    @property
    def n_neurons(self) -> int:
        return int(self.group.attrs["n_neurons"])

    @property
    def unit_ids(self) -> np.ndarray:
        return self.neurons["unit_id"].to_numpy(dtype=np.int64)

    @property
    def coordinates(self) -> np.ndarray:
        """(N, 3) cortical coordinates in µm."""
        return self.neurons[["x", "y", "z"]].to_numpy(dtype=np.float64)

    def array(self, modality: str) -> TrialArray:
        """The per-trial array of ``modality`` (``(n_trials, T_pad, ...)``), read like a
        ``zarr.Array``; a row whose data is missing on disk raises :class:`StoreError`."""
        if modality not in MODALITIES:
            raise StoreError(self.path, f"unknown modality {modality!r}; expected one of {MODALITIES}")
        return TrialArray(
            self.group[modality], self.path / ZARR_NAME / modality, self.trials["trial_id"].to_numpy(dtype=np.int64)
        )

    def has_hashes(self) -> bool:
        """Whether the trials table records per-row hashes (converter version 3 and later)."""
        return all(column in self.trials.columns for column in HASH_COLUMNS.values())

    @cached_property
    def _statistics(self) -> dict[tuple[str, str], np.ndarray]:
        return {}

    def statistic(self, modality: str, stat: str) -> np.ndarray:
        """Per-frame statistic over train trials, time-major, cached in memory."""
        if stat not in STATISTICS:
            raise StoreError(self.path, f"unknown statistic {stat!r}; expected one of {STATISTICS}")
        key = (modality, stat)
        if key not in self._statistics:
            self._statistics[key] = np.asarray(self.group[f"statistics/{modality}/{stat}"][...])
        return self._statistics[key]

    def usable_frames(self, max_frames: int = MAX_FRAMES) -> np.ndarray:
        """Frames the official loader keeps for each row (docs/data-format.md): the valid frames, cut at
        the first frame where any modality's per-frame statistics are NaN, at most ``max_frames``."""
        stats = [self.statistic(m, s) for m in MODALITIES for s in ("mean", "std")]
        limit = usable_frames(self.t_pad, *stats, max_frames=max_frames)
        return np.minimum(self.trials["valid_frames"].to_numpy(dtype=np.int64), limit)

    def video_phash(self) -> np.ndarray:
        """``(n_trials,)`` int64 perceptual hashes of the videos, in row order (see :mod:`phash`)."""
        if PHASH_COLUMN not in self.trials.columns:
            raise StoreError(self.path / TRIALS_NAME, f"no {PHASH_COLUMN} column (written by an older converter; reconvert)")
        return self.trials[PHASH_COLUMN].to_numpy(dtype=np.int64)

    def neuron_statistics(self) -> pd.DataFrame:
        """One row per neuron (store order): ``unit_id`` and statistics of its responses over the
        valid frames of the train trials (``n_frames, mean, std, median, min, max, positive_fraction``)."""
        try:
            folder = self.group[NEURON_STATISTICS_GROUP]
        except KeyError:
            raise StoreError(
                self.path / ZARR_NAME, f"no {NEURON_STATISTICS_GROUP} group (written by an older converter; reconvert)"
            ) from None
        columns = {name: np.asarray(folder[name][...]) for name in NEURON_STATISTICS_COLUMNS}
        return pd.DataFrame({"unit_id": self.unit_ids, **columns})

    def rows(self, *tiers: str) -> np.ndarray:
        """Store rows of the trials in ``tiers`` (sorted by trial id)."""
        unknown = set(tiers) - set(TIERS)
        if unknown:
            raise StoreError(self.path, f"unknown tier(s) {sorted(unknown)}; expected some of {TIERS}")
        mask = self.trials["tier"].isin(tiers).to_numpy()
        return self.trials["row"].to_numpy(dtype=np.int64)[mask]


def open_mouse(path: str | Path) -> MouseStore:
    """Open a converted mouse folder, checking that it is complete and of a known format."""
    path = Path(path)
    for name in (ZARR_NAME, TRIALS_NAME, NEURONS_NAME):
        if not (path / name).exists():
            raise StoreError(path, f"incomplete store: {name} is missing (rerun the convert step)")
    try:
        group = zarr.open_group(str(path / ZARR_NAME), mode="r")
    except Exception as exc:  # zarr raises several types for a broken store
        raise StoreError(path / ZARR_NAME, f"cannot open Zarr group: {exc}") from exc
    fmt = group.attrs.get("format")
    if fmt != STORE_FORMAT:
        raise StoreError(path / ZARR_NAME, f"store format {fmt!r} is not {STORE_FORMAT!r}; reconvert")
    trials = pd.read_parquet(path / TRIALS_NAME)
    neurons = pd.read_parquet(path / NEURONS_NAME)
    for table, columns, name in ((trials, TRIAL_COLUMNS, TRIALS_NAME), (neurons, NEURON_COLUMNS, NEURONS_NAME)):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise StoreError(path / name, f"missing columns {missing}")
    return MouseStore(path=path, group=group, trials=trials, neurons=neurons)
