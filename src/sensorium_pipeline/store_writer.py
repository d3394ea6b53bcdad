"""Write a converted store (layout: :mod:`store`) from trials already in memory.

:mod:`convert` writes a store from a zip archive; other sources (a Deep Lake dataset,
:mod:`deeplake_io`) produce the very same store through this writer, so that
:func:`store.open_mouse` and every later stage cannot tell them apart: the same arrays,
chunks and shards, the same per-frame and per-neuron statistics (:mod:`neuron_stats`, summed
block by block as :mod:`convert` sums them, so the bits agree), the same trials table with
repeat groups and perceptual hashes (:mod:`phash`).

It mirrors what :mod:`convert` writes at ``CONVERTER_VERSION``, and says so in the group
attributes; the Deep Lake round-trip test compares the two stores array by array, so a
change of the converter that this writer misses fails there.

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

from .convert import (
    AXES,
    COMPRESSIONS,
    CONVERTER_VERSION,
    DEFAULT_COMPRESSION,
    write_frame_statistics,
    write_neuron_statistics,
)
from .layout import MODALITIES, TRAIN, VIDEO_HEIGHT, VIDEO_WIDTH
from .neuron_stats import MEDIAN_SAMPLES, NeuronStatistics, TrialAccumulator, sample_frames
from .phash import video_phash
from .store import HASH_COLUMNS, NEURONS_NAME, STORE_FORMAT, TRIALS_NAME, ZARR_NAME, row_digest


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
    """What fixes the arrays of a store: trials, padded length, neurons, dtype, chunking, codecs."""

    n_trials: int
    t_pad: int
    n_neurons: int
    dtype: np.dtype
    chunk_frames: int
    compression: str = DEFAULT_COMPRESSION  #: a key of :data:`convert.COMPRESSIONS`

    @property
    def frames(self) -> int:
        """Frames per chunk."""
        return min(self.chunk_frames, self.t_pad)


class StoreWriter:
    """Creates the Zarr group of a store in ``folder`` and fills it trial by trial, in row order."""

    def __init__(self, folder: str | Path, shape: StoreShape, n_train: int) -> None:
        self.folder = Path(folder)
        self.shape = shape
        self.folder.mkdir(parents=True, exist_ok=True)
        self.group = zarr.open_group(str(self.folder / ZARR_NAME), mode="w", zarr_format=3)
        self.arrays = {modality: self._create(modality) for modality in MODALITIES}
        self._n_train = n_train
        self._neuron_stats = NeuronStatistics(shape.n_neurons)
        self._rows: list[dict[str, object]] = []
        self._digests: list[bytes] = []

    def _create(self, modality: str) -> zarr.Array:
        """One chunk is one trial × ``chunk_frames`` frames; one shard holds a whole trial."""
        s = self.shape
        rest = frame_shape(modality, s.n_neurons)
        shard_frames = -(-s.t_pad // s.frames) * s.frames  # a multiple of the chunk, covering T_pad
        return self.group.create_array(
            modality,
            shape=(s.n_trials, s.t_pad, *rest),
            dtype=s.dtype,
            chunks=(1, s.frames, *rest),
            shards=(1, shard_frames, *rest),
            compressors=COMPRESSIONS[s.compression][modality],
            fill_value=np.nan,
            dimension_names=("trial", *AXES[modality]),
        )

    def write_trial(self, trial_id: int, tier: str, arrays: Mapping[str, np.ndarray], valid_frames: int) -> None:
        """Store the next row: each modality time-major ``(T_pad, ...)``, cast to the store dtype.

        ``valid_frames`` are the frames before the NaN padding (the caller has checked them).
        """
        row = len(self._rows)
        dtype = self.shape.dtype
        stored = {m: np.ascontiguousarray(arrays[m], dtype=dtype) for m in MODALITIES}
        for modality in MODALITIES:
            self.arrays[modality][row] = stored[modality]
        video = np.ascontiguousarray(arrays["videos"])
        self._digests.append(hashlib.sha1(memoryview(video).cast("B"), usedforsecurity=False).digest())
        # the archive's layout (time last), as convert hashes it
        phash = video_phash(np.ascontiguousarray(np.moveaxis(video, 0, -1)), time_axis=-1, valid_frames=valid_frames)
        if tier == TRAIN:
            self._add_neuron_statistics(stored["responses"], valid_frames)
        self._rows.append(
            {
                "row": row,
                "trial_id": int(trial_id),
                "tier": str(tier),
                "valid_frames": int(valid_frames),
                "phash": phash,
                "hashes": {m: row_digest(stored[m]) for m in MODALITIES},
            }
        )

    def _add_neuron_statistics(self, responses: np.ndarray, valid_frames: int) -> None:
        """One train trial's moments, in blocks of one chunk of frames (as convert adds them)."""
        stats = TrialAccumulator(self.shape.n_neurons, sample_frames(valid_frames, self._n_train, MEDIAN_SAMPLES))
        for start in range(0, valid_frames, self.shape.frames):
            stats.add(responses[start : min(start + self.shape.frames, valid_frames)])
        self._neuron_stats.add(stats.moments())

    def write_statistics(self, statistics: Mapping[tuple[str, str], np.ndarray]) -> None:
        """Per-frame statistics keyed by ``(modality, stat)``, time-major."""
        write_frame_statistics(self.group, statistics, self.shape.dtype)

    def finish(self, attrs: Mapping[str, object], neurons: pd.DataFrame) -> pd.DataFrame:
        """Neuron statistics, group attributes and the two tables; returns the trials table."""
        if len(self._rows) != self.shape.n_trials:
            raise ValueError(f"{len(self._rows)} trials written, the store has {self.shape.n_trials}")
        write_neuron_statistics(self.group, self._neuron_stats)
        self.group.attrs.update(
            {
                **attrs,
                "format": STORE_FORMAT,
                "converter_version": CONVERTER_VERSION,
                "compression": self.shape.compression,
            }
        )
        first_seen: dict[bytes, int] = {}
        groups = np.array([first_seen.setdefault(d, len(first_seen)) for d in self._digests], dtype=np.int64)
        trials = pd.DataFrame(
            {
                "row": np.array([r["row"] for r in self._rows], dtype=np.int64),
                "trial_id": np.array([r["trial_id"] for r in self._rows], dtype=np.int64),
                "tier": [r["tier"] for r in self._rows],
                "valid_frames": np.array([r["valid_frames"] for r in self._rows], dtype=np.int64),
                "stimulus_group": groups,
                "video_phash": np.array([r["phash"] for r in self._rows], dtype=np.int64),
                **{HASH_COLUMNS[m]: [r["hashes"][m] for r in self._rows] for m in MODALITIES},
            }
        )
        trials.to_parquet(self.folder / TRIALS_NAME, index=False)
        neurons.to_parquet(self.folder / NEURONS_NAME, index=False)
        return trials
