"""Per-frame statistics over the train trials, computed in bounded memory.

The archive ships mean, std, min, max and median per element and frame over train trials
(NaN where no train trial reaches a frame). The median needs every train value at once:
trials are spooled to a plain file beside the output (a :class:`~.spool.RecordFile`, not a
memory map, so the spool never counts in the process's resident memory) and reduced in
slabs of elements (pixels, neurons), every frame of every train trial of an element in the
same slab. A slab holds at least one element's train values (a few hundred kilobytes at full
size), so memory stays bounded whatever the number of trials.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..layout import STATISTICS
from .spool import RecordFile

_SLAB_BYTES = 64 * 2**20


class TrainStatistics:
    """Collect train trials of each modality; ``compute`` returns ``{modality: {stat: array}}``."""

    def __init__(self, folder: str | Path, shapes: dict[str, tuple[int, ...]], n_trials: int, dtype: str) -> None:
        self._folder = Path(folder)
        self._dtype = np.dtype(dtype)
        self._n_trials = n_trials
        self._count = {m: 0 for m in shapes}
        self._shapes = {m: tuple(shape) for m, shape in shapes.items()}
        self._spool: dict[str, RecordFile] = {}
        try:
            for m, shape in self._shapes.items():  # records as (elements, frames): slabs of any elements
                flat = (int(np.prod(shape[:-1], dtype=np.int64)), shape[-1])
                self._spool[m] = RecordFile(self._folder / f"train-{m}.spool", flat, self._dtype)
        except BaseException:
            self.close()
            raise

    def add(self, modality: str, array: np.ndarray) -> None:
        """Add one train trial's array (time-last, NaN-padded, in the archive's dtype)."""
        i = self._count[modality]
        if i >= self._n_trials:
            raise ValueError(f"more than {self._n_trials} train trials given for {modality}")
        if np.shape(array) != self._shapes[modality]:
            raise ValueError(f"{modality}: expected shape {self._shapes[modality]}, got {np.shape(array)}")
        self._spool[modality].write(i, np.reshape(array, self._spool[modality].shape))
        self._count[modality] = i + 1

    def compute(self, stop: Callable[[], bool] = lambda: False) -> dict[str, dict[str, np.ndarray]]:
        """The statistics; ``stop`` is asked between slabs (a true answer raises :class:`Cancelled`)."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for modality, spool in self._spool.items():
            if self._count[modality] != self._n_trials:
                raise ValueError(f"{modality}: {self._count[modality]} of {self._n_trials} train trials given")
            stats = _slab_statistics(spool, self._n_trials, self._dtype, stop)
            out[modality] = {stat: value.reshape(self._shapes[modality]) for stat, value in stats.items()}
        return out

    def close(self) -> None:
        """Delete the spool files (at once: a full-size mouse spools gigabytes)."""
        for spool in self._spool.values():
            spool.close()
        self._spool = {}


class Cancelled(Exception):
    """The statistics were abandoned (the simulation failed elsewhere)."""


def _slab_statistics(
    spool: RecordFile, n_trials: int, dtype: np.dtype, stop: Callable[[], bool] = lambda: False
) -> dict[str, np.ndarray]:
    """NaN-aware statistics over the trials of (elements, frames) records, one slab of elements at a time."""
    shape = spool.shape
    result = {stat: np.empty(shape, dtype=dtype) for stat in STATISTICS}
    per_row = max(1, n_trials * int(np.prod(shape[1:])) * 8)
    step = max(1, _SLAB_BYTES // per_row)
    with warnings.catch_warnings():  # frames no train trial reaches are NaN by definition
        warnings.simplefilter("ignore", RuntimeWarning)
        for start in range(0, shape[0], step):
            if stop():
                raise Cancelled("train statistics")
            slab = np.asarray(spool.read_rows(start, start + step, n_trials), dtype=np.float64)
            result["mean"][start : start + step] = np.nanmean(slab, axis=0)
            result["std"][start : start + step] = np.nanstd(slab, axis=0)
            result["min"][start : start + step] = np.nanmin(slab, axis=0)
            result["max"][start : start + step] = np.nanmax(slab, axis=0)
            result["median"][start : start + step] = _nanmedian(slab)
    return result


def _nanmedian(slab: np.ndarray) -> np.ndarray:
    """``np.nanmedian`` over axis 0, fast when NaN only pads whole frames (the archive layout).

    Trials are NaN from their valid length on, so along time the set of contributing trials
    changes only at distinct lengths: the plain median is taken per such block of frames.
    """
    finite = np.isfinite(slab)
    per_frame = finite.reshape(slab.shape[0], -1, slab.shape[-1])
    valid = per_frame.all(axis=1)  # (n_trials, T): trial has this whole frame
    if not np.array_equal(valid, per_frame.any(axis=1)):  # NaN inside a frame: general path
        return np.nanmedian(slab, axis=0)
    out = np.full(slab.shape[1:], np.nan)
    t = 0
    n_frames = slab.shape[-1]
    while t < n_frames:
        members = valid[:, t]
        stop = t + 1
        while stop < n_frames and np.array_equal(valid[:, stop], members):
            stop += 1
        if members.any():
            out[..., t:stop] = np.median(slab[members][..., t:stop], axis=0)
        t = stop
    return out
