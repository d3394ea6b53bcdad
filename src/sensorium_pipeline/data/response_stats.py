"""The scale of a mouse's responses, in a few numbers a user can read at a glance.

Models fit raw deconvolved calcium (or that times the official precision): whether a
neuron's mean is 0.3 or 3, its std 0.6 or 10 and its largest frame 30 or 3,000 decides how
a loss and a learning rate behave. Conversion logs these numbers and the report shows them
beside the noise ceiling (known for simulated mice):

* quantiles over neurons of each neuron's mean, std and maximum over the train frames
  (exact: from the store's per-neuron statistics);
* the largest single value and the fraction of train values below zero (the real archives
  hold tiny negatives, deconvolution residue), counted over the train trials; on a mouse
  with more than ``MAX_VALUES`` train values, over evenly spaced train trials (it says so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..layout import TRAIN
from .store import MouseStore

#: Quantiles over neurons reported for each per-neuron statistic.
QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
#: Train values read for the fraction of negative frames (about 200 MB of float32).
MAX_VALUES = 50_000_000


@dataclass(frozen=True)
class ResponseStatistics:
    """One mouse's response scale (see the module docstring); ``ceiling`` only where known."""

    mouse: str
    n_neurons: int
    n_frames: int  # train frames per neuron
    mean: tuple[float, ...]  # quantiles QUANTILES over neurons of the per-neuron mean
    std: tuple[float, ...]
    max: tuple[float, ...]
    largest: float
    negative_fraction: float
    negative_trials: int  # train trials counted for negative_fraction
    train_trials: int
    ceiling: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("mean", "std", "max"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResponseStatistics:
        values = dict(data)
        for key in ("mean", "std", "max"):
            values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    def with_ceiling(self, ceiling: float | None) -> ResponseStatistics:
        return dataclasses.replace(self, ceiling=ceiling)

    def describe(self) -> str:
        """One log line: ``mean 1.2/2.0/3.1 (q10/median/q90 over neurons)``, ..."""
        names = "/".join("median" if q == 0.5 else f"q{round(q * 100)}" for q in QUANTILES)

        def three(values: tuple[float, ...]) -> str:
            return "/".join(f"{v:.3g}" for v in values)

        sampled = "" if self.negative_trials == self.train_trials else f" in {self.negative_trials} sampled trials"
        ceiling = "" if self.ceiling is None else f"; noise ceiling {self.ceiling:.3f}"
        return (
            f"responses of {self.mouse} ({self.n_neurons} neurons, {self.n_frames} train frames each), per neuron "
            f"{names} over neurons: mean {three(self.mean)}, std {three(self.std)}, max {three(self.max)}; "
            f"largest {self.largest:.4g}; {self.negative_fraction:.2%} of values below 0{sampled}{ceiling}"
        )


def response_statistics(store: MouseStore, max_values: int = MAX_VALUES) -> ResponseStatistics:
    """The response scale of a converted mouse over its train trials."""
    neurons = store.neuron_statistics()
    rows = store.rows(TRAIN)
    frames = store.trials.set_index("row").loc[rows, "valid_frames"].to_numpy(dtype=np.int64)
    counted = _evenly_spaced(len(rows), max(1, max_values // max(store.n_neurons * store.t_pad, 1)))
    responses = store.array("responses")
    negative = total = 0
    for i in counted:
        values = np.asarray(responses[int(rows[i]), : int(frames[i])])
        negative += int(np.count_nonzero(values < 0))
        total += values.size
    quantiles = list(QUANTILES)
    return ResponseStatistics(
        mouse=store.mouse,
        n_neurons=store.n_neurons,
        n_frames=int(neurons["n_frames"].max()) if len(neurons) else 0,
        mean=tuple(float(v) for v in np.quantile(neurons["mean"], quantiles)),
        std=tuple(float(v) for v in np.quantile(neurons["std"], quantiles)),
        max=tuple(float(v) for v in np.quantile(neurons["max"], quantiles)),
        largest=float(neurons["max"].max()),
        negative_fraction=negative / max(total, 1),
        negative_trials=len(counted),
        train_trials=len(rows),
    )


def _evenly_spaced(n: int, limit: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return ((np.arange(limit) + 0.5) * n / limit).astype(np.int64)
