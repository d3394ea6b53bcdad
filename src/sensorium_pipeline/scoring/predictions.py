"""Predictions of one model (or ensemble) for one mouse, the currency between stages.

``predict`` writes them, ``ensemble`` averages them, ``evaluate`` scores them and
``submission`` packs them. Stored as a small Zarr v3 group::

    <entry>/<mouse>.zarr/
      trial_id      (n,)        int64, sorted
      values        (n, T, N)   float32, official normalised units (docs/data-format.md), frame 0 is
                                the trial's first frame, NaN after the trial's usable frames
      n_frames      (n,)        int64, usable frames per trial (official cut, ≤ 300)
      unit_ids      (N,)        int64
    attrs: mouse, tiers (list, one per trial), format

All frames from 0 are kept; the evaluation window (``skip_first`` …) is cut only when
scoring or writing a submission, so the same predictions serve every setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from ..atomic import atomic_path
from ..errors import PredictionError

PREDICTIONS_FORMAT = "sensorium-pipeline/predictions/v1"


@dataclass
class Predictions:
    mouse: str
    trial_ids: np.ndarray  # (n,) int64
    tiers: np.ndarray  # (n,) str
    values: np.ndarray  # (n, T, N) float32
    n_frames: np.ndarray  # (n,) int64
    unit_ids: np.ndarray  # (N,) int64

    def __post_init__(self) -> None:
        self.trial_ids = np.asarray(self.trial_ids, dtype=np.int64)
        self.tiers = np.asarray(self.tiers, dtype=str)
        self.values = np.asarray(self.values, dtype=np.float32)
        self.n_frames = np.asarray(self.n_frames, dtype=np.int64)
        self.unit_ids = np.asarray(self.unit_ids, dtype=np.int64)
        n = len(self.trial_ids)
        if self.values.ndim != 3 or self.values.shape[0] != n or self.values.shape[2] != len(self.unit_ids):
            raise ValueError(
                f"predictions of {self.mouse}: values shape {self.values.shape} does not match "
                f"{n} trials x T x {len(self.unit_ids)} neurons"
            )
        if len(self.tiers) != n or len(self.n_frames) != n:
            raise ValueError(f"predictions of {self.mouse}: tiers/n_frames do not have {n} entries")
        order = np.argsort(self.trial_ids, kind="stable")
        if not np.array_equal(order, np.arange(n)):
            self.trial_ids, self.tiers = self.trial_ids[order], self.tiers[order]
            self.values, self.n_frames = self.values[order], self.n_frames[order]

    def select(self, *tiers: str) -> "Predictions":
        """The subset of trials in ``tiers``."""
        mask = np.isin(self.tiers, tiers)
        return Predictions(
            self.mouse, self.trial_ids[mask], self.tiers[mask], self.values[mask], self.n_frames[mask], self.unit_ids
        )


def save_predictions(path: str | Path, preds: Predictions) -> None:
    """Write ``preds`` atomically to ``path`` (a ``.zarr`` folder)."""
    with atomic_path(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        group.attrs.update({"mouse": preds.mouse, "tiers": preds.tiers.tolist(), "format": PREDICTIONS_FORMAT})
        n, t, n_neurons = preds.values.shape
        values = group.create_array(
            "values", shape=preds.values.shape, dtype="float32", chunks=(1, max(t, 1), max(n_neurons, 1))
        )
        values[...] = preds.values
        for name in ("trial_id", "n_frames", "unit_ids"):
            data = {"trial_id": preds.trial_ids, "n_frames": preds.n_frames, "unit_ids": preds.unit_ids}[name]
            arr = group.create_array(name, shape=data.shape, dtype="int64")
            arr[...] = data


def load_predictions(path: str | Path) -> Predictions:
    """Read predictions written by :func:`save_predictions`."""
    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise PredictionError(path, f"cannot open predictions: {exc}") from exc
    if group.attrs.get("format") != PREDICTIONS_FORMAT:
        raise PredictionError(path, f"not a predictions store (format {group.attrs.get('format')!r})")
    return Predictions(
        mouse=str(group.attrs["mouse"]),
        trial_ids=group["trial_id"][...],
        tiers=np.asarray(group.attrs["tiers"], dtype=str),
        values=group["values"][...],
        n_frames=group["n_frames"][...],
        unit_ids=group["unit_ids"][...],
    )
