"""Training data: converted mice in the official normalisation, and windows cut from them.

Everything a model sees goes through :mod:`normalize` (docs/data-format.md), so training targets and the
scorer's ground truth are in the same units:

- videos ``(x - mean) / std`` per pixel and frame; behaviour ``÷ std``; pupil centre z-scored;
- responses ``× response_precision(std)`` per frame;
- every trial cut to ``store.usable_frames()``; frames after that are zero-filled (never read).

A model with ``inputs: raw`` gets the archive's values instead (grey levels 0-255, raw behaviour
and pupil centre), and ``training.targets: raw`` the recorded responses; every source carries
the official per-frame ``precision`` so that raw targets can still be scored in official units.

Three window sources share one small interface (``window(rows, starts, length, step)`` → :class:`Batch`,
``n_frames``, ``mean_response(rows)`` and the trial/neuron metadata), so the sampler, the
validation loop and prediction never ask where the data lives:

- :class:`MouseData` (:func:`load_mouse`): the whole mouse in RAM in a compact form (videos float16,
  responses float32 or float16), windows cut by slicing; the fast default when it fits.
- :class:`DeviceMouse` (``MouseData.to_device``): the same compact arrays as tensors on the GPU;
  windows are cut there with batched indexing, so no host-to-device copy per batch at all.
- :class:`ZarrMouse` (:func:`open_lazy`): nothing held; each window is read from the Zarr store and
  normalised on the fly. For mice that do not fit; run it in ``DataLoader`` workers, each of which
  opens its own store handle (:func:`worker_init`).

:func:`load_sources` picks one per mouse (``mode="auto"``: device if it fits there, else RAM if it
fits there, else lazy). :class:`WindowSampler` draws random windows over all mice (uniform or
weighted choice of the mouse, then ``batch_size`` (trial, start) pairs of it, optional frame step);
``sampler.steps(n, ...)`` yields ``n`` training steps grouped as ``training.batching`` says
(one mouse, windows of mixed mice grouped by mouse, or one batch of every mouse) with their CutMix
partners; ``sampler.batches(n, device=..., workers=...)`` yields ``n`` batches on the device, through a
``DataLoader`` with pinned memory when ``workers > 0``. Every random draw happens in the main process
from one checkpointable numpy generator, so the windows do not depend on the number of workers and
a resumed run draws the same windows as an uninterrupted one.

A window of ``length`` frames with ``step`` s covers ``(length - 1) * s + 1`` frames of the trial
(temporal subsampling: every s-th frame, all modalities alike).

Typical use (``train.py``)::

    sources = load_sources(store_dirs, mode="auto", device=device)      # {mouse: source}
    sampler = WindowSampler(sources, train_rows, window_frames=80, batch_size=8, seed=seed,
                            frame_step=1, mouse_weights="uniform")        # or "trials", {mouse: w}
    for batch in sampler.batches(500, device=device, workers=0):        # workers > 0 for lazy mice
        out = model(batch.video, batch.behavior, batch.pupil_center, batch.mouse)
    for rows, batch in iter_trials(sources[mouse], val_rows, batch_size=8):  # whole trials
        ...

``benchmarks/loader_speed.py`` measures these sources against per-trial ``.npy`` files.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .errors import ConfigError, StoreError
from .layout import LABELLED_TIERS, MAX_FRAMES, TIERS
from .normalize import behavior_scale, response_precision, video_normalizer
from .store import MouseStore, open_mouse

#: dtypes a held mouse may keep its responses in (videos are always float16).
RESPONSE_DTYPES: tuple[str, ...] = ("float32", "float16")
#: ``load_sources`` modes.
MODES: tuple[str, ...] = ("auto", "ram", "device", "lazy")
#: What the model's inputs are: the official normalisation, or the archive's raw values (grey
#: levels 0-255, raw behaviour and pupil centre), as the 1st-place model was fed.
INPUTS: tuple[str, ...] = ("official", "raw")
#: What the responses are: ``normalized`` (x the official per-frame precision) or ``raw`` (as
#: recorded; the training loss clips them at 0, validation multiplies by the precision).
TARGETS: tuple[str, ...] = ("normalized", "raw")
#: Share of the free RAM (or free GPU memory) that ``mode="auto"`` lets the held mice take.
MEMORY_FRACTION = 0.6
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def check_options(inputs: str, targets: str) -> None:
    """Refuse an unknown ``inputs`` (:data:`INPUTS`) or ``targets`` (:data:`TARGETS`)."""
    if inputs not in INPUTS:
        raise ConfigError(f"model.inputs: {inputs!r} is not one of {list(INPUTS)}")
    if targets not in TARGETS:
        raise ConfigError(f"training.targets: {targets!r} is not one of {list(TARGETS)}")


def span(length: int, step: int) -> int:
    """Frames of a trial that a window of ``length`` frames taken every ``step`` frames covers."""
    return (int(length) - 1) * int(step) + 1


# --- batches ---------------------------------------------------------------------------


@dataclass
class Batch:
    """Model inputs (and targets) of equally long windows of one mouse, time-first, float32."""

    mouse: str
    video: torch.Tensor  # (B, T, H, W)
    behavior: torch.Tensor  # (B, T, 2)
    pupil_center: torch.Tensor  # (B, T, 2)
    responses: torch.Tensor | None  # (B, T, N)

    def __len__(self) -> int:
        return int(self.video.shape[0])

    def _map(self, fn: Any) -> Batch:
        apply = lambda x: None if x is None else fn(x)  # noqa: E731
        return Batch(self.mouse, apply(self.video), apply(self.behavior), apply(self.pupil_center), apply(self.responses))

    def to(self, device: torch.device | str, non_blocking: bool = True) -> Batch:
        """Copy to ``device``; from pinned memory the copy overlaps with the GPU's work."""
        return self._map(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Page-locked copy (``DataLoader(pin_memory=True)`` calls this in its pinning thread)."""
        return self._map(lambda x: x.pin_memory())


# --- normalisation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Normalizer:
    """Per-frame scaling of one mouse, time-major, for the first ``length`` frames: the official
    normalisation, or the identity for raw inputs (``inputs="raw"``) or raw targets
    (``targets="raw"``). ``precision`` is always the official per-frame response precision."""

    video_offset: np.ndarray  # (T, H, W)
    video_scale: np.ndarray
    behavior_scale: np.ndarray  # (T, 2)
    pupil_offset: np.ndarray  # (T, 2)
    pupil_scale: np.ndarray
    response_scale: np.ndarray  # (T, N)
    precision: np.ndarray  # (T, N), float32

    @classmethod
    def of(cls, mouse: MouseStore, length: int, *, inputs: str = "official", targets: str = "normalized") -> Normalizer:
        check_options(inputs, targets)

        def stat(modality: str, name: str) -> np.ndarray:
            # NaN past ``length`` would mean a wrong cut; frames are never read there
            return np.nan_to_num(np.asarray(mouse.statistic(modality, name)[:length], dtype=np.float64))

        precision = np.nan_to_num(response_precision(np.asarray(mouse.statistic("responses", "std"))[:length]))
        precision = precision.astype(np.float32)
        response_scale = precision if targets == "normalized" else np.ones_like(precision)
        if inputs == "raw":
            height, width = mouse.array("videos").shape[2:]
            zeros = np.zeros((length, height, width))
            two = np.zeros((length, 2))
            return cls(zeros, zeros + 1.0, two + 1.0, two, two + 1.0, response_scale, precision)
        v_offset, v_scale = video_normalizer(stat("videos", "mean"), stat("videos", "std"))
        p_offset, p_scale = video_normalizer(stat("pupil_center", "mean"), stat("pupil_center", "std"))
        return cls(v_offset, v_scale, behavior_scale(stat("behavior", "std")), p_offset, p_scale, response_scale,
                   precision)

    def apply(self, modality: str, raw: np.ndarray, frames: slice, out: np.ndarray | None = None) -> np.ndarray:
        """Normalised float32 values of ``raw`` (time-first, leading axes allowed) at ``frames``,
        written into ``out`` when given (no temporaries)."""
        offset, scale = {
            "videos": (self.video_offset, self.video_scale),
            "behavior": (None, self.behavior_scale),
            "pupil_center": (self.pupil_offset, self.pupil_scale),
            "responses": (None, self.response_scale),
        }[modality]
        x = np.asarray(raw, dtype=np.float32)
        if out is None:
            out = np.empty(x.shape, dtype=np.float32)
        if offset is None:
            return np.multiply(x, scale[frames], out=out)
        np.subtract(x, offset[frames], out=out)
        return np.multiply(out, scale[frames], out=out)


@dataclass(frozen=True)
class _Selection:
    """The trials of some tiers that have usable frames, and their metadata."""

    store_rows: np.ndarray
    trial_ids: np.ndarray
    tiers: np.ndarray
    stimulus_groups: np.ndarray
    n_frames: np.ndarray

    @classmethod
    def of(cls, mouse: MouseStore, tiers: Sequence[str], max_frames: int) -> _Selection:
        unknown = set(tiers) - set(TIERS)
        if unknown:
            raise StoreError(mouse.path, f"unknown tier(s) {sorted(unknown)}; expected some of {TIERS}")
        table = mouse.trials
        usable = mouse.usable_frames(max_frames)
        keep = table["tier"].isin(list(tiers)).to_numpy() & (usable > 0)
        selected = table[keep]
        return cls(
            store_rows=selected["row"].to_numpy(dtype=np.int64),
            trial_ids=selected["trial_id"].to_numpy(dtype=np.int64),
            tiers=selected["tier"].to_numpy(dtype=str),
            stimulus_groups=selected["stimulus_group"].to_numpy(),
            n_frames=usable[keep].astype(np.int64),
        )

    @property
    def length(self) -> int:
        return int(self.n_frames.max()) if len(self.n_frames) else 0


def _cut(
    array: np.ndarray, rows: np.ndarray, starts: np.ndarray, length: int, step: int, pin_memory: bool = False
) -> torch.Tensor:
    """Windows of an in-memory ``(trials, T, ...)`` array as one float32 tensor: each window is one
    strided slice copied (and cast) straight into the tensor, page-locked when ``pin_memory``."""
    tensor = torch.empty((len(rows), length, *array.shape[2:]), dtype=torch.float32, pin_memory=pin_memory)
    target = tensor.numpy()
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        target[i] = array[row, start : start + span(length, step) : step]
    return tensor


class _Metadata:
    """Trial and neuron metadata every source has (rows index the selected trials)."""

    mouse: str
    path: Path
    trial_ids: np.ndarray  # (n,) int64
    tiers: np.ndarray  # (n,) str
    stimulus_groups: np.ndarray  # (n,)
    n_frames: np.ndarray  # (n,) int64, usable frames
    unit_ids: np.ndarray  # (N,) int64
    coordinates: np.ndarray  # (N, 3) float64, µm
    #: (T, N) float32: the official per-frame response precision (raw targets are scored x it)
    precision: np.ndarray | None

    def _windows(
        self, rows: Sequence[int] | np.ndarray, starts: Sequence[int] | np.ndarray, length: int, step: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` and ``starts`` as int64 arrays, after checking every window fits its trial's usable frames."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(starts, dtype=np.int64)
        if length < 1 or step < 1:
            raise ValueError(f"{self.mouse}: window length ({length}) and step ({step}) must be >= 1")
        if len(rows) != len(starts):
            raise ValueError(f"{self.mouse}: {len(rows)} rows but {len(starts)} starts")
        if np.any(starts < 0) or np.any(starts + span(length, step) > self.n_frames[rows]):
            raise ValueError(f"{self.mouse}: a window of {length} frames (step {step}) runs past a trial's usable frames")
        return rows, starts

    @property
    def n_trials(self) -> int:
        return len(self.trial_ids)

    @property
    def n_neurons(self) -> int:
        return len(self.unit_ids)

    def rows(self, *tiers: str) -> np.ndarray:
        """Indices (into this object) of the trials in ``tiers``."""
        return np.flatnonzero(np.isin(self.tiers, tiers))


class WindowSource(Protocol):
    """What the sampler, validation and prediction need of a mouse (all three sources have it)."""

    mouse: str
    n_frames: np.ndarray

    def window(self, rows: Sequence[int] | np.ndarray, starts: Sequence[int] | np.ndarray, length: int, step: int = 1) -> Batch: ...


# --- the whole mouse in RAM ----------------------------------------------------------------


@dataclass
class MouseData(_Metadata):
    """Normalised trials of one mouse (rows sorted by trial id), time-first, held in RAM."""

    mouse: str
    path: Path
    trial_ids: np.ndarray
    tiers: np.ndarray
    stimulus_groups: np.ndarray
    n_frames: np.ndarray
    videos: np.ndarray  # (n, T, H, W) float16
    behavior: np.ndarray  # (n, T, 2) float32
    pupil_center: np.ndarray  # (n, T, 2) float32
    responses: np.ndarray | None  # (n, T, N) float32 or float16, None when not loaded
    unit_ids: np.ndarray
    coordinates: np.ndarray
    precision: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.videos, self.behavior, self.pupil_center, self.responses) if a is not None)

    def window(
        self,
        rows: Sequence[int] | np.ndarray,
        starts: Sequence[int] | np.ndarray,
        length: int,
        step: int = 1,
        *,
        pin_memory: bool = False,
    ) -> Batch:
        """Frames ``start, start + step, …`` (``length`` of them) of each trial in ``rows``, as float32.

        Each window is one strided slice copied (and cast) straight into the batch tensors, which
        are page-locked when ``pin_memory`` (needs CUDA), ready for a non-blocking copy.
        """
        rows, starts = self._windows(rows, starts, length, step)
        arrays = {"videos": self.videos, "behavior": self.behavior, "pupil_center": self.pupil_center}
        if self.responses is not None:
            arrays["responses"] = self.responses
        out = {name: _cut(array, rows, starts, length, step, pin_memory) for name, array in arrays.items()}
        return Batch(self.mouse, out["videos"], out["behavior"], out["pupil_center"], out.get("responses"))

    def mean_response(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Mean normalised response per neuron over the usable frames of ``rows`` (float64)."""
        if self.responses is None:
            raise ValueError(f"{self.mouse}: responses were not loaded")
        return _mean_response(self.n_neurons, self.n_frames, rows, lambda r, n: self.responses[r, :n])

    def to_device(self, device: torch.device | str) -> DeviceMouse:
        """The same compact arrays as tensors on ``device`` (one copy, then windows are cut there)."""
        move = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        return DeviceMouse(
            mouse=self.mouse,
            path=self.path,
            trial_ids=self.trial_ids,
            tiers=self.tiers,
            stimulus_groups=self.stimulus_groups,
            n_frames=self.n_frames,
            videos=move(self.videos),
            behavior=move(self.behavior),
            pupil_center=move(self.pupil_center),
            responses=move(self.responses),
            unit_ids=self.unit_ids,
            coordinates=self.coordinates,
            precision=self.precision,
        )


def _mean_response(n_neurons: int, n_frames: np.ndarray, rows: Any, read: Any) -> np.ndarray:
    total = np.zeros(n_neurons, dtype=np.float64)
    count = 0
    for r in np.asarray(rows, dtype=np.int64):
        n = int(n_frames[r])
        total += np.asarray(read(r, n)).sum(axis=0, dtype=np.float64)
        count += n
    return total / max(count, 1)


def load_mouse(
    store: str | Path | MouseStore,
    tiers: Sequence[str] = TIERS,
    *,
    responses: bool = True,
    max_frames: int = MAX_FRAMES,
    response_dtype: str = "float32",
    inputs: str = "official",
    targets: str = "normalized",
) -> MouseData:
    """Read the trials of ``tiers`` from a converted store into RAM, officially normalised
    (``inputs="raw"``: videos, behaviour and pupil centre as recorded; ``targets="raw"``: the
    responses as recorded).

    ``responses=False`` skips the responses (test tiers carry none worth reading);
    ``response_dtype="float16"`` halves their memory (normalised responses need no more
    precision; a value past float16's range is an error rather than a silent infinity).
    """
    if response_dtype not in RESPONSE_DTYPES:
        raise ConfigError(f"response_dtype: {response_dtype!r} is not one of {list(RESPONSE_DTYPES)}")
    mouse = store if isinstance(store, MouseStore) else open_mouse(store)
    sel = _Selection.of(mouse, tiers, max_frames)
    length = sel.length
    norm = Normalizer.of(mouse, length, inputs=inputs, targets=targets)
    n, n_neurons = len(sel.store_rows), mouse.n_neurons
    height, width = mouse.array("videos").shape[2:]
    held = {
        "videos": np.zeros((n, length, height, width), dtype=np.float16),
        "behavior": np.zeros((n, length, 2), dtype=np.float32),
        "pupil_center": np.zeros((n, length, 2), dtype=np.float32),
    }
    if responses:
        held["responses"] = np.zeros((n, length, n_neurons), dtype=response_dtype)
    sources = {m: mouse.array(m) for m in held}
    for i, (row, t) in enumerate(zip(sel.store_rows, sel.n_frames, strict=True)):
        frames = slice(0, int(t))
        for name, target in held.items():
            values = norm.apply(name, sources[name][row, frames], frames)
            if not np.all(np.isfinite(values)):
                raise StoreError(mouse.path, f"{name}: non-finite values inside the usable frames after normalisation")
            if target.dtype == np.float16 and np.abs(values).max(initial=0.0) > _FLOAT16_MAX:
                raise StoreError(
                    mouse.path, f"{name}: normalised values of row {row} exceed float16's range (hold them as float32)"
                )
            target[i, frames] = values
    return MouseData(
        mouse=mouse.mouse,
        path=mouse.path,
        trial_ids=sel.trial_ids,
        tiers=sel.tiers,
        stimulus_groups=sel.stimulus_groups,
        n_frames=sel.n_frames,
        videos=held["videos"],
        behavior=held["behavior"],
        pupil_center=held["pupil_center"],
        responses=held.get("responses"),
        unit_ids=mouse.unit_ids,
        coordinates=mouse.coordinates,
        precision=norm.precision,
    )


def _add(out: dict, source: _Metadata, path: str | Path) -> None:
    if source.mouse in out:
        raise StoreError(path, f"mouse {source.mouse!r} is given twice (also {out[source.mouse].path})")
    out[source.mouse] = source


# --- the whole mouse on the GPU ------------------------------------------------------------


@dataclass
class DeviceMouse(_Metadata):
    """:class:`MouseData`'s compact arrays as tensors on a device; windows are gathered there."""

    mouse: str
    path: Path
    trial_ids: np.ndarray
    tiers: np.ndarray
    stimulus_groups: np.ndarray
    n_frames: np.ndarray
    videos: torch.Tensor  # (n, T, H, W) float16
    behavior: torch.Tensor
    pupil_center: torch.Tensor
    responses: torch.Tensor | None
    unit_ids: np.ndarray
    coordinates: np.ndarray
    precision: np.ndarray | None = None

    @property
    def device(self) -> torch.device:
        return self.videos.device

    def window(
        self, rows: Sequence[int] | np.ndarray, starts: Sequence[int] | np.ndarray, length: int, step: int = 1, **_: Any
    ) -> Batch:
        """Like :meth:`MouseData.window`, by one batched gather per modality on the device."""
        rows, starts = self._windows(rows, starts, length, step)
        frames = torch.from_numpy(starts[:, None] + step * np.arange(length)[None]).to(self.device, non_blocking=True)
        index = (torch.from_numpy(rows).to(self.device, non_blocking=True)[:, None], frames)
        take = lambda a: None if a is None else a[index].float()  # noqa: E731
        return Batch(self.mouse, take(self.videos), take(self.behavior), take(self.pupil_center), take(self.responses))

    def mean_response(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        if self.responses is None:
            raise ValueError(f"{self.mouse}: responses were not loaded")
        total = torch.zeros(self.n_neurons, dtype=torch.float64, device=self.device)
        count = 0
        for r in np.asarray(rows, dtype=np.int64):
            n = int(self.n_frames[r])
            total += self.responses[int(r), :n].double().sum(0)
            count += n
        return (total / max(count, 1)).cpu().numpy()


# --- lazily read from Zarr -----------------------------------------------------------------


@dataclass
class ZarrMouse(_Metadata):
    """A mouse read window by window from its Zarr store, normalised on the fly.

    Holds metadata, the normaliser and the two tiny modalities (behaviour and pupil centre,
    a few MB per mouse, so a window costs two store reads instead of four); videos and
    responses are read per window. The store is opened on first use in each process
    (``DataLoader`` workers call :meth:`open` through :func:`worker_init`), so it pickles
    small and no handle is ever shared between processes.
    """

    mouse: str
    path: Path
    store_rows: np.ndarray
    trial_ids: np.ndarray
    tiers: np.ndarray
    stimulus_groups: np.ndarray
    n_frames: np.ndarray
    unit_ids: np.ndarray
    coordinates: np.ndarray
    normalizer: Normalizer
    held: dict[str, np.ndarray]  # behavior, pupil_center: (n, T, 2) float32, normalised
    responses: bool = True
    _arrays: dict | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}

    @property
    def precision(self) -> np.ndarray:  # type: ignore[override]
        return self.normalizer.precision

    def open(self) -> None:
        """Open this process's handles on the store's arrays."""
        store = open_mouse(self.path)
        self._arrays = {m: store.array(m) for m in ("videos", "responses")}

    def window(
        self, rows: Sequence[int] | np.ndarray, starts: Sequence[int] | np.ndarray, length: int, step: int = 1, **_: Any
    ) -> Batch:
        """Like :meth:`MouseData.window`, each window read from the store (a few chunks each)."""
        rows, starts = self._windows(rows, starts, length, step)
        if self._arrays is None:
            self.open()
        out: dict[str, torch.Tensor] = {}
        for name in ("videos", "responses") if self.responses else ("videos",):
            array = self._arrays[name]
            tensor = torch.empty((len(rows), length, *array.shape[2:]), dtype=torch.float32)
            target = tensor.numpy()
            for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
                frames = slice(int(start), int(start) + span(length, step), step)
                self.normalizer.apply(name, array[int(self.store_rows[row]), frames], frames, out=target[i])
            out[name] = tensor
        for name, array in self.held.items():
            out[name] = _cut(array, rows, starts, length, step)
        return Batch(self.mouse, out["videos"], out["behavior"], out["pupil_center"], out.get("responses"))

    def mean_response(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        if self._arrays is None:
            self.open()
        array = self._arrays["responses"]
        return _mean_response(
            self.n_neurons,
            self.n_frames,
            rows,
            lambda r, n: self.normalizer.apply("responses", array[int(self.store_rows[r]), :n], slice(0, n)),
        )


def open_lazy(
    store: str | Path | MouseStore,
    tiers: Sequence[str] = TIERS,
    *,
    responses: bool = True,
    max_frames: int = MAX_FRAMES,
    inputs: str = "official",
    targets: str = "normalized",
) -> ZarrMouse:
    """A :class:`ZarrMouse` of the trials of ``tiers`` (reads metadata, statistics and the two tiny
    modalities now; videos and responses window by window later); ``inputs``/``targets`` as
    :func:`load_mouse`."""
    mouse = store if isinstance(store, MouseStore) else open_mouse(store)
    sel = _Selection.of(mouse, tiers, max_frames)
    normalizer = Normalizer.of(mouse, sel.length, inputs=inputs, targets=targets)
    held = {}
    for name in ("behavior", "pupil_center"):
        raw = np.asarray(mouse.array(name)[...])[sel.store_rows]
        values = np.zeros((len(sel.store_rows), sel.length, 2), dtype=np.float32)
        for i, t in enumerate(sel.n_frames):
            normalizer.apply(name, raw[i, :t], slice(0, int(t)), out=values[i, :t])
        if not np.all(np.isfinite(values)):
            raise StoreError(mouse.path, f"{name}: non-finite values inside the usable frames after normalisation")
        held[name] = values
    return ZarrMouse(
        mouse=mouse.mouse,
        path=mouse.path,
        store_rows=sel.store_rows,
        trial_ids=sel.trial_ids,
        tiers=sel.tiers,
        stimulus_groups=sel.stimulus_groups,
        n_frames=sel.n_frames,
        unit_ids=mouse.unit_ids,
        coordinates=mouse.coordinates,
        normalizer=normalizer,
        held=held,
        responses=responses,
    )


# --- choosing where each mouse lives -------------------------------------------------------


def held_bytes(store: str | Path | MouseStore, tiers: Sequence[str], *, response_dtype: str = "float32",
               max_frames: int = MAX_FRAMES) -> int:
    """Bytes :func:`load_mouse` would hold for these tiers (read from the metadata only)."""
    mouse = store if isinstance(store, MouseStore) else open_mouse(store)
    sel = _Selection.of(mouse, tiers, max_frames)
    height, width = mouse.array("videos").shape[2:]
    per_frame = 2 * height * width + 4 * 4 + np.dtype(response_dtype).itemsize * mouse.n_neurons
    return int(len(sel.store_rows) * sel.length * per_frame)


def available_ram() -> int:
    """Bytes of RAM the system can still give (``MemAvailable``), without a new dependency."""
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def available_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device; ``None`` for the CPU (its limit is :func:`available_ram`)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def released_tiers(
    store: MouseStore, tiers: Sequence[str], *, probes: int = 4, log: Any = None
) -> list[str]:
    """The tiers of ``tiers`` whose responses the archive releases. Withheld test responses are
    all zeros (the new mice's test tiers), so a tier whose ``probes`` evenly spaced trials are
    all zero is left out, with a note to ``log``; a tier with no trial is kept (it adds none)."""
    trials = store.trials
    usable = store.usable_frames()
    array = store.array("responses")
    kept = []
    for tier in tiers:
        rows = trials.loc[trials["tier"] == tier, "row"].to_numpy(dtype=np.int64)
        frames = usable[(trials["tier"] == tier).to_numpy()]
        if len(rows):
            picked = np.unique(np.linspace(0, len(rows) - 1, min(probes, len(rows))).round().astype(np.int64))
            if not any(np.any(np.nan_to_num(np.asarray(array[int(rows[i]), : int(frames[i])])) != 0) for i in picked):
                if log is not None:
                    log(f"{store.path}: responses of tier {tier} are withheld (all zero); not trained on")
                continue
        kept.append(tier)
    return kept


def load_sources(
    store_dirs: Sequence[str | Path],
    tiers: Sequence[str] | Callable[[MouseStore], Sequence[str]] = LABELLED_TIERS,
    *,
    mode: str = "auto",
    device: torch.device | str = "cpu",
    response_dtype: str = "float32",
    max_frames: int = MAX_FRAMES,
    memory_fraction: float = MEMORY_FRACTION,
    log: Any = None,
    inputs: str = "official",
    targets: str = "normalized",
) -> dict[str, MouseData | DeviceMouse | ZarrMouse]:
    """One window source per store, keyed by mouse name.

    ``mode``: ``ram`` (:func:`load_mouse`), ``device`` (then moved to ``device``), ``lazy``
    (:func:`open_lazy`), or ``auto``: each mouse goes on a CUDA ``device`` while the held mice fit
    in ``memory_fraction`` of its free memory, else into RAM while they fit in that share of the
    free RAM, else stays lazy. ``tiers`` may be a function of the store (e.g.
    :func:`released_tiers`); ``inputs``/``targets`` as :func:`load_mouse`.
    """
    check_options(inputs, targets)
    if mode not in MODES:
        raise ConfigError(f"data mode: {mode!r} is not one of {list(MODES)}")
    device = torch.device(device)
    say = log or (lambda message: None)
    ram_left = available_ram() * memory_fraction
    device_free = available_device_memory(device)
    device_left = None if device_free is None else device_free * memory_fraction
    out: dict[str, MouseData | DeviceMouse | ZarrMouse] = {}
    for path in store_dirs:
        store = open_mouse(path)
        chosen = mode
        mouse_tiers = list(tiers(store) if callable(tiers) else tiers)
        if mode == "auto":
            need = held_bytes(store, mouse_tiers, response_dtype=response_dtype, max_frames=max_frames)
            if device_left is not None and need <= device_left:
                chosen, device_left = "device", device_left - need
            elif need <= ram_left:
                chosen, ram_left = "ram", ram_left - need
            else:
                chosen = "lazy"
            say(f"{store.mouse}: {need / 2**30:.2f} GiB held -> {chosen}")
        if chosen == "lazy":
            source: Any = open_lazy(store, mouse_tiers, max_frames=max_frames, inputs=inputs, targets=targets)
        else:
            source = load_mouse(store, mouse_tiers, max_frames=max_frames, response_dtype=response_dtype,
                                inputs=inputs, targets=targets)
            if chosen == "device":
                source = source.to_device(device)
        _add(out, source, path)
    return out


# --- sampling windows ----------------------------------------------------------------------


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


def iter_trials(
    data: WindowSource, rows: Sequence[int] | np.ndarray, batch_size: int, step: int = 1
) -> Iterator[tuple[np.ndarray, Batch]]:
    """Whole trials in batches of equal length: yields ``(rows, batch)`` in the order of ``rows``
    grouped by length (validation and prediction). With ``step`` > 1 every ``step``-th frame."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = (data.n_frames[rows] - 1) // step + 1
    for length in np.unique(lengths):
        same = rows[lengths == length]
        for i in range(0, len(same), batch_size):
            chunk = same[i : i + batch_size]
            yield chunk, data.window(chunk, np.zeros(len(chunk), dtype=np.int64), int(length), step)
