"""Per-frame statistics over the train trials, computed in bounded memory.

The archive ships mean, std, min, max and median per element and frame over train trials
(NaN where no train trial reaches a frame). The median needs every train value at once:
trials are spooled to a memory-mapped file beside the output and reduced in slabs along
the first axis (rows of pixels, neurons), so memory stays bounded for any number of trials.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..layout import STATISTICS

_SLAB_BYTES = 64 * 2**20


class TrainStatistics:
    """Collect train trials of each modality; ``compute`` returns ``{modality: {stat: array}}``."""

    def __init__(self, folder: str | Path, shapes: dict[str, tuple[int, ...]], n_trials: int, dtype: str) -> None:
        self._folder = Path(folder)
        self._dtype = np.dtype(dtype)
        self._n_trials = n_trials
        self._count = {m: 0 for m in shapes}
        self._spool = {
            m: np.lib.format.open_memmap(
                self._folder / f"{m}.npy", mode="w+", dtype=self._dtype, shape=(max(n_trials, 1), *shape)
            )
            for m, shape in shapes.items()
        }

    def add(self, modality: str, array: np.ndarray) -> None:
        """Add one train trial's array (time-last, NaN-padded, in the archive's dtype)."""
        i = self._count[modality]
        if i >= self._n_trials:
            raise ValueError(f"more than {self._n_trials} train trials given for {modality}")
        self._spool[modality][i] = array
        self._count[modality] = i + 1

    def compute(self) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        for modality, spool in self._spool.items():
            if self._count[modality] != self._n_trials:
                raise ValueError(f"{modality}: {self._count[modality]} of {self._n_trials} train trials given")
            spool.flush()
            out[modality] = _slab_statistics(spool[: self._n_trials], self._dtype)
        return out

    def close(self) -> None:
        """Release the memory maps (their files go with the caller's temporary folder)."""
        for spool in self._spool.values():
            mm = getattr(spool, "_mmap", None)
            if mm is not None:
                mm.close()
        self._spool = {}


def _slab_statistics(data: np.ndarray, dtype: np.dtype) -> dict[str, np.ndarray]:
    """NaN-aware statistics over axis 0, one slab of the next axis at a time."""
    shape = data.shape[1:]
    result = {stat: np.empty(shape, dtype=dtype) for stat in STATISTICS}
    per_row = max(1, data.shape[0] * int(np.prod(shape[1:])) * 8)
    step = max(1, _SLAB_BYTES // per_row)
    with warnings.catch_warnings():  # frames no train trial reaches are NaN by definition
        warnings.simplefilter("ignore", RuntimeWarning)
        for start in range(0, shape[0], step):
            slab = np.asarray(data[:, start : start + step], dtype=np.float64)
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
