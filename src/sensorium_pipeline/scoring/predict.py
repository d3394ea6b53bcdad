"""Predictions of a trained model: overlapping sliding windows that cover every frame of a trial.

The contract of :mod:`sensorium_pipeline.models` fixes what a window's outputs mean: a model
sees every ``frame_step`` (s)-th frame, its output ``i`` depends on the model frames
``i - context .. i + lookahead``, and outputs nearer a window's edge see zero padding instead.
For each phase ``r < s``, windows of ``window_frames`` model frames slide over the frames
``r, r + s, ...`` every ``stride`` model frames, the last one ending at that phase's last
frame, so every frame lies in some window. Each frame is the mean over the windows in which it
sits at a "full" position (its whole reach inside the window, or the window touches the trial's
edge on that side); a frame no window sees at a full position (always the case for short
windows of a non-causal model) takes the plain mean over every window covering it.

For a model whose every output depends on its whole window (DwiseNeuro: its squeeze-and-
excitation averages over time) no position is "full", and the default ``stride`` is 1: every
frame is the mean over every window offset that covers it, as the 1st-place reference
predictor averages.

:func:`predict_windows` serves validation (train.py) and prediction alike. Outputs are in the
official normalised units, NaN after each trial's usable frames: a model trained on raw
responses (``training.targets: raw``, as the reference) predicts raw units, which
:func:`predict_mouse` multiplies by the official per-frame precision.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.normalize import response_precision
from ..data.sources import WindowSource, load_mouse
from ..data.store import open_mouse
from ..devices import resolve_device
from ..errors import ConfigError, PredictionError
from ..layout import SCORED_TIERS
from ..models import load_trained
from .predictions import Predictions

logger = logging.getLogger(__name__)

#: Trials whose sums are held at once (bounds memory to a few trials' worth of float64).
ROWS_PER_CHUNK = 16


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


def default_stride(window_frames: int, context_frames: int, lookahead_frames: int) -> int:
    """Windows every half window, or every frame (all offsets) when no output of a window
    sees its whole reach inside it (the reference's averaging for DwiseNeuro)."""
    if context_frames + lookahead_frames >= window_frames:
        return 1
    return max(1, window_frames // 2)


def trained_on_raw_targets(extra: dict) -> bool:
    """Whether a saved model learnt raw responses (its training config says ``targets: raw``)."""
    return str(extra.get("training", {}).get("targets", "normalized")) == "raw"


def _windows(n_frames: int, step: int, window_frames: int, stride: int) -> list[tuple[int, int, int, bool, bool]]:
    """``(trial start, length, phase frames, at first, at last)`` of every window of one trial."""
    out = []
    for phase in range(min(step, n_frames)):
        frames = (n_frames - 1 - phase) // step + 1
        starts, length = window_starts(frames, window_frames, stride)
        for j in starts:
            out.append((phase + j * step, length, frames, j == 0, j + length == frames))
    return out


@torch.no_grad()
def predict_windows(
    model: torch.nn.Module,
    data: WindowSource,
    rows: Sequence[int] | np.ndarray,
    *,
    window_frames: int,
    stride: int,
    batch_size: int,
    device: torch.device,
    autocast: bool = False,
) -> np.ndarray:
    """``(len(rows), T, N)`` float32 predictions of ``model`` for ``data``'s trials ``rows``
    (``T`` = the longest of them), NaN after each trial's usable frames."""
    model.eval()
    rows = np.asarray(rows, dtype=np.int64)
    step = int(getattr(model, "frame_step", 1))
    context = int(model.context_frames)
    lookahead = int(getattr(model, "lookahead_frames", 0))
    n_neurons = int(model.n_neurons(data.mouse))
    length = int(data.n_frames[rows].max()) if len(rows) else 0
    values = np.full((len(rows), length, n_neurons), np.nan, dtype=np.float32)
    for first in range(0, len(rows), ROWS_PER_CHUNK):
        chunk = rows[first : first + ROWS_PER_CHUNK]
        full_sum = np.zeros((len(chunk), length, n_neurons), dtype=np.float64)
        any_sum = np.zeros_like(full_sum)
        full_count = np.zeros((len(chunk), length), dtype=np.int64)
        any_count = np.zeros_like(full_count)
        by_length: dict[int, list[tuple[int, int, bool, bool]]] = {}
        for i, row in enumerate(chunk):
            for start, size, _, at_first, at_last in _windows(int(data.n_frames[row]), step, window_frames, stride):
                by_length.setdefault(size, []).append((i, start, at_first, at_last))
        for size, items in by_length.items():
            position = np.arange(size)
            for b in range(0, len(items), batch_size):
                part = items[b : b + batch_size]
                index = np.array([p[0] for p in part])
                starts = np.array([p[1] for p in part])
                batch = data.window(chunk[index], starts, size, step).to(device)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast and device.type == "cuda"):
                    out = model(batch.video, batch.behavior, batch.pupil_center, data.mouse)
                out = out.float().cpu().numpy()
                for (i, start, at_first, at_last), window in zip(part, out, strict=True):
                    frames = start + position * step
                    any_sum[i, frames] += window
                    any_count[i, frames] += 1
                    full = ((position >= context) | at_first) & ((position <= size - 1 - lookahead) | at_last)
                    full_sum[i, frames[full]] += window[full]
                    full_count[i, frames[full]] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(
                (full_count > 0)[..., None],
                full_sum / np.maximum(full_count, 1)[..., None],
                any_sum / np.maximum(any_count, 1)[..., None],
            )
        for i, row in enumerate(chunk):
            n = int(data.n_frames[row])
            values[first + i, :n] = mean[i, :n]
    return values


@torch.no_grad()
def predict_mouse(
    model_path: str | Path,
    store_dir: str | Path,
    tiers: Sequence[str] | None = SCORED_TIERS,
    *,
    window_frames: int | None = None,
    stride: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    batch_size: int = 8,
) -> Predictions:
    """Predict every usable frame of the trials of ``tiers`` of one converted mouse, in the
    official normalised units.

    ``window_frames`` defaults to the model's training window (position-dependent models
    must be run on it), ``stride`` to :func:`default_stride`. The model's inputs are read
    as it expects them (``model.inputs``: official or raw); outputs of a model trained on raw
    targets are multiplied by the official per-frame precision."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    tiers = tuple(tiers) if tiers else SCORED_TIERS
    torch_device = resolve_device(device)
    trained = load_trained(model_path, torch_device)
    model = trained.model
    inputs = trained.model_config.inputs
    data = load_mouse(store_dir, tiers, responses=False, inputs=inputs)
    if data.mouse not in trained.model.mice:
        raise PredictionError(store_dir, f"mouse {data.mouse!r} is not one of the model's mice {trained.model.mice}")
    if not np.array_equal(trained.meta(data.mouse).unit_ids, data.unit_ids):
        raise PredictionError(store_dir, f"the unit ids of {data.mouse!r} differ from those the model was trained on")
    if window_frames is None:
        window_frames = int(trained.extra.get("training", {}).get("window_frames", 80))
    if stride is None:
        stride = default_stride(window_frames, model.context_frames, getattr(model, "lookahead_frames", 0))
    precision = None
    if trained_on_raw_targets(trained.extra):
        precision = np.nan_to_num(response_precision(np.asarray(open_mouse(store_dir).statistic("responses", "std"))))
    values = np.full((data.n_trials, data.videos.shape[1], data.n_neurons), np.nan, dtype=np.float32)
    for first in range(0, data.n_trials, 64):
        rows = np.arange(first, min(first + 64, data.n_trials))
        out = predict_windows(
            model, data, rows, window_frames=window_frames, stride=stride, batch_size=batch_size, device=torch_device
        )
        if precision is not None:
            out = out * precision[None, : out.shape[1]]
        values[rows, : out.shape[1]] = out
        logger.info(f"{data.mouse}: predicted {rows[-1] + 1}/{data.n_trials} trials")
    return Predictions(
        mouse=data.mouse,
        trial_ids=data.trial_ids,
        tiers=data.tiers,
        values=values,
        n_frames=data.n_frames,
        unit_ids=data.unit_ids,
    )
