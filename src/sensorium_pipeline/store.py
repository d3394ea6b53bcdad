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
    trials.parquet   row, trial_id, tier, valid_frames, stimulus_group, video_phash
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
stores of older converters lack them (reconvert).

The store is written by :mod:`sensorium_pipeline.convert` into a temporary folder and
renamed into place, so an existing ``<mouse_dir>`` is always complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from .errors import StoreError
from .layout import MAX_FRAMES, MODALITIES, STATISTICS, TIERS
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

    def array(self, modality: str) -> zarr.Array:
        if modality not in MODALITIES:
            raise StoreError(self.path, f"unknown modality {modality!r}; expected one of {MODALITIES}")
        return self.group[modality]

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
        """Frames the official loader keeps for each row (spec §3): the valid frames, cut at
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
