"""Where each mouse's window source lives: on the GPU, in RAM, or read lazily from its store.

:func:`load_sources` picks one per mouse (``mode="auto"``: device if it fits there, else RAM if
it fits there, else lazy), from what :func:`held_bytes` says a mouse takes and the free memory;
:func:`released_tiers` leaves out tiers whose responses are withheld.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.normalizer import check_options
from ..data.sources import (
    RESPONSE_DTYPES,
    DeviceMouse,
    MouseData,
    Selection,
    TrialMetadata,
    ZarrMouse,
    load_mouse,
    open_lazy,
)
from ..data.store import MouseStore, open_mouse
from ..errors import ConfigError, StoreError
from ..layout import LABELLED_TIERS, MAX_FRAMES

logger = logging.getLogger(__name__)

#: ``load_sources`` modes.
MODES: tuple[str, ...] = ("auto", "ram", "device", "lazy")
#: Share of the free RAM (or free GPU memory) that ``mode="auto"`` lets the held mice take.
MEMORY_FRACTION = 0.6


def held_bytes(
    store: str | Path | MouseStore, tiers: Sequence[str], *, response_dtype: str = RESPONSE_DTYPES[0],
    max_frames: int = MAX_FRAMES,
) -> int:
    """Bytes :func:`load_mouse` would hold for these tiers (read from the metadata only)."""
    mouse = store if isinstance(store, MouseStore) else open_mouse(store)
    sel = Selection.of(mouse, tiers, max_frames)
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
    store: MouseStore, tiers: Sequence[str], *, probes: int = 4
) -> list[str]:
    """The tiers of ``tiers`` whose responses the archive releases. Withheld test responses are
    all zeros (the new mice's test tiers), so a tier whose ``probes`` evenly spaced trials are
    all zero is left out, with a note in the log; a tier with no trial is kept (it adds none)."""
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
                logger.info(f"{store.path}: responses of tier {tier} are withheld (all zero); not trained on")
                continue
        kept.append(tier)
    return kept


def load_sources(
    store_dirs: Sequence[str | Path],
    tiers: Sequence[str] | Callable[[MouseStore], Sequence[str]] = LABELLED_TIERS,
    *,
    mode: str = "auto",
    device: torch.device | str = "cpu",
    response_dtype: str = RESPONSE_DTYPES[0],
    max_frames: int = MAX_FRAMES,
    memory_fraction: float = MEMORY_FRACTION,
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
            logger.info(f"{store.mouse}: {need / 2**30:.2f} GiB held -> {chosen}")
        if chosen == "lazy":
            source: Any = open_lazy(store, mouse_tiers, max_frames=max_frames, inputs=inputs, targets=targets)
        else:
            source = load_mouse(store, mouse_tiers, max_frames=max_frames, response_dtype=response_dtype,
                                inputs=inputs, targets=targets)
            if chosen == "device":
                source = source.to_device(device)
        _add(out, source, path)
    return out


def _add(out: dict, source: TrialMetadata, path: str | Path) -> None:
    if source.mouse in out:
        raise StoreError(path, f"mouse {source.mouse!r} is given twice (also {out[source.mouse].path})")
    out[source.mouse] = source
