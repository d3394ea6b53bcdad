"""Random training windows over all mice, and the ``DataLoader`` that cuts them.

:class:`WindowSampler` draws random windows over all mice (uniform or weighted choice of the
mouse, then ``batch_size`` (trial, start) pairs of it, optional frame step);
``sampler.steps(n, ...)`` yields ``n`` training steps grouped as ``training.batching`` says (one
mouse, windows of mixed mice grouped by mouse, or one batch of every mouse) with their CutMix
partners; ``sampler.batches(n, device=..., workers=...)`` yields ``n`` batches on the device,
through a ``DataLoader`` with pinned memory when ``workers > 0``. Every random draw happens in
the main process from one checkpointable numpy generator, so the windows do not depend on the
number of workers and a resumed run draws the same windows as an uninterrupted one.

Typical use (``train.py``)::

    sources = load_sources(store_dirs, mode="auto", device=device)      # {mouse: source}
    sampler = WindowSampler(sources, train_rows, window_frames=80, batch_size=8, seed=seed,
                            frame_step=1, mouse_weights="uniform")        # or "trials", {mouse: w}
    for batch in sampler.batches(500, device=device, workers=0):        # workers > 0 for lazy mice
        out = model(batch.video, batch.behavior, batch.pupil_center, batch.mouse)
    for rows, batch in iter_trials(sources[mouse], val_rows, batch_size=8):  # whole trials
        ...
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ..data.sources import Batch, DeviceMouse, MouseData, WindowSource, ZarrMouse, span


@dataclass(frozen=True)
class Windows:
    """Which windows one batch holds: rows and starts of one mouse, ``length`` frames every ``step``.

    With CutMix partners (``partners`` not ``None``) the first ``len(partners)`` windows are the
    batch's own; ``partners[i]`` is the index (into ``rows``) of window ``i``'s CutMix partner, a
    fresh random window of the same mouse appended after the own windows, or -1 for none.
    """

    mouse: str
    rows: np.ndarray
    starts: np.ndarray
    length: int
    step: int = 1
    partners: np.ndarray | None = None

    @property
    def n_own(self) -> int:
        """Windows of the batch itself (the rest are CutMix partners)."""
        return len(self.rows) if self.partners is None else len(self.partners)


class WindowDataset(Dataset):
    """Map-style dataset whose "index" is a :class:`Windows`: one whole batch per item, so
    ``DataLoader(batch_size=None)`` workers cut (or read) whole batches in parallel."""

    def __init__(self, sources: Mapping[str, WindowSource]) -> None:
        self.sources = dict(sources)

    def open(self) -> None:
        for source in self.sources.values():
            if isinstance(source, ZarrMouse):
                source.open()

    def __getitem__(self, windows: Windows) -> Batch:  # type: ignore[override]
        return self.sources[windows.mouse].window(windows.rows, windows.starts, windows.length, windows.step)


def worker_init(worker_id: int) -> None:
    """``DataLoader`` ``worker_init_fn``: each worker opens its own handles on the stores."""
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, WindowDataset):
        info.dataset.open()


def window_loader(
    sources: Mapping[str, WindowSource], windows: Sequence[Windows], *, workers: int, pin_memory: bool = False,
    prefetch: int = 4,
) -> DataLoader:
    """A ``DataLoader`` that yields the batches of ``windows`` in order, cut by ``workers`` processes.

    Workers are forked where the platform can (Linux): they share the sources copy-on-write
    instead of unpickling a mouse each (Python 3.14 defaults to forkserver). They never touch
    CUDA; pinning happens in the loader's thread of the main process.
    """
    return DataLoader(
        WindowDataset(sources),
        sampler=list(windows),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=worker_init if workers > 0 else None,
        prefetch_factor=prefetch if workers > 0 else None,
        multiprocessing_context="fork" if workers > 0 and "fork" in multiprocessing.get_all_start_methods() else None,
    )


#: How the windows of one optimiser step are grouped (``training.batching``).
BATCHINGS: tuple[str, ...] = ("per_mouse", "mixed", "cycle")


class WindowSampler:
    """Random training windows: a mouse (uniformly, by training trials or by given weights), then
    ``batch_size`` (trial, start) pairs of it, each ``window_frames`` frames taken every ``frame_step``.

    :meth:`draw` gives one mouse's batch. :meth:`draw_step` gives one training step's windows as
    groups of one mouse each, by ``batching``: ``per_mouse`` one group (as :meth:`draw`);
    ``mixed`` each of the ``batch_size`` windows' mouse drawn on its own, grouped by mouse (one
    forward of the core serves them all); ``cycle`` one group of ``batch_size`` windows of every
    mouse (the starter kit's cycle over the mice). With ``cutmix_prob`` > 0 each window gets,
    with that probability, a partner: a fresh random window of the same mouse (:class:`Windows`).

    All randomness comes from one numpy generator whose state is checkpointed
    (``state``/``set_state``), so a resumed run draws the same windows as an uninterrupted one.
    ``data`` maps each mouse to any window source (:class:`MouseData`, :class:`DeviceMouse`,
    :class:`ZarrMouse`).
    """

    def __init__(
        self,
        data: Mapping[str, WindowSource],
        rows: Mapping[str, np.ndarray],
        window_frames: int,
        batch_size: int,
        seed: int,
        *,
        frame_step: int = 1,
        mouse_weights: str | Mapping[str, float] = "uniform",
        batching: str = "per_mouse",
        cutmix_prob: float = 0.0,
    ) -> None:
        if batching not in BATCHINGS:
            raise ValueError(f"WindowSampler: batching {batching!r} is not one of {list(BATCHINGS)}")
        if not 0.0 <= float(cutmix_prob) <= 1.0:
            raise ValueError(f"WindowSampler: cutmix_prob must be in [0, 1], got {cutmix_prob!r}")
        self.batching = batching
        self.cutmix_prob = float(cutmix_prob)
        self.data = dict(data)
        self.rows = {m: np.asarray(r, dtype=np.int64) for m, r in rows.items() if len(r)}
        if not self.rows:
            raise ValueError("WindowSampler: no training trials")
        missing = sorted(set(self.rows) - set(self.data))
        if missing:
            raise ValueError(f"WindowSampler: no data for mice {missing}")
        if int(frame_step) < 1 or int(window_frames) < 1 or int(batch_size) < 1:
            raise ValueError(
                f"WindowSampler: window_frames ({window_frames}), batch_size ({batch_size}) "
                f"and frame_step ({frame_step}) must be >= 1"
            )
        self.mice = sorted(self.rows)
        self.window_frames = int(window_frames)
        self.frame_step = int(frame_step)
        self.batch_size = int(batch_size)
        need = span(self.window_frames, self.frame_step)
        shortest = min(int(self.data[m].n_frames[r].min()) for m, r in self.rows.items())
        if need > shortest:
            raise ValueError(
                f"a window of {window_frames} frames every {frame_step} spans {need} frames, "
                f"more than the shortest training trial ({shortest})"
            )
        self.weights = self._weights(mouse_weights)
        self.rng = np.random.default_rng(seed)

    def _weights(self, mouse_weights: str | Mapping[str, float]) -> np.ndarray | None:
        """Probabilities of the mice (``None`` = uniform, drawn as before weights existed)."""
        if mouse_weights == "uniform":
            return None
        if mouse_weights == "trials":
            raw = np.array([len(self.rows[m]) for m in self.mice], dtype=np.float64)
        elif isinstance(mouse_weights, Mapping):
            unknown = sorted(set(mouse_weights) - set(self.data))
            if unknown:
                raise ValueError(f"mouse_weights: unknown mice {unknown}")
            raw = np.array([float(mouse_weights.get(m, 0.0)) for m in self.mice], dtype=np.float64)
            if np.any(~np.isfinite(raw)) or np.any(raw < 0) or raw.sum() <= 0:
                raise ValueError(f"mouse_weights: expected non-negative weights, not all zero, got {dict(mouse_weights)}")
        else:
            raise ValueError(f"mouse_weights: expected 'uniform', 'trials' or a mapping, got {mouse_weights!r}")
        return np.cumsum(raw / raw.sum())

    def _mouse_indices(self, n: int | None) -> int | np.ndarray:
        """One mouse index (``n`` None) or ``n`` of them, uniformly or by the weights."""
        if self.weights is None:
            return int(self.rng.integers(len(self.mice))) if n is None else self.rng.integers(len(self.mice), size=n)
        u = self.rng.random() if n is None else self.rng.random(n)
        index = np.minimum(np.searchsorted(self.weights, u * self.weights[-1], side="right"), len(self.mice) - 1)
        return int(index) if n is None else index

    def _trial_windows(self, mouse: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random (row, start) pairs of ``mouse``'s training trials."""
        rows = self.rows[mouse]
        chosen = rows[self.rng.integers(len(rows), size=n)]
        last_start = self.data[mouse].n_frames[chosen] - span(self.window_frames, self.frame_step)
        starts = np.floor(self.rng.random(n) * (last_start + 1)).astype(np.int64)
        return chosen, starts

    def draw(self) -> Windows:
        """The next batch's windows, all of one mouse (advances the generator)."""
        mouse = self.mice[self._mouse_indices(None)]
        chosen, starts = self._trial_windows(mouse, self.batch_size)
        return Windows(mouse, chosen, starts, self.window_frames, self.frame_step)

    def _partnered(self, windows: Windows) -> Windows:
        """``windows`` with CutMix partners drawn (unchanged, and no draw, when CutMix is off)."""
        if self.cutmix_prob <= 0:
            return windows
        n = len(windows.rows)
        mixed = self.rng.random(n) < self.cutmix_prob
        partners = np.full(n, -1, dtype=np.int64)
        k = int(mixed.sum())
        if not k:
            return dataclasses.replace(windows, partners=partners)
        partners[mixed] = n + np.arange(k)
        rows, starts = self._trial_windows(windows.mouse, k)
        return dataclasses.replace(
            windows, rows=np.concatenate([windows.rows, rows]), starts=np.concatenate([windows.starts, starts]),
            partners=partners,
        )

    def draw_step(self) -> list[Windows]:
        """The windows of one training step (one micro-batch), as groups of one mouse each, in
        the order the model sees them (see the class docstring)."""
        if self.batching == "per_mouse":
            groups = [self.draw()]
        elif self.batching == "cycle":
            groups = [Windows(m, *self._trial_windows(m, self.batch_size), self.window_frames, self.frame_step)
                      for m in self.mice]
        else:
            counts = np.bincount(self._mouse_indices(self.batch_size), minlength=len(self.mice))
            groups = [Windows(self.mice[i], *self._trial_windows(self.mice[i], int(c)), self.window_frames,
                              self.frame_step) for i, c in enumerate(counts) if c]
        return [self._partnered(w) for w in groups]

    def sample(self) -> Batch:
        """The next batch, cut in this process (on the CPU, or on the device for a DeviceMouse)."""
        w = self.draw()
        return self.data[w.mouse].window(w.rows, w.starts, w.length, w.step)

    def batches(
        self, n: int, *, device: torch.device | str = "cpu", workers: int = 0, prefetch: int = 4
    ) -> Iterator[Batch]:
        """The next ``n`` batches on ``device``.

        The ``n`` draws are made up front, so the generator state afterwards is the same for
        any ``workers``. With ``workers == 0`` batches are cut here (into pinned memory when the
        device is CUDA); otherwise a ``DataLoader`` of ``workers`` processes cuts them (the way
        for :class:`ZarrMouse` sources) and pins them. Copies to the device are non-blocking.
        """
        return self._cut_all([self.draw() for _ in range(int(n))], device, workers, prefetch)

    def steps(
        self, n: int, *, device: torch.device | str = "cpu", workers: int = 0, prefetch: int = 4
    ) -> Iterator[list[tuple[Windows, Batch]]]:
        """The next ``n`` training steps (:meth:`draw_step`), each a list of ``(windows, batch)``
        groups on ``device``; drawn up front and cut as :meth:`batches` cuts them."""
        drawn = [self.draw_step() for _ in range(int(n))]
        cut = self._cut_all([w for step in drawn for w in step], device, workers, prefetch)
        for step in drawn:
            yield [(w, next(cut)) for w in step]

    def _cut_all(
        self, windows: list[Windows], device: torch.device | str, workers: int, prefetch: int
    ) -> Iterator[Batch]:
        device = torch.device(device)
        pin = device.type == "cuda"
        # mice already on the device are cut here (a worker process cannot use CUDA tensors)
        here = {m for m, s in self.data.items() if isinstance(s, DeviceMouse) or workers <= 0}
        away = [w for w in windows if w.mouse not in here]
        loaded = iter(())
        if away:
            others = {m: s for m, s in self.data.items() if m not in here}
            loaded = iter(window_loader(others, away, workers=workers, pin_memory=pin, prefetch=prefetch))
        for w in windows:
            source = self.data[w.mouse]
            if w.mouse not in here:
                batch = next(loaded)
            elif isinstance(source, MouseData):
                batch = source.window(w.rows, w.starts, w.length, w.step, pin_memory=pin)
            else:
                batch = source.window(w.rows, w.starts, w.length, w.step)
            yield batch.to(device, non_blocking=True)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
