"""Per-neuron response statistics over the train trials, gathered in one streaming pass.

The archive ships per-frame statistics (one value per neuron and frame); training
normalisation and initialisation also want one value per neuron over all train frames (the
response std to scale targets, the mean to initialise a readout bias, the fraction of
frames with a positive response to spot silent units). Conversion already holds each train
trial in memory once, so it gathers these there, never holding more than one trial plus a
fixed-size sample:

* exact ``n_frames``, ``mean``, ``std`` (population, ``ddof=0``), ``min``, ``max`` and
  ``positive_fraction`` (frames with a response above 0) over the valid frames of train
  trials. Sums are taken per block of frames in the data dtype and accumulated in float64;
* ``median`` of a sample of at most about ``MEDIAN_SAMPLES`` frames per neuron, evenly spaced
  within each train trial (exact when the train trials have no more frames than that; on a
  full-size mouse about 7 frames of each of ~340 trials, whose median is within a
  percentile or so of the exact one). An exact median needs every value at once: gigabytes.

Blocks are added in a fixed order by one thread (:class:`NeuronStatistics` is not
thread-safe), so the result does not depend on the number of conversion workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .store import NEURON_STATISTICS_COLUMNS

#: Frames per neuron kept for the median (2,048 x 8,000 neurons x 4 bytes = 64 MiB at most).
MEDIAN_SAMPLES = 2048
#: Columns of :meth:`NeuronStatistics.table`, after ``unit_id`` (the store's order).
COLUMNS: tuple[str, ...] = NEURON_STATISTICS_COLUMNS


def sample_frames(valid_frames: int, n_train: int, budget: int = MEDIAN_SAMPLES) -> np.ndarray:
    """Frames of one train trial kept for the median: ``ceil(budget / n_train)`` evenly spaced
    ones (all frames when the trial has no more)."""
    per_trial = max(1, -(-budget // max(n_train, 1)))
    if valid_frames <= per_trial:
        return np.arange(valid_frames)
    return ((np.arange(per_trial) + 0.5) * valid_frames / per_trial).astype(np.int64)


@dataclass
class TrialMoments:
    """One trial's contribution, computed where the trial is (a conversion worker)."""

    n_frames: int
    sum: np.ndarray  # float64 (N,)
    sum_squares: np.ndarray  # float64 (N,)
    min: np.ndarray
    max: np.ndarray
    positive: np.ndarray  # int64 (N,)
    sample: np.ndarray  # (k, N) frames for the median


class TrialAccumulator:
    """Collects the moments of one trial from time-major blocks ``(frames, N)`` of valid frames."""

    def __init__(self, n_neurons: int, sample: np.ndarray) -> None:
        self._n = n_neurons
        self._frames = 0
        self._sum = np.zeros(n_neurons)
        self._squares = np.zeros(n_neurons)
        self._min = np.full(n_neurons, np.inf)
        self._max = np.full(n_neurons, -np.inf)
        self._positive = np.zeros(n_neurons, dtype=np.int64)
        self._sample_at = np.asarray(sample, dtype=np.int64)
        self._sample: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        """Add the next frames; ``block`` is ``(frames, N)``, C-contiguous, frames in order."""
        if len(block) == 0:
            return
        start = self._frames
        self._frames += len(block)
        self._sum += block.sum(axis=0)
        self._squares += np.einsum("tn,tn->n", block, block)
        np.minimum(self._min, block.min(axis=0), out=self._min)
        np.maximum(self._max, block.max(axis=0), out=self._max)
        self._positive += np.count_nonzero(block > 0, axis=0)
        picked = self._sample_at[(self._sample_at >= start) & (self._sample_at < self._frames)]
        if picked.size:
            self._sample.append(block[picked - start].copy())

    def moments(self) -> TrialMoments:
        sample = np.concatenate(self._sample) if self._sample else np.empty((0, self._n), np.float32)
        return TrialMoments(self._frames, self._sum, self._squares, self._min, self._max, self._positive, sample)


class NeuronStatistics:
    """Combines :class:`TrialMoments` of the train trials, in the order given."""

    def __init__(self, n_neurons: int) -> None:
        self.n_neurons = n_neurons
        self._frames = 0
        self._sum = np.zeros(n_neurons)
        self._squares = np.zeros(n_neurons)
        self._min = np.full(n_neurons, np.inf)
        self._max = np.full(n_neurons, -np.inf)
        self._positive = np.zeros(n_neurons, dtype=np.int64)
        self._samples: list[np.ndarray] = []
        self.n_trials = 0

    def add(self, moments: TrialMoments) -> None:
        if moments.sum.shape != (self.n_neurons,):
            raise ValueError(f"moments of {moments.sum.shape} neurons, expected ({self.n_neurons},)")
        self.n_trials += 1
        self._frames += moments.n_frames
        self._sum += moments.sum
        self._squares += moments.sum_squares
        np.minimum(self._min, moments.min, out=self._min)
        np.maximum(self._max, moments.max, out=self._max)
        self._positive += moments.positive
        if len(moments.sample):
            self._samples.append(moments.sample)

    def arrays(self) -> dict[str, np.ndarray]:
        """``{column: (N,) array}`` in :data:`COLUMNS` order; NaN (count 0) without train frames."""
        n = self._frames
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self._sum / n
            variance = np.maximum(self._squares / n - mean**2, 0.0)
        empty = n == 0
        sample = np.concatenate(self._samples) if self._samples else None
        return {
            "n_frames": np.full(self.n_neurons, n, dtype=np.int64),
            "mean": mean if not empty else np.full(self.n_neurons, np.nan),
            "std": np.sqrt(variance) if not empty else np.full(self.n_neurons, np.nan),
            "median": _median(sample, self.n_neurons),
            "min": self._min.astype(np.float64) if not empty else np.full(self.n_neurons, np.nan),
            "max": self._max.astype(np.float64) if not empty else np.full(self.n_neurons, np.nan),
            "positive_fraction": self._positive / n if not empty else np.full(self.n_neurons, np.nan),
        }

    @property
    def median_samples(self) -> int:
        return int(sum(len(s) for s in self._samples))

    def table(self, unit_ids: np.ndarray) -> pd.DataFrame:
        """One row per neuron: ``unit_id`` and :data:`COLUMNS`."""
        return pd.DataFrame({"unit_id": np.asarray(unit_ids, dtype=np.int64), **self.arrays()})


def _median(sample: np.ndarray | None, n_neurons: int) -> np.ndarray:
    """Per-neuron median of ``sample`` ``(frames, N)``; partitioned along contiguous rows (fast)."""
    if sample is None:
        return np.full(n_neurons, np.nan)
    return np.median(np.ascontiguousarray(sample.T), axis=1).astype(np.float64)
