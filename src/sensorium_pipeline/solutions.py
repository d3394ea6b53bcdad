"""Ground-truth tables ("solutions"), in the shape of the competition's scorer.

One Parquet file (brotli) per mouse, one row per scored trial::

    mouse          str     dataset folder name
    tier           str     oracle, live_test_main, ...
    trial_indices  int64   the trial id (``i`` of ``data/*/i.npy``)
    stimulus_id    str     equal for repeats of one stimulus (correlation to average, FEVE)
    stimulus_type  str     ``natural`` or an out-of-distribution family (bonus track)
    neuron_ids     list<int64>            the mouse's unit ids
    responses      list<list<float32>>    (N, T_valid) raw responses, time last, as in the archive
    rates          list<list<float32>>    (N, T_valid) noise-free expected responses, or null

The simulator writes one beside each simulated archive (with ``rates``, from which the
noise ceiling follows); for real mice the evaluation builds the same table from the
responses the archive releases. Normalisation and the evaluation window are applied
when scoring, never stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .errors import PathError

SOLUTION_COLUMNS = (
    "mouse",
    "tier",
    "trial_indices",
    "stimulus_id",
    "stimulus_type",
    "neuron_ids",
    "responses",
    "rates",
)


class SolutionsError(PathError):
    """A solutions file is malformed."""


def _matrix_column(matrices: list[np.ndarray | None]) -> pa.Array:
    value_type = pa.list_(pa.list_(pa.float32()))
    return pa.array(
        [None if m is None else np.asarray(m, dtype=np.float32).tolist() for m in matrices], type=value_type
    )


def write_solutions(path: str | Path, rows: list[dict]) -> None:
    """Write solution rows (dicts with the columns above; arrays as numpy) atomically."""
    table = pa.table(
        {
            "mouse": pa.array([r["mouse"] for r in rows], pa.string()),
            "tier": pa.array([r["tier"] for r in rows], pa.string()),
            "trial_indices": pa.array([int(r["trial_indices"]) for r in rows], pa.int64()),
            "stimulus_id": pa.array([str(r["stimulus_id"]) for r in rows], pa.string()),
            "stimulus_type": pa.array([str(r["stimulus_type"]) for r in rows], pa.string()),
            "neuron_ids": pa.array(
                [np.asarray(r["neuron_ids"], dtype=np.int64).tolist() for r in rows], pa.list_(pa.int64())
            ),
            "responses": _matrix_column([r["responses"] for r in rows]),
            "rates": _matrix_column([r.get("rates") for r in rows]),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="brotli")


def read_solutions(path: str | Path) -> pd.DataFrame:
    """Read a solutions file; ``responses``/``rates`` become float32 (N, T) arrays (or None)."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise SolutionsError(path, f"cannot read solutions Parquet: {exc}") from exc
    missing = [c for c in SOLUTION_COLUMNS if c not in table.column_names]
    if missing:
        raise SolutionsError(path, f"missing columns {missing}")
    frame = table.select(list(SOLUTION_COLUMNS[:5])).to_pandas()
    frame["neuron_ids"] = [None if v is None else v.astype(np.int64) for v in _row_values(table.column("neuron_ids"))]
    for column in ("responses", "rates"):
        frame[column] = _matrices(path, column, table.column(column))
    return frame


def _row_values(column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """Each row of a ``list<...>`` column as a numpy array of its values (None for null rows),
    taken from the Arrow buffers: Python lists of a full-size mouse would need tens of GB."""
    out: list[np.ndarray | None] = []
    for chunk in column.chunks:
        for i in range(len(chunk)):
            scalar = chunk[i]
            out.append(scalar.values.to_numpy(zero_copy_only=False) if scalar.is_valid else None)
    return out


def _matrices(path: Path, name: str, column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """Each row of a ``list<list<float32>>`` column as a float32 ``(N, T)`` array (or None)."""
    out: list[np.ndarray | None] = []
    for chunk in column.chunks:
        for i in range(len(chunk)):
            scalar = chunk[i]
            if not scalar.is_valid:
                out.append(None)
                continue
            rows = scalar.values  # one list per neuron
            lengths = rows.value_lengths().to_numpy(zero_copy_only=False) if len(rows) else np.zeros(0, np.int64)
            if lengths.size and (lengths != lengths[0]).any():
                raise SolutionsError(path, f"row {len(out)}: {name} has neurons of different lengths")
            values = rows.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            out.append(values.reshape(len(rows), int(lengths[0]) if lengths.size else 0))
    return out
