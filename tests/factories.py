"""Small stores and predictions built directly in the documented layout, for unit tests.

End-to-end tests use the simulated mouse; these factories only serve tests of one stage
that should not depend on the simulator or the converter.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from sensorium_pipeline.layout import MODALITIES, STATISTICS, VIDEO_HEIGHT, VIDEO_WIDTH
from sensorium_pipeline.store import NEURONS_NAME, STORE_FORMAT, TRIALS_NAME, ZARR_NAME


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
