"""Write a converted store (layout: :mod:`store`) from arrays already in memory.

:mod:`convert` writes a store from a zip archive; other sources (a Deep Lake dataset,
:mod:`deeplake_io`) produce the very same layout through this writer, so that
:func:`store.open_mouse` cannot tell them apart. Array settings (chunks, shards,
compressor, fill value, dimension names) are the ones :mod:`convert` uses.

The caller owns atomicity: it creates the writer inside a temporary folder
(:func:`atomic.atomic_path`) and renames it into place when everything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from .convert import COMPRESSOR
from .layout import MODALITIES, STATISTICS, VIDEO_HEIGHT, VIDEO_WIDTH
from .store import NEURONS_NAME, STORE_FORMAT, TRIALS_NAME, ZARR_NAME

#: Names of the axes after the trial axis, per modality (the store's dimension names).
AXES: dict[str, tuple[str, ...]] = {
    "videos": ("time", "height", "width"),
    "responses": ("time", "neuron"),
    "behavior": ("time", "channel"),
    "pupil_center": ("time", "channel"),
}


def frame_shape(modality: str, n_neurons: int) -> tuple[int, ...]:
    """Shape of one frame of ``modality`` in the store (the axes after time)."""
    return {
        "videos": (VIDEO_HEIGHT, VIDEO_WIDTH),
        "responses": (n_neurons,),
        "behavior": (2,),
        "pupil_center": (2,),
    }[modality]


@dataclass(frozen=True)
class StoreShape:
    """What fixes the arrays of a store: trials, padded length, neurons, dtype, chunking."""

    n_trials: int
    t_pad: int
    n_neurons: int
    dtype: np.dtype
    chunk_frames: int


class StoreWriter:
    """Creates the Zarr group of a store in ``folder`` and fills it row by row."""

    def __init__(self, folder: str | Path, shape: StoreShape) -> None:
        self.folder = Path(folder)
        self.shape = shape
        self.folder.mkdir(parents=True, exist_ok=True)
        self.group = zarr.open_group(str(self.folder / ZARR_NAME), mode="w", zarr_format=3)
        self.arrays = {modality: self._create(modality) for modality in MODALITIES}

    def _create(self, modality: str) -> zarr.Array:
        """One chunk is one trial × ``chunk_frames`` frames; one shard holds a whole trial."""
        s = self.shape
        rest = frame_shape(modality, s.n_neurons)
        frames = min(s.chunk_frames, s.t_pad)
        shard_frames = -(-s.t_pad // frames) * frames  # a multiple of the chunk, covering T_pad
        return self.group.create_array(
            modality,
            shape=(s.n_trials, s.t_pad, *rest),
            dtype=s.dtype,
            chunks=(1, frames, *rest),
            shards=(1, shard_frames, *rest),
            compressors=COMPRESSOR,
            fill_value=np.nan,
            dimension_names=("trial", *AXES[modality]),
            config={"write_empty_chunks": True},
        )

    def write_row(self, row: int, trial: Mapping[str, np.ndarray]) -> None:
        """Store one trial, each modality time-major ``(T_pad, ...)``, cast to the store dtype."""
        for modality in MODALITIES:
            self.arrays[modality][row] = np.ascontiguousarray(trial[modality], dtype=self.shape.dtype)

    def write_statistics(self, statistics: Mapping[tuple[str, str], np.ndarray]) -> None:
        """Per-frame statistics keyed by ``(modality, stat)``, time-major."""
        folder = self.group.require_group("statistics")
        for modality in MODALITIES:
            sub = folder.require_group(modality)
            for stat in STATISTICS:
                data = np.ascontiguousarray(statistics[modality, stat], dtype=self.shape.dtype)
                array = sub.create_array(
                    stat,
                    shape=data.shape,
                    dtype=self.shape.dtype,
                    chunks=data.shape,
                    compressors=COMPRESSOR,
                    fill_value=np.nan,
                    dimension_names=AXES[modality],
                )
                array[...] = data

    def finish(self, attrs: Mapping[str, object], trials: pd.DataFrame, neurons: pd.DataFrame) -> None:
        """Group attributes (``format`` is set here) and the two tables."""
        self.group.attrs.update({**attrs, "format": STORE_FORMAT})
        trials.to_parquet(self.folder / TRIALS_NAME, index=False)
        neurons.to_parquet(self.folder / NEURONS_NAME, index=False)


def stimulus_groups(digests: list[bytes]) -> np.ndarray:
    """Group number per trial, numbered in order of first appearance (as :mod:`convert` does)."""
    first_seen: dict[bytes, int] = {}
    return np.array([first_seen.setdefault(d, len(first_seen)) for d in digests], dtype=np.int64)


def video_digest(video: np.ndarray) -> bytes:
    """Digest of a video's bytes: equal digests mean the same stimulus shown again."""
    data = np.ascontiguousarray(video)
    return hashlib.sha1(memoryview(data).cast("B"), usedforsecurity=False).digest()
