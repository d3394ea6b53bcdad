"""Archive (zip) → converted store: the one-off conversion every later stage reads from.

The archive is validated from its headers first (:func:`archive.open_archive`); then
:func:`store_writer.write_store` writes the store, reading the trials through
:class:`ArchiveTrials`, which checks each one (CRC, NaN only as end padding, no ±inf) and
names the archive member at fault. The format, the statistics and the verification are the
writer's (:mod:`store_writer`); this module only reads the archive.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ArchiveError
from ..layout import MODALITIES, STATISTICS, statistic_member
from .archive import Archive, open_archive
from .response_stats import response_statistics
from .store import open_mouse
from .store_writer import DEFAULT_COMPRESSION, StoreOptions, time_major, write_store

logger = logging.getLogger(__name__)


def convert_archive(
    archive: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = StoreOptions.dtype,
    chunk_frames: int = StoreOptions.chunk_frames,
    verify_trials: int = StoreOptions.verify_trials,
    sha256: str | None = None,
    workers: int = StoreOptions.workers,
    compression: str = DEFAULT_COMPRESSION,
    check_space: bool = True,
) -> dict:
    """Validate ``archive`` and write its store to ``out_dir``; return a summary.

    ``check_space`` refuses to start (or to go on) when the file system cannot hold the
    store; without it only an actual full disk stops the conversion (both raise
    :class:`StoreError` naming the path, the space needed and the space free).

    ``sha256`` is the archive's recorded checksum (computed when not given) and is stored
    in the group attributes, so a store always says which download it came from.
    Raises :class:`ArchiveError` for a broken archive and :class:`StoreError` when the
    written store does not read back as the archive; ``out_dir`` is then left untouched.
    """
    options = StoreOptions(dtype, chunk_frames, verify_trials, compression, workers)
    options.check()
    archive, out_dir = Path(archive), Path(out_dir)
    start = time.perf_counter()
    with open_archive(archive) as source:
        if source.root != archive.stem:
            raise ArchiveError(
                archive,
                f"root folder {source.root!r} differs from the zip's name {archive.stem!r} "
                "(the folder, the zip stem and the submission's mouse name must be the same)",
            )
        logger.info(
            "validated %s: %d trials, %d neurons, T_pad %d, %s",
            archive.name, source.n_trials, source.n_neurons, source.t_pad, source.dtype.name,
        )  # fmt: skip
        checksum = sha256 or file_sha256(archive)
        written = write_store(ArchiveTrials(source, checksum), out_dir, options, check_space=check_space)
        seconds = time.perf_counter() - start
        summary = {
            **source.summary(),
            "store": str(out_dir),
            "dtype": np.dtype(dtype).name,
            "chunk_frames": chunk_frames,
            "compression": compression,
            "stimulus_groups": int(written.trials["stimulus_group"].nunique()),
            "verified_trials": written.verified,
            "archive_sha256": checksum,
            "seconds": round(seconds, 2),
            "trials_per_s": round(source.n_trials / max(seconds, 1e-9), 1),
        }
    logger.info(
        "wrote %s in %.1f s (%s trials/s), verified %d trials", out_dir, seconds, summary["trials_per_s"], written.verified
    )
    responses = response_statistics(open_mouse(out_dir))  # the scale the models will fit
    logger.info("%s", responses.describe())
    summary["responses"] = responses.to_dict()
    return summary


class ArchiveTrials:
    """An open archive as the writer's :class:`store_writer.TrialSource`."""

    def __init__(self, archive: Archive, sha256: str) -> None:
        self.archive = archive
        self.path = archive.path
        self.n_trials, self.t_pad, self.n_neurons = archive.n_trials, archive.t_pad, archive.n_neurons
        self.trial_ids = archive.trial_ids
        self.row_tiers = [str(tier) for tier in archive.tiers[self.trial_ids]]
        self.mouse = archive.root
        self.source_dtype = archive.dtype.name
        self.archive_sha256 = sha256
        self.extra_attributes: dict[str, object] = {}

    def read_trial(self, trial_id: int) -> tuple[dict[str, np.ndarray], int]:
        trial = self.archive.read_trial(trial_id)
        return trial.arrays, trial.valid_frames

    def release(self, trial_id: int) -> None:
        self.archive.evict(trial_id)

    def range_error(self, modality: str, trial_id: int, frame: int, dtype: np.dtype) -> ArchiveError:
        member = f"{self.archive.root}/data/{modality}/{int(trial_id)}.npy"
        return ArchiveError(
            self.path, f"member {member}: frame {frame} holds a value beyond the range of "
            f"{dtype.name} (convert with conversion.dtype: float64)",
        )  # fmt: skip

    def frame_statistics(self, dtype: np.dtype) -> dict[tuple[str, str], np.ndarray]:
        """The per-frame statistics in the store dtype; NaN (frames no train trial reaches) passes,
        ±inf (in the archive, or a float64 value beyond float32) is an error naming the member."""
        statistics = {}
        for modality in MODALITIES:
            for stat in STATISTICS:
                with np.errstate(over="ignore"):
                    values = time_major(self.archive.statistic(modality, stat), dtype)
                if np.isinf(values).any():
                    frame = int(np.flatnonzero(np.isinf(values).reshape(len(values), -1).any(axis=1))[0])
                    raise ArchiveError(
                        self.path, f"member {statistic_member(self.archive.root, modality, stat)}: frame {frame} "
                        f"holds an infinite value (or one beyond the range of {dtype.name})",
                    )  # fmt: skip
                statistics[modality, stat] = values
        return statistics

    def neurons(self) -> pd.DataFrame:
        """``unit_id, x, y, z`` in the archive's order (the order of the responses' neuron axis)."""
        coords = self.archive.coordinates
        native = np.dtype(np.float32) if coords.dtype == np.float16 else coords.dtype.newbyteorder("=")
        coords = coords.astype(native, copy=False)  # Parquet takes neither big-endian nor half floats
        return pd.DataFrame(
            {"unit_id": self.archive.unit_ids.astype(np.int64), "x": coords[:, 0], "y": coords[:, 1], "z": coords[:, 2]}
        )


def file_sha256(path: str | Path, block: int = 8 * 2**20) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(block):
            digest.update(chunk)
    return digest.hexdigest()
