"""Small stores and predictions built directly in the documented layout, for unit tests.

End-to-end tests use the simulated mouse; these factories only serve tests of one stage
that should not depend on the simulator or the converter.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from sensorium_pipeline.data.store import NEURONS_NAME, STORE_FORMAT, TRIALS_NAME, ZARR_NAME
from sensorium_pipeline.layout import MODALITIES, STATISTICS, VIDEO_HEIGHT, VIDEO_WIDTH
from sensorium_pipeline.simulate.config import REPEATED_TIERS, SimulationConfig
from sensorium_pipeline.simulate.generate import simulate_mouse


def _nan_statistics(data: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "mean": np.nanmean(data, 0),
        "std": np.nanstd(data, 0),
        "min": np.nanmin(data, 0),
        "max": np.nanmax(data, 0),
        "median": np.nanmedian(data, 0),
    }


def make_store(
    path: str | Path,
    *,
    mouse: str = "mouse-a",
    tiers: list[str] | None = None,
    n_neurons: int = 12,
    t_pad: int = 40,
    valid_frames: int | list[int] = 36,
    seed: int = 0,
) -> Path:
    """Write a random store (responses ≥ 0) and return its folder."""
    rng = np.random.default_rng(seed)
    tiers = tiers or ["train"] * 8 + ["oracle"] * 4 + ["live_test_main"] * 2 + ["final_test_main"] * 2
    n = len(tiers)
    valid = np.broadcast_to(np.asarray(valid_frames), (n,)).astype(np.int64)
    path = Path(path)
    group = zarr.open_group(str(path / ZARR_NAME), mode="w")
    shapes = {
        "videos": (VIDEO_HEIGHT, VIDEO_WIDTH),
        "responses": (n_neurons,),
        "behavior": (2,),
        "pupil_center": (2,),
    }
    arrays = {}
    for modality in MODALITIES:
        data = rng.random((n, t_pad, *shapes[modality]), dtype=np.float32)
        if modality == "videos":
            data *= 255
        for i, v in enumerate(valid):
            data[i, v:] = np.nan
        arrays[modality] = data
        arr = group.create_array(modality, shape=data.shape, dtype="float32", chunks=(1, t_pad, *shapes[modality]))
        arr[...] = data
    train = np.array([t == "train" for t in tiers])
    for modality in MODALITIES:
        data = arrays[modality][train]
        with warnings.catch_warnings():  # frames no train trial reaches are NaN, as in the archive
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = _nan_statistics(data)
        for stat in STATISTICS:
            arr = group.create_array(f"statistics/{modality}/{stat}", shape=stats[stat].shape, dtype="float32")
            arr[...] = stats[stat]
    group.attrs.update(
        {
            "mouse": mouse,
            "format": STORE_FORMAT,
            "t_pad": t_pad,
            "n_neurons": n_neurons,
            "source_dtype": "float32",
            "archive_sha256": "0" * 64,
        }
    )
    trial_ids = np.arange(n, dtype=np.int64) * 2 + 1
    pd.DataFrame(
        {
            "row": np.arange(n, dtype=np.int64),
            "trial_id": trial_ids,
            "tier": tiers,
            "valid_frames": valid,
            "stimulus_group": np.arange(n, dtype=np.int64),
        }
    ).to_parquet(path / TRIALS_NAME)
    coords = rng.integers(0, 600, size=(n_neurons, 3))
    coords[:, 2] = 200 + 25 * rng.integers(0, 10, size=n_neurons)
    pd.DataFrame(
        {"unit_id": np.arange(1, n_neurons + 1) * 3, "x": coords[:, 0], "y": coords[:, 1], "z": coords[:, 2]}
    ).to_parquet(path / NEURONS_NAME)
    return path


# --- small simulated archives and ways to break them (archive and convert tests) ---

MOUSE = "dynamic90009-1-1-Test-0"
N_NEURONS = 20
FRAMES = 60  # natural trials; bonus trials run 50-70 frames, so T_pad is up to 70


def withhold_responses(store: Path, tiers: list[str] | tuple[str, ...]) -> None:
    """Set the responses of every trial of ``tiers`` to zero, as the archives withhold test
    tiers. Every chunk stays on disk, as ``convert`` writes them: zarr would otherwise drop an
    all-zero chunk, which the store reports as damage."""
    trials = pd.read_parquet(store / TRIALS_NAME)
    with zarr.config.set({"array.write_empty_chunks": True}):  # read when the array is opened
        responses = zarr.open_group(str(store / ZARR_NAME), mode="r+")["responses"]
        for row in trials.loc[trials["tier"].isin(list(tiers)), "row"]:
            responses[int(row)] = 0.0


def small_config(**overrides: object) -> SimulationConfig:
    """A mouse that simulates in well under a second: 42 trials, 4 ids without files."""
    settings = {
        "mouse": MOUSE,
        "n_neurons": N_NEURONS,
        "n_train": 12,
        "frames": FRAMES,
        "bonus_frames": [50, 70],
        "n_calibration": 2,
        "tiers": {tier: {"n_stimuli": 2, "n_repeats": 3} for tier in REPEATED_TIERS},
    }
    return SimulationConfig.from_dict({**settings, **overrides})


def simulate_small(folder: Path, **overrides: object) -> Path:
    """Simulate the small mouse into ``folder``; return the archive (solutions lie beside it)."""
    config = small_config(**overrides)
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"{config.mouse}.zip"
    simulate_mouse(config, archive, folder / f"{config.mouse}.solutions.parquet")
    return archive


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def load_member(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def rewrite_zip(
    source: Path,
    target: Path,
    *,
    replace: dict[str, object] | None = None,
    drop: tuple[str, ...] = (),
    add: dict[str, bytes] | None = None,
) -> Path:
    """Copy ``source`` to ``target`` member by member, changing some on the way.

    ``replace`` maps a member name to new bytes, or to a function of the old array that
    returns the new one.
    """
    replace = replace or {}
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            if info.filename in drop:
                continue
            data = src.read(info)
            change = replace.get(info.filename)
            if callable(change):
                data = npy_bytes(change(load_member(data)))
            elif change is not None:
                data = change
            dst.writestr(info, data)
        for name, data in (add or {}).items():
            dst.writestr(name, data)
    return target


def flip_member_bytes(path: Path, member: str, skip: int = 200) -> None:
    """Corrupt a stored member in place: flip bytes of its data, so its CRC no longer matches."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    assert info.compress_type == zipfile.ZIP_STORED and info.file_size > skip + 8
    with open(path, "r+b") as stream:
        stream.seek(info.header_offset)
        local = struct.unpack("<4s5H3L2H", stream.read(30))
        start = info.header_offset + 30 + local[9] + local[10]  # name and extra field lengths
        stream.seek(start + skip)
        chunk = bytearray(stream.read(8))
        stream.seek(start + skip)
        stream.write(bytes(b ^ 0xFF for b in chunk))



@contextmanager
def captured_logs(
    on_message: Callable[[str], object] | None = None, name: str = "sensorium_pipeline"
) -> Iterator[list[str]]:
    """The messages the package logs at INFO and above while the block runs (for module-scoped
    fixtures, where pytest's function-scoped ``caplog`` is not available). ``on_message`` is
    called with each as it is logged; what it raises comes out of the logging call (a test
    stops a run at a given line that way)."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())
            if on_message is not None:
                on_message(messages[-1])

    logger, handler = logging.getLogger(name), _Collect(logging.INFO)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
