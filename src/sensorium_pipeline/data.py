"""Training data: converted mice in RAM, in the official normalisation, and windows drawn from them.

Everything a model sees goes through :mod:`normalize` (spec §3), so training targets and the
scorer's ground truth are in the same units:

- videos ``(x - mean) / std`` per pixel and frame; behaviour ``÷ std``; pupil centre z-scored;
- responses ``× response_precision(std)`` per frame;
- every trial cut to ``store.usable_frames()``; frames after that are zero-filled (never read).

Videos are kept as float16 (the normalised values need no more), everything else as float32.
The rest of the package only uses :class:`MouseData`'s small interface (``window``,
``n_frames``, metadata), so a lazily reading Zarr-backed class can replace it later.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import StoreError
from .layout import LABELLED_TIERS, MAX_FRAMES, TIERS
from .normalize import behavior_scale, response_precision, video_normalizer
from .store import MouseStore, open_mouse


@dataclass
class MouseData:
    """Normalised trials of one mouse (rows sorted by trial id), time-first."""

    mouse: str
    path: Path
    trial_ids: np.ndarray  # (n,) int64
    tiers: np.ndarray  # (n,) str
    stimulus_groups: np.ndarray  # (n,)
    n_frames: np.ndarray  # (n,) int64, usable frames
    videos: np.ndarray  # (n, T, H, W) float16
    behavior: np.ndarray  # (n, T, 2) float32
    pupil_center: np.ndarray  # (n, T, 2) float32
    responses: np.ndarray | None  # (n, T, N) float32, None when not loaded
    unit_ids: np.ndarray  # (N,) int64
    coordinates: np.ndarray  # (N, 3) float64, µm

    @property
    def n_trials(self) -> int:
        return len(self.trial_ids)

    @property
    def n_neurons(self) -> int:
        return len(self.unit_ids)

    def rows(self, *tiers: str) -> np.ndarray:
        """Indices (into this object) of the trials in ``tiers``."""
        return np.flatnonzero(np.isin(self.tiers, tiers))

    def window(self, rows: Sequence[int] | np.ndarray, starts: Sequence[int] | np.ndarray, length: int) -> "Batch":
        """Frames ``[start, start + length)`` of each trial in ``rows``, stacked into a batch."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(starts, dtype=np.int64)
        if np.any(starts + length > self.n_frames[rows]) or np.any(starts < 0):
            raise ValueError(f"{self.mouse}: a window of {length} frames runs past a trial's usable frames")
        index = starts[:, None] + np.arange(length)[None]
        take = (rows[:, None], index)
        return Batch(
            mouse=self.mouse,
            video=torch.from_numpy(self.videos[take].astype(np.float32)),
            behavior=torch.from_numpy(self.behavior[take]),
            pupil_center=torch.from_numpy(self.pupil_center[take]),
            responses=None if self.responses is None else torch.from_numpy(self.responses[take]),
        )


@dataclass
class Batch:
    """Model inputs (and targets) of equally long windows of one mouse, time-first."""

    mouse: str
    video: torch.Tensor  # (B, T, H, W)
    behavior: torch.Tensor  # (B, T, 2)
    pupil_center: torch.Tensor  # (B, T, 2)
    responses: torch.Tensor | None  # (B, T, N)

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda x: None if x is None else x.to(device, non_blocking=True)  # noqa: E731
        return Batch(self.mouse, move(self.video), move(self.behavior), move(self.pupil_center), move(self.responses))


def _safe(stat: np.ndarray, limit: int) -> np.ndarray:
    """First ``limit`` frames of a time-major statistic; NaN there would mean a wrong cut."""
    return np.nan_to_num(np.asarray(stat[:limit], dtype=np.float64))


def load_mouse(
    store: str | Path | MouseStore,
    tiers: Sequence[str] = TIERS,
    *,
    responses: bool = True,
    max_frames: int = MAX_FRAMES,
) -> MouseData:
    """Read the trials of ``tiers`` from a converted store into RAM, officially normalised.

    ``responses=False`` skips the responses (test tiers carry none worth reading).
    """
    mouse = store if isinstance(store, MouseStore) else open_mouse(store)
    unknown = set(tiers) - set(TIERS)
    if unknown:
        raise StoreError(mouse.path, f"unknown tier(s) {sorted(unknown)}; expected some of {TIERS}")
    table = mouse.trials
    usable_all = mouse.usable_frames(max_frames)
    keep = table["tier"].isin(list(tiers)).to_numpy() & (usable_all > 0)
    rows = table["row"].to_numpy(dtype=np.int64)[keep]
    usable = usable_all[keep]
    length = int(usable.max()) if len(rows) else 0

    v_offset, v_scale = video_normalizer(
        _safe(mouse.statistic("videos", "mean"), length), _safe(mouse.statistic("videos", "std"), length)
    )
    b_scale = behavior_scale(_safe(mouse.statistic("behavior", "std"), length))
    p_offset, p_scale = video_normalizer(
        _safe(mouse.statistic("pupil_center", "mean"), length),
        _safe(mouse.statistic("pupil_center", "std"), length),
    )
    precision = np.nan_to_num(response_precision(np.asarray(mouse.statistic("responses", "std"))[:length]))

    n, n_neurons = len(rows), mouse.n_neurons
    height, width = v_offset.shape[1:] if length else mouse.array("videos").shape[2:]
    videos = np.zeros((n, length, height, width), dtype=np.float16)
    behavior = np.zeros((n, length, 2), dtype=np.float32)
    pupil = np.zeros((n, length, 2), dtype=np.float32)
    resp = np.zeros((n, length, n_neurons), dtype=np.float32) if responses else None
    arrays = {m: mouse.array(m) for m in ("videos", "behavior", "pupil_center", "responses")}
    for i, (row, t) in enumerate(zip(rows, usable, strict=True)):
        t = int(t)
        videos[i, :t] = (np.asarray(arrays["videos"][row, :t], dtype=np.float32) - v_offset[:t]) * v_scale[:t]
        behavior[i, :t] = np.asarray(arrays["behavior"][row, :t], dtype=np.float32) * b_scale[:t]
        pupil[i, :t] = (np.asarray(arrays["pupil_center"][row, :t], dtype=np.float32) - p_offset[:t]) * p_scale[:t]
        if resp is not None:
            resp[i, :t] = np.asarray(arrays["responses"][row, :t], dtype=np.float32) * precision[:t]
    for name, array in (("videos", videos), ("behavior", behavior), ("pupil_center", pupil), ("responses", resp)):
        if array is not None and not np.all(np.isfinite(array)):
            raise StoreError(mouse.path, f"{name}: non-finite values inside the usable frames after normalisation")
    selected = table[keep]
    return MouseData(
        mouse=mouse.mouse,
        path=mouse.path,
        trial_ids=selected["trial_id"].to_numpy(dtype=np.int64),
        tiers=selected["tier"].to_numpy(dtype=str),
        stimulus_groups=selected["stimulus_group"].to_numpy(),
        n_frames=usable.astype(np.int64),
        videos=videos,
        behavior=behavior,
        pupil_center=pupil,
        responses=resp,
        unit_ids=mouse.unit_ids,
        coordinates=mouse.coordinates,
    )


def load_labelled(store_dirs: Sequence[str | Path], max_frames: int = MAX_FRAMES) -> dict[str, MouseData]:
    """The labelled trials (train + oracle) of every store, keyed by mouse name."""
    out: dict[str, MouseData] = {}
    for path in store_dirs:
        data = load_mouse(path, LABELLED_TIERS, max_frames=max_frames)
        if data.mouse in out:
            raise StoreError(path, f"mouse {data.mouse!r} is given twice (also {out[data.mouse].path})")
        out[data.mouse] = data
    return out


class WindowSampler:
    """Random training windows: a mouse uniformly, then ``batch_size`` (trial, start) pairs of it.

    Every batch comes from one mouse, so one readout serves it. All randomness comes from
    one numpy generator whose state is checkpointed (``state``/``set_state``), so a resumed
    run draws the same windows as an uninterrupted one.
    """

    def __init__(
        self,
        data: Mapping[str, MouseData],
        rows: Mapping[str, np.ndarray],
        window_frames: int,
        batch_size: int,
        seed: int,
    ) -> None:
        self.data = dict(data)
        self.rows = {m: np.asarray(r, dtype=np.int64) for m, r in rows.items() if len(r)}
        if not self.rows:
            raise ValueError("WindowSampler: no training trials")
        self.mice = sorted(self.rows)
        shortest = min(int(self.data[m].n_frames[r].min()) for m, r in self.rows.items())
        if window_frames > shortest:
            raise ValueError(f"window of {window_frames} frames is longer than the shortest training trial ({shortest})")
        self.window_frames = int(window_frames)
        self.batch_size = int(batch_size)
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Batch:
        mouse = self.mice[int(self.rng.integers(len(self.mice)))]
        data, rows = self.data[mouse], self.rows[mouse]
        chosen = rows[self.rng.integers(len(rows), size=self.batch_size)]
        last_start = data.n_frames[chosen] - self.window_frames
        starts = np.floor(self.rng.random(self.batch_size) * (last_start + 1)).astype(np.int64)
        return data.window(chosen, starts, self.window_frames)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def iter_trials(data: MouseData, rows: Sequence[int] | np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, Batch]]:
    """Whole trials in batches of equal length: yields ``(rows, batch)`` in the order of ``rows``
    grouped by length (validation and prediction)."""
    rows = np.asarray(rows, dtype=np.int64)
    for length in np.unique(data.n_frames[rows]):
        same = rows[data.n_frames[rows] == length]
        for i in range(0, len(same), batch_size):
            chunk = same[i : i + batch_size]
            yield chunk, data.window(chunk, np.zeros(len(chunk), dtype=np.int64), int(length))
