"""The official per-frame normalisation (docs/data-format.md).

The scorer's ground truth is the responses multiplied by a per-frame precision computed
from ``meta/statistics/responses/all/std.npy``; predictions must live in the same units.
Both the training data and the evaluation go through these functions, so they can never
disagree.
"""

from __future__ import annotations

import numpy as np


def response_precision(std: np.ndarray) -> np.ndarray:
    """Per-frame precision ``1/std`` with the official threshold.

    ``std`` has any shape (time-major ``(T, N)`` in the store). Values at or below
    ``0.01 * nanmean(std)`` are replaced by that threshold; NaN (frames no train trial
    reaches) stays NaN, which later cuts the trial there.
    """
    std = np.asarray(std, dtype=np.float64)
    threshold = 0.01 * np.nanmean(std)
    clipped = np.where(std > threshold, std, threshold)
    clipped = np.where(np.isnan(std), np.nan, clipped)
    return (1.0 / clipped).astype(np.float32)


def video_normalizer(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(offset, scale)`` so that ``(x - offset) * scale`` is the official video input."""
    std = np.asarray(std, dtype=np.float64)
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)
    scale = np.where(np.isnan(std), np.nan, scale)
    return np.asarray(mean, dtype=np.float32), scale.astype(np.float32)


def behavior_scale(std: np.ndarray) -> np.ndarray:
    """Behaviour is divided by its std (not centred), as the official loader does."""
    std = np.asarray(std, dtype=np.float64)
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)
    return np.where(np.isnan(std), np.nan, scale).astype(np.float32)


def usable_frames(valid_frames: int, *per_frame_stats: np.ndarray, max_frames: int = 300) -> int:
    """Number of leading frames the official loader keeps for a trial.

    The loader cuts every modality at the first NaN of any modality; statistics are NaN
    beyond the frames that train trials reach, so a long bonus trial is cut there too.
    """
    n = min(int(valid_frames), int(max_frames))
    for stat in per_frame_stats:
        flat = np.asarray(stat).reshape(stat.shape[0], -1)
        bad = np.flatnonzero(~np.all(np.isfinite(flat), axis=1))
        if bad.size:
            n = min(n, int(bad[0]))
    return n
