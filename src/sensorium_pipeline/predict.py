"""Predictions of a trained model for one mouse: overlapping sliding windows over every trial.

Windows of ``window_frames`` frames start every ``stride`` frames, and the last one ends at
the trial's last usable frame, so every frame is covered. The models are causal: a window's
first ``context_frames`` outputs see zero padding instead of the true past (except in a
window that starts at frame 0, where there is no past). Each frame is therefore the mean
over the windows that saw its full context; only a frame that no such window covers (a
window shorter than the context) takes the mean over all windows covering it.

Outputs are in the official normalised units (as the training targets), NaN after each
trial's usable frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .data import load_mouse
from .errors import ConfigError, PredictionError
from .layout import BONUS_TIERS, MAIN_TIERS, ORACLE
from .models import load_trained
from .predictions import Predictions
from .train import resolve_device

DEFAULT_TIERS: tuple[str, ...] = (ORACLE, *MAIN_TIERS, *BONUS_TIERS)


def window_starts(n_frames: int, window_frames: int, stride: int) -> tuple[list[int], int]:
    """``(starts, length)`` of the windows covering ``n_frames`` frames; the last window ends
    at the last frame; a trial shorter than a window is one window of its own length."""
    if window_frames < 1 or stride < 1:
        raise ConfigError(f"prediction: window_frames ({window_frames}) and stride ({stride}) must be >= 1")
    length = min(int(window_frames), int(n_frames))
    last = int(n_frames) - length
    starts = list(range(0, last + 1, int(stride)))
    if starts[-1] != last:
        starts.append(last)
    return starts, length


@torch.no_grad()
def predict_mouse(
    model_path: str | Path,
    store_dir: str | Path,
    tiers: Sequence[str] | None = DEFAULT_TIERS,
    *,
    window_frames: int = 80,
    stride: int = 40,
    device: str = "auto",
    threads: int | None = None,
    batch_size: int = 8,
) -> Predictions:
    """Predict every usable frame of the trials of ``tiers`` of one converted mouse."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    tiers = tuple(tiers) if tiers else DEFAULT_TIERS
    torch_device = resolve_device(device)
    trained = load_trained(model_path, torch_device)
    model = trained.model
    data = load_mouse(store_dir, tiers, responses=False)
    if data.mouse not in trained.model.mice:
        raise PredictionError(store_dir, f"mouse {data.mouse!r} is not one of the model's mice {trained.model.mice}")
    if not np.array_equal(trained.meta(data.mouse).unit_ids, data.unit_ids):
        raise PredictionError(store_dir, f"the unit ids of {data.mouse!r} differ from those the model was trained on")
    context = int(model.context_frames)

    n, length, n_neurons = data.n_trials, data.videos.shape[1], data.n_neurons
    full_sum = np.zeros((n, length, n_neurons), dtype=np.float64)
    full_count = np.zeros((n, length), dtype=np.int64)
    any_sum = np.zeros_like(full_sum)
    any_count = np.zeros_like(full_count)

    windows: dict[int, list[tuple[int, int]]] = {}  # window length -> (row, start)
    for row in range(n):
        starts, size = window_starts(int(data.n_frames[row]), window_frames, stride)
        windows.setdefault(size, []).extend((row, s) for s in starts)
    for size, items in windows.items():
        seen = np.arange(size)
        for i in range(0, len(items), batch_size):
            rows, starts = np.array(items[i : i + batch_size]).T
            batch = data.window(rows, starts, size).to(torch_device)
            out = model(batch.video, batch.behavior, batch.pupil_center, data.mouse).float().cpu().numpy()
            for row, start, values in zip(rows, starts, out, strict=True):
                frames = slice(start, start + size)
                any_sum[row, frames] += values
                any_count[row, frames] += 1
                full = (seen >= context) | (start == 0)
                full_sum[row, start + seen[full]] += values[full]
                full_count[row, start + seen[full]] += 1

    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(
            (full_count > 0)[..., None],
            full_sum / np.maximum(full_count, 1)[..., None],
            any_sum / np.maximum(any_count, 1)[..., None],
        ).astype(np.float32)
    for row in range(n):
        values[row, data.n_frames[row] :] = np.nan
    return Predictions(
        mouse=data.mouse,
        trial_ids=data.trial_ids,
        tiers=data.tiers,
        values=values,
        n_frames=data.n_frames,
        unit_ids=data.unit_ids,
    )
