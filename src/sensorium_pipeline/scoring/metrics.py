"""The competition's metrics (docs/metrics.md), in plain numpy.

Every function takes per-trial arrays that are time-first ``(T_i, N)`` and already cut by
the :class:`EvaluationWindow`; predictions and targets must be cut by the same window. All
arithmetic is float64. Per-neuron work is done in blocks of neurons, which gives exactly the
same numbers as one big matrix (every metric is per neuron) while keeping memory bounded for
~8000 neurons x ~15000 frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..errors import ConfigError

#: Neurons processed at once (memory only; results do not depend on it).
NEURON_BLOCK = 2048
#: Neurons enter the mean FEVE when their FEV is at least this (2022 competition).
FEV_THRESHOLD = 0.15


@dataclass(frozen=True)
class EvaluationWindow:
    """Frames scored per trial: ``[skip_first : min(n, max_frames) - skip_last]`` of ``n`` usable frames.

    The competition's scorer used frames 50…298 of a 300-frame trial (``skip_last=1``), 249
    frames; ``skip_last=0`` gives the README's 250.
    """

    skip_first: int = 50
    max_frames: int = 300
    skip_last: int = 1

    def __post_init__(self) -> None:
        for name, minimum in (("skip_first", 0), ("max_frames", 1), ("skip_last", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
                raise ConfigError(f"evaluation.{name}: expected an integer >= {minimum}, got {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> EvaluationWindow:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"evaluation.{key}: unknown key; expected some of {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in asdict(self).items()}

    def bounds(self, n_frames: int) -> tuple[int, int]:
        """``(start, stop)`` of the scored frames of a trial with ``n_frames`` usable frames."""
        stop = min(int(n_frames), self.max_frames) - self.skip_last
        return self.skip_first, max(self.skip_first, stop)

    def length(self, n_frames: int) -> int:
        """Number of scored frames of a trial with ``n_frames`` usable frames (300 → 249)."""
        start, stop = self.bounds(n_frames)
        return stop - start

    def cut(self, array: np.ndarray, n_frames: int | None = None) -> np.ndarray:
        """The scored frames of a time-first array whose first ``n_frames`` (default all) are usable."""
        n = len(array) if n_frames is None else int(n_frames)
        if n > len(array):
            raise ValueError(f"array has {len(array)} frames, fewer than the {n} usable frames")
        start, stop = self.bounds(n)
        return array[start:stop]


def corr(y1: np.ndarray, y2: np.ndarray, axis: int = 0, eps: float = 1e-8) -> np.ndarray:
    """The scorer's correlation: z-score with the population std (ddof 0) plus ``eps``, mean
    of the product; NaN (e.g. no frames, NaN inputs) becomes 0. A constant series scores 0."""
    y1 = np.asarray(y1, dtype=np.float64)
    y2 = np.asarray(y2, dtype=np.float64)
    if y1.shape != y2.shape:
        raise ValueError(f"corr: shapes {y1.shape} and {y2.shape} differ")
    if y1.shape[axis] == 0:
        return np.zeros(np.delete(y1.shape, axis), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        z1 = (y1 - y1.mean(axis=axis, keepdims=True)) / (y1.std(axis=axis, keepdims=True, ddof=0) + eps)
        z2 = (y2 - y2.mean(axis=axis, keepdims=True)) / (y2.std(axis=axis, keepdims=True, ddof=0) + eps)
        r = (z1 * z2).mean(axis=axis)
    return np.where(np.isnan(r), 0.0, r)


def _check_pairs(targets: Sequence[np.ndarray], predictions: Sequence[np.ndarray]) -> int:
    """Number of neurons; raises if the trials do not pair up shape for shape."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} target trials but {len(predictions)} prediction trials")
    if not targets:
        raise ValueError("no trials to score")
    n_neurons = np.shape(targets[0])[1]
    for i, (t, p) in enumerate(zip(targets, predictions, strict=True)):
        if np.ndim(t) != 2 or np.shape(t) != np.shape(p) or np.shape(t)[1] != n_neurons:
            raise ValueError(f"trial {i}: target {np.shape(t)} and prediction {np.shape(p)} differ")
    return int(n_neurons)


def _blocks(n_neurons: int) -> list[slice]:
    return [slice(a, min(a + NEURON_BLOCK, n_neurons)) for a in range(0, n_neurons, NEURON_BLOCK)] or [slice(0, 0)]


def _concat(arrays: Sequence[np.ndarray], columns: slice) -> np.ndarray:
    return np.concatenate([np.asarray(a[:, columns], dtype=np.float64) for a in arrays], axis=0)


def single_trial_correlation(targets: Sequence[np.ndarray], predictions: Sequence[np.ndarray]) -> np.ndarray:
    """Per-neuron ``corr`` over all trials' frames concatenated in the given order (the ranking
    metric; callers sort trials by trial id, which the result does not depend on anyway)."""
    n_neurons = _check_pairs(targets, predictions)
    out = np.zeros(n_neurons, dtype=np.float64)
    for cols in _blocks(n_neurons):
        out[cols] = corr(_concat(targets, cols), _concat(predictions, cols), axis=0)
    return out


def _group_by_stimulus(stimulus_ids: Sequence[Any], arrays: Sequence[np.ndarray]) -> dict[Any, list[int]]:
    """Trial indices per stimulus in order of first appearance; repeats must have equal lengths."""
    if len(stimulus_ids) != len(arrays):
        raise ValueError(f"{len(stimulus_ids)} stimulus ids for {len(arrays)} trials")
    groups: dict[Any, list[int]] = {}
    for i, stimulus in enumerate(stimulus_ids):
        groups.setdefault(stimulus, []).append(i)
    for stimulus, members in groups.items():
        lengths = {len(arrays[i]) for i in members}
        if len(lengths) > 1:
            raise ValueError(f"repeats of stimulus {stimulus!r} have different lengths {sorted(lengths)}")
    return groups


def _repeat_mean(arrays: Sequence[np.ndarray], groups: Mapping[Any, list[int]], cols: slice) -> np.ndarray:
    """Frame-by-frame mean over repeats of each stimulus, stimuli concatenated: (ΣT_s, n_cols)."""
    means = [
        np.mean([np.asarray(arrays[i][:, cols], dtype=np.float64) for i in members], axis=0)
        for members in groups.values()
    ]
    return np.concatenate(means, axis=0)


def correlation_to_average(
    targets: Sequence[np.ndarray], predictions: Sequence[np.ndarray], stimulus_ids: Sequence[Any]
) -> np.ndarray:
    """Per-neuron ``corr`` between the repeat-averaged targets and the repeat-averaged predictions,
    stimuli concatenated. Repeats of one stimulus must have the same length."""
    n_neurons = _check_pairs(targets, predictions)
    groups = _group_by_stimulus(stimulus_ids, targets)
    out = np.zeros(n_neurons, dtype=np.float64)
    for cols in _blocks(n_neurons):
        out[cols] = corr(_repeat_mean(targets, groups, cols), _repeat_mean(predictions, groups, cols), axis=0)
    return out


@dataclass(frozen=True)
class ExplainedVariance:
    """Per-neuron FEV and FEVE, and the mean FEVE over neurons with FEV >= ``threshold``."""

    fev: np.ndarray
    feve: np.ndarray
    threshold: float
    n_stimuli: int

    @property
    def selected(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return self.fev >= self.threshold

    @property
    def n_selected(self) -> int:
        return int(np.sum(self.selected))

    @property
    def mean_feve(self) -> float:
        """NaN when no neuron reaches the threshold."""
        return float(np.mean(self.feve[self.selected])) if self.n_selected else float("nan")


def fev_feve(
    targets: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    stimulus_ids: Sequence[Any],
    threshold: float = FEV_THRESHOLD,
) -> ExplainedVariance:
    """Fraction of explainable variance (explained), the 2022 competition's FEVE adapted to video.

    Only stimuli shown at least twice (with at least one scored frame) enter; their trials are
    the sample. With ``y[s, r, t]`` the target of stimulus ``s``, repeat ``r``, frame ``t``:

    - noise variance = mean over stimuli ``s`` (each stimulus weighs the same) of the mean
      over its frames ``t`` of ``var_r(y[s, :, t], ddof=1)``;
    - total variance = ``var(ddof=1)`` over every (trial, frame) sample pooled;
    - MSE = mean over every (trial, frame) sample of ``(y - prediction)**2``;
    - FEV = (total - noise) / total; FEVE = 1 - (MSE - noise) / (total - noise).

    With stimuli of equal lengths (the natural-video tiers) the noise is also the plain mean
    over all (stimulus, frame) pairs, i.e. the 2022 formula with each frame as an "image".
    """
    n_neurons = _check_pairs(targets, predictions)
    groups = _group_by_stimulus(stimulus_ids, targets)
    repeated = [m for m in groups.values() if len(m) >= 2 and len(targets[m[0]]) > 0]
    fev = np.full(n_neurons, np.nan)
    feve = np.full(n_neurons, np.nan)
    if not repeated:
        return ExplainedVariance(fev, feve, float(threshold), 0)
    trials = [i for members in repeated for i in members]
    for cols in _blocks(n_neurons):
        noise = np.mean(
            [
                np.var(np.stack([np.asarray(targets[i][:, cols], dtype=np.float64) for i in m]), axis=0, ddof=1).mean(0)
                for m in repeated
            ],
            axis=0,
        )
        y = _concat([targets[i] for i in trials], cols)
        p = _concat([predictions[i] for i in trials], cols)
        total = np.var(y, axis=0, ddof=1)
        mse = np.mean((y - p) ** 2, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            fev[cols] = (total - noise) / total
            feve[cols] = 1.0 - (mse - noise) / (total - noise)
    return ExplainedVariance(fev, feve, float(threshold), len(repeated))
