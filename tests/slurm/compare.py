"""What two runs of the workflow must agree on: scores, per-neuron scores and predictions."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import zarr


def zarr_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a Zarr store, by its path inside the store."""
    with warnings.catch_warnings():  # Snakemake's .snakemake_timestamp file in a directory output
        warnings.simplefilter("ignore", UserWarning)
        group = zarr.open_group(str(path), mode="r")
        return {name: np.asarray(member[...]) for name, member in group.members(max_depth=None)
                if isinstance(member, zarr.Array)}


def differences(left: Path, right: Path) -> list[str]:
    """Results of ``left`` that are missing from ``right`` or differ there (empty when the runs agree)."""
    found: list[str] = []
    scores = sorted((left / "results" / "scores").glob("*.json"))
    predictions = sorted((left / "results" / "predictions").glob("*/*.zarr"))
    if not scores or not predictions:
        return [f"{left}: no scores or predictions to compare"]
    for path in scores:
        other = right / path.relative_to(left)
        if not other.exists() or json.loads(path.read_text()) != json.loads(other.read_text()):
            found.append(str(path.relative_to(left)))
    for path in sorted((left / "results" / "scores").glob("*.parquet")):
        other = right / path.relative_to(left)
        if not other.exists() or not pd.read_parquet(path).equals(pd.read_parquet(other)):
            found.append(str(path.relative_to(left)))
    for path in predictions:
        other = right / path.relative_to(left)
        mine = zarr_arrays(path)
        theirs = zarr_arrays(other) if other.exists() else {}
        if not mine or mine.keys() != theirs.keys() or any(
            not np.array_equal(mine[key], theirs[key], equal_nan=True) for key in mine
        ):
            found.append(str(path.relative_to(left)))
    return found
