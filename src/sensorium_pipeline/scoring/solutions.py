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

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_path
from ..errors import PathError

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


_MATRIX = pa.list_(pa.list_(pa.float32()))
#: The table's Arrow schema (the simulator's streamed writer uses it too).
SCHEMA = pa.schema(
    [
        ("mouse", pa.string()),
        ("tier", pa.string()),
        ("trial_indices", pa.int64()),
        ("stimulus_id", pa.string()),
        ("stimulus_type", pa.string()),
        ("neuron_ids", pa.list_(pa.int64())),
        ("responses", _MATRIX),
        ("rates", _MATRIX),
    ]
)


def solutions_table(rows: list[dict]) -> pa.Table:
    """Solution rows (dicts with the columns above; arrays as numpy, ``rates`` may be None) as
    an Arrow table, built from the arrays' buffers (Python lists of a full-size mouse would
    need tens of GB)."""
    ids = [np.asarray(r["neuron_ids"], dtype=np.int64) for r in rows]
    neuron_ids = pa.ListArray.from_arrays(
        pa.array(_offsets([len(i) for i in ids])), pa.array(np.concatenate([np.zeros(0, np.int64), *ids]))
    )
    return pa.table(
        [
            pa.array([r["mouse"] for r in rows], pa.string()),
            pa.array([r["tier"] for r in rows], pa.string()),
            pa.array([int(r["trial_indices"]) for r in rows], pa.int64()),
            pa.array([str(r["stimulus_id"]) for r in rows], pa.string()),
            pa.array([str(r["stimulus_type"]) for r in rows], pa.string()),
            neuron_ids,
            _nested([r["responses"] for r in rows]),
            _nested([r.get("rates") for r in rows]),
        ],
        schema=SCHEMA,
    )


def _offsets(lengths: list[int] | np.ndarray) -> np.ndarray:
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    if offsets[-1] >= 2**31:
        raise ValueError(f"{offsets[-1]} values in one table: more than list offsets can address")
    return offsets.astype(np.int32)


def _nested(matrices: list[np.ndarray | None]) -> pa.Array:
    """``list<list<float32>>`` of 2-D arrays (rows become the inner lists; None a null row)."""
    arrays = [None if m is None else np.asarray(m, dtype=np.float32) for m in matrices]
    shapes = [(0, 0) if a is None else a.shape for a in arrays]
    inner_lengths = np.concatenate([np.zeros(0, np.int64), *(np.full(rows, cols, np.int64) for rows, cols in shapes)])
    values = np.concatenate([np.zeros(0, np.float32), *(a.ravel() for a in arrays if a is not None)])
    inner = pa.ListArray.from_arrays(pa.array(_offsets(inner_lengths)), pa.array(values, type=pa.float32()))
    mask = pa.array([m is None for m in matrices], pa.bool_())
    return pa.ListArray.from_arrays(pa.array(_offsets([rows for rows, _ in shapes])), inner, mask=mask)


def write_solutions(path: str | Path, rows: list[dict]) -> None:
    """Write solution rows (dicts with the columns above; arrays as numpy) atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(solutions_table(rows), tmp, compression="brotli")


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


def _scalars(column: pa.ChunkedArray) -> Iterator[pa.Scalar]:
    for chunk in column.chunks:
        for i in range(len(chunk)):
            yield chunk[i]


def _row_values(column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """Each row of a ``list<...>`` column as a numpy array of its values (None for null rows),
    taken from the Arrow buffers: Python lists of a full-size mouse would need tens of GB."""
    return [s.values.to_numpy(zero_copy_only=False) if s.is_valid else None for s in _scalars(column)]


def _matrices(path: Path, name: str, column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """Each row of a ``list<list<float32>>`` column as a float32 ``(N, T)`` array (or None)."""
    out: list[np.ndarray | None] = []
    for row, scalar in enumerate(_scalars(column)):
        if not scalar.is_valid:
            out.append(None)
            continue
        rows = scalar.values  # one list per neuron
        lengths = rows.value_lengths().to_numpy(zero_copy_only=False) if len(rows) else np.zeros(0, np.int64)
        if lengths.size and (lengths != lengths[0]).any():
            raise SolutionsError(path, f"row {row}: {name} has neurons of different lengths")
        values = rows.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        out.append(values.reshape(len(rows), int(lengths[0]) if lengths.size else 0))
    return out
