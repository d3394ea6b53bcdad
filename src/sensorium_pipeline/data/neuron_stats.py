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
class Moments:
    """Running per-neuron moments over frames: what a trial and the whole train tier both collect."""

    n_frames: int
    sum: np.ndarray  # float64 (N,)
    sum_squares: np.ndarray  # float64 (N,)
    min: np.ndarray
    max: np.ndarray
    positive: np.ndarray  # int64 (N,)

    @staticmethod
    def zeros(n_neurons: int) -> Moments:
        return Moments(
            0,
            np.zeros(n_neurons),
            np.zeros(n_neurons),
            np.full(n_neurons, np.inf),
            np.full(n_neurons, -np.inf),
            np.zeros(n_neurons, dtype=np.int64),
        )

    def absorb(
        self,
        n_frames: int,
        sum: np.ndarray,
        sum_squares: np.ndarray,
        min: np.ndarray,
        max: np.ndarray,
        positive: np.ndarray,
    ) -> None:
        """Add the moments of more frames (in place; the order of additions fixes the bits)."""
        self.n_frames += n_frames
        self.sum += sum
        self.sum_squares += sum_squares
        np.minimum(self.min, min, out=self.min)
        np.maximum(self.max, max, out=self.max)
        self.positive += positive


@dataclass
class TrialMoments(Moments):
    """One trial's contribution, computed where the trial is (a conversion worker)."""

    sample: np.ndarray  # (k, N) frames for the median


class TrialAccumulator:
    """Collects the moments of one trial from time-major blocks ``(frames, N)`` of valid frames."""

    def __init__(self, n_neurons: int, sample: np.ndarray) -> None:
        self._n = n_neurons
        self._moments = Moments.zeros(n_neurons)
        self._sample_at = np.asarray(sample, dtype=np.int64)
        self._sample: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        """Add the next frames; ``block`` is ``(frames, N)``, C-contiguous, frames in order."""
        if len(block) == 0:
            return
        start = self._moments.n_frames
        self._moments.absorb(
            len(block),
            block.sum(axis=0),
            np.einsum("tn,tn->n", block, block),
            block.min(axis=0),
            block.max(axis=0),
            np.count_nonzero(block > 0, axis=0),
        )
        stop = self._moments.n_frames
        picked = self._sample_at[(self._sample_at >= start) & (self._sample_at < stop)]
        if picked.size:
            self._sample.append(block[picked - start].copy())

    def moments(self) -> TrialMoments:
        sample = np.concatenate(self._sample) if self._sample else np.empty((0, self._n), np.float32)
        m = self._moments
        return TrialMoments(m.n_frames, m.sum, m.sum_squares, m.min, m.max, m.positive, sample)


class NeuronStatistics:
    """Combines :class:`TrialMoments` of the train trials, in the order given."""

    def __init__(self, n_neurons: int) -> None:
        self.n_neurons = n_neurons
        self._total = Moments.zeros(n_neurons)
        self._samples: list[np.ndarray] = []
        self.n_trials = 0

    def add(self, moments: TrialMoments) -> None:
        if moments.sum.shape != (self.n_neurons,):
            raise ValueError(f"moments of {moments.sum.shape} neurons, expected ({self.n_neurons},)")
        self.n_trials += 1
        m = moments
        self._total.absorb(m.n_frames, m.sum, m.sum_squares, m.min, m.max, m.positive)
        if len(moments.sample):
            self._samples.append(moments.sample)

    def arrays(self) -> dict[str, np.ndarray]:
        """``{column: (N,) array}`` in :data:`COLUMNS` order; NaN (count 0) without train frames."""
        total = self._total
        n = total.n_frames
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total.sum / n
            variance = np.maximum(total.sum_squares / n - mean**2, 0.0)
        empty = n == 0
        sample = np.concatenate(self._samples) if self._samples else None
        return {
            "n_frames": np.full(self.n_neurons, n, dtype=np.int64),
            "mean": mean if not empty else np.full(self.n_neurons, np.nan),
            "std": np.sqrt(variance) if not empty else np.full(self.n_neurons, np.nan),
            "median": _median(sample, self.n_neurons),
            "min": total.min.astype(np.float64) if not empty else np.full(self.n_neurons, np.nan),
            "max": total.max.astype(np.float64) if not empty else np.full(self.n_neurons, np.nan),
            "positive_fraction": total.positive / n if not empty else np.full(self.n_neurons, np.nan),
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
