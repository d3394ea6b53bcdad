"""Window sources: a converted mouse's trials, normalised (:mod:`normalizer`), cut into windows.

Three sources share one small interface (``window(rows, starts, length, step)`` → :class:`Batch`,
``n_frames``, ``mean_response(rows)`` and the trial/neuron metadata), so the sampler, the
validation loop and prediction never ask where the data lives:

- :class:`MouseData` (:func:`load_mouse`): the whole mouse in RAM in a compact form (videos float16,
  responses float32 or float16), windows cut by slicing; the fast default when it fits.
- :class:`DeviceMouse` (``MouseData.to_device``): the same compact arrays as tensors on the GPU;
  windows are cut there with batched indexing, so no host-to-device copy per batch at all.
- :class:`ZarrMouse` (:func:`open_lazy`): nothing held; each window is read from the Zarr store and
  normalised on the fly. For mice that do not fit; run it in ``DataLoader`` workers, each of which
  opens its own store handle (:func:`sampler.worker_init`).

Every trial is cut to ``store.usable_frames()``; frames after that are zero-filled (never read).
A window of ``length`` frames with ``step`` s covers ``(length - 1) * s + 1`` frames of the trial
(temporal subsampling: every s-th frame, all modalities alike). :func:`iter_trials` walks whole
trials (validation and prediction). Where each mouse lives is :mod:`placement`'s choice; random
training windows are :mod:`sampler`'s. ``benchmarks/loader_speed.py`` measures these sources
against per-trial ``.npy`` files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import ConfigError, StoreError
from ..layout import MAX_FRAMES, TIERS
from .normalizer import Normalizer
from .store import MouseStore, open_mouse

#: dtypes a held mouse may keep its responses in (videos are always float16).
RESPONSE_DTYPES: tuple[str, ...] = ("float32", "float16")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


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


@dataclass(frozen=True)
class Selection:
    """The trials of some tiers that have usable frames, and their metadata."""

    store_rows: np.ndarray
    trial_ids: np.ndarray
    tiers: np.ndarray
    stimulus_groups: np.ndarray
    n_frames: np.ndarray

    @classmethod
    def of(cls, mouse: MouseStore, tiers: Sequence[str], max_frames: int) -> Selection:
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

    def metadata(self, mouse: MouseStore) -> dict[str, Any]:
        """The :data:`METADATA` fields of a source of these trials of ``mouse``."""
        return {
            "mouse": mouse.mouse, "path": mouse.path, "trial_ids": self.trial_ids, "tiers": self.tiers,
            "stimulus_groups": self.stimulus_groups, "n_frames": self.n_frames, "unit_ids": mouse.unit_ids,
            "coordinates": mouse.coordinates,
        }  # fmt: skip


#: The trial and neuron metadata every source carries (:class:`TrialMetadata`).
METADATA: tuple[str, ...] = (
    "mouse", "path", "trial_ids", "tiers", "stimulus_groups", "n_frames", "unit_ids", "coordinates"
)  # fmt: skip


def _selected(
    store: str | Path | MouseStore, tiers: Sequence[str], max_frames: int, inputs: str, targets: str
) -> tuple[MouseStore, Selection, Normalizer]:
    """The store, its trials of ``tiers`` with usable frames, and their normaliser."""
    mouse = store if isinstance(store, MouseStore) else open_mouse(store)
    sel = Selection.of(mouse, tiers, max_frames)
    return mouse, sel, Normalizer.of(mouse, sel.length, inputs=inputs, targets=targets)


def _check_finite(mouse: MouseStore, name: str, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        raise StoreError(mouse.path, f"{name}: non-finite values inside the usable frames after normalisation")


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


@dataclass(kw_only=True)
class TrialMetadata:
    """Trial and neuron metadata every source has (rows index the selected trials). Every
    source also has ``precision``: (T, N) float32, the official per-frame response precision
    (raw targets are scored x it)."""

    mouse: str
    path: Path
    trial_ids: np.ndarray  # (n,) int64
    tiers: np.ndarray  # (n,) str
    stimulus_groups: np.ndarray  # (n,)
    n_frames: np.ndarray  # (n,) int64, usable frames
    unit_ids: np.ndarray  # (N,) int64
    coordinates: np.ndarray  # (N, 3) float64, µm

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


@dataclass(kw_only=True)
class MouseData(TrialMetadata):
    """Normalised trials of one mouse (rows sorted by trial id), time-first, held in RAM."""

    videos: np.ndarray  # (n, T, H, W) float16
    behavior: np.ndarray  # (n, T, 2) float32
    pupil_center: np.ndarray  # (n, T, 2) float32
    responses: np.ndarray | None  # (n, T, N) float32 or float16, None when not loaded
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
            **{name: getattr(self, name) for name in METADATA},
            videos=move(self.videos),
            behavior=move(self.behavior),
            pupil_center=move(self.pupil_center),
            responses=move(self.responses),
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
    response_dtype: str = RESPONSE_DTYPES[0],
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
    mouse, sel, norm = _selected(store, tiers, max_frames, inputs, targets)
    length = sel.length
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
            _check_finite(mouse, name, values)
            if target.dtype == np.float16 and np.abs(values).max(initial=0.0) > _FLOAT16_MAX:
                raise StoreError(
                    mouse.path, f"{name}: normalised values of row {row} exceed float16's range (hold them as float32)"
                )
            target[i, frames] = values
    return MouseData(
        **sel.metadata(mouse),
        videos=held["videos"],
        behavior=held["behavior"],
        pupil_center=held["pupil_center"],
        responses=held.get("responses"),
        precision=norm.precision,
    )


# --- the whole mouse on the GPU ------------------------------------------------------------


@dataclass(kw_only=True)
class DeviceMouse(TrialMetadata):
    """:class:`MouseData`'s compact arrays as tensors on a device; windows are gathered there."""

    videos: torch.Tensor  # (n, T, H, W) float16
    behavior: torch.Tensor
    pupil_center: torch.Tensor
    responses: torch.Tensor | None
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


@dataclass(kw_only=True)
class ZarrMouse(TrialMetadata):
    """A mouse read window by window from its Zarr store, normalised on the fly.

    Holds metadata, the normaliser and the two tiny modalities (behaviour and pupil centre,
    a few MB per mouse, so a window costs two store reads instead of four); videos and
    responses are read per window. The store is opened on first use in each process
    (``DataLoader`` workers call :meth:`open` through :func:`worker_init`), so it pickles
    small and no handle is ever shared between processes.
    """

    store_rows: np.ndarray
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
    mouse, sel, normalizer = _selected(store, tiers, max_frames, inputs, targets)
    held = {}
    for name in ("behavior", "pupil_center"):
        raw = np.asarray(mouse.array(name)[...])[sel.store_rows]
        values = np.zeros((len(sel.store_rows), sel.length, 2), dtype=np.float32)
        for i, t in enumerate(sel.n_frames):
            normalizer.apply(name, raw[i, :t], slice(0, int(t)), out=values[i, :t])
        _check_finite(mouse, name, values)
        held[name] = values
    return ZarrMouse(
        **sel.metadata(mouse),
        store_rows=sel.store_rows,
        normalizer=normalizer,
        held=held,
        responses=responses,
    )


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
