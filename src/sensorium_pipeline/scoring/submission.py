"""The submission files of the competition (docs/submission.md) and a validator with the scorer's rules.

Written into ``out_dir``:

    main_track.zip    predictions_live_main.parquet.brotli, predictions_final_main.parquet.brotli
    bonus_live.zip    predictions_live_test_bonus_ood.parquet.brotli
    bonus_final.zip   predictions_final_test_bonus_ood.parquet.brotli
    csv/<mouse>/<tier>.csv   the starter kit's CSV fallback, one per mouse and test tier

Each Parquet file (pyarrow, brotli) has exactly the columns ``mouse`` (the dataset folder
name, ``store.mouse``), ``trial_indices`` (int64), ``prediction`` (list<list<float32>>,
(N, T_eval), neurons in ``unit_ids`` order) and ``neuron_ids`` (list<int64>), one row per
(mouse, trial), sorted by trial id within a mouse. ``<mouse>`` of the CSV folder is the key of
the mapping passed in (the configured mouse name); a CSV has ``file_name`` (``<id>.npy``) and
``predictions``, the full (N, T_eval) array as a JSON list of lists (never pandas' truncated
printout). T_eval is the store's usable frames of the trial cut by the evaluation window.

The bytes are reproducible: every zip member has a fixed timestamp and mode, and the Parquet
writer's settings (format version, brotli level, page and row-group sizes, statistics) are
fixed here, so the same predictions always give the same sha256.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_path
from ..data.archive import ZIP_DATE_TIME
from ..data.store import MouseStore
from ..errors import PredictionError, SubmissionError
from ..layout import FINAL_BONUS, FINAL_MAIN, LIVE_BONUS, LIVE_MAIN, TEST_TIERS
from .metrics import EvaluationWindow
from .predictions import Predictions

#: Zip archive → {member at its root → tier}.
ZIPS: dict[str, dict[str, str]] = {
    "main_track.zip": {
        "predictions_live_main.parquet.brotli": LIVE_MAIN,
        "predictions_final_main.parquet.brotli": FINAL_MAIN,
    },
    "bonus_live.zip": {"predictions_live_test_bonus_ood.parquet.brotli": LIVE_BONUS},
    "bonus_final.zip": {"predictions_final_test_bonus_ood.parquet.brotli": FINAL_BONUS},
}
CSV_DIR = "csv"
CSV_HEADER = ["file_name", "predictions"]
COLUMNS: tuple[str, ...] = ("mouse", "trial_indices", "prediction", "neuron_ids")
SCHEMA = pa.schema(
    [
        ("mouse", pa.string()),
        ("trial_indices", pa.int64()),
        ("prediction", pa.list_(pa.list_(pa.float32()))),
        ("neuron_ids", pa.list_(pa.int64())),
    ]
)
#: Trials per Parquet row group / batch (bounds memory for ~8000 neurons).
BATCH_TRIALS = 16
#: Every setting of the Parquet writer that changes its bytes, fixed (pyarrow is pinned).
PARQUET_OPTIONS: dict[str, object] = {
    "compression": "brotli",
    "compression_level": 5,
    "version": "2.6",
    "data_page_version": "1.0",
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_size": 1 << 20,
    "store_schema": True,
    "write_page_index": False,
    "write_page_checksum": False,
}
#: Expected Arrow types per column, as the validator names them.
COLUMN_TYPES: dict[str, str] = {
    "mouse": "string",
    "trial_indices": "int64 (an integer)",
    "prediction": "list<list<float32>> (a list of lists of numbers)",
    "neuron_ids": "list<int64> (a list of integers)",
}
#: Problems listed per file in the error message (all are kept on ``error.problems``).
MAX_LISTED = 20
_FILE_NAME = re.compile(r"^(\d+)\.npy$")


def _tier_trials(store: MouseStore, tier: str, window: EvaluationWindow) -> list[tuple[int, int, int]]:
    """``(trial_id, usable_frames, T_eval)`` of the store's trials in ``tier``, sorted by trial id."""
    usable = store.usable_frames()
    mask = (store.trials["tier"] == tier).to_numpy()
    trial_ids = store.trials["trial_id"].to_numpy(dtype=np.int64)[mask]
    return sorted((int(t), int(n), window.length(int(n))) for t, n in zip(trial_ids, usable[mask], strict=True))


def _neuron_order(preds: Predictions, store: MouseStore, source: str) -> np.ndarray:
    """Columns of ``preds.values`` in the store's ``unit_ids`` order."""
    ids = preds.unit_ids
    if len(np.unique(ids)) != len(ids):
        raise PredictionError(source, "duplicate unit_ids")
    if set(ids.tolist()) != set(store.unit_ids.tolist()):
        raise PredictionError(source, f"unit_ids differ from those of the store {store.path}")
    column = {int(u): i for i, u in enumerate(ids)}
    return np.array([column[int(u)] for u in store.unit_ids], dtype=np.int64)


def _submission_matrices(
    preds: Predictions, store: MouseStore, tier: str, window: EvaluationWindow, source: str
) -> Iterator[tuple[int, np.ndarray]]:
    """``(trial_id, (N, T_eval) float32)`` for every store trial of ``tier``, in trial-id order."""
    order = _neuron_order(preds, store, source)
    position = {int(t): i for i, t in enumerate(preds.trial_ids)}
    trials = _tier_trials(store, tier, window)
    missing = [t for t, _, _ in trials if t not in position]
    if missing:
        raise PredictionError(source, f"no prediction for {len(missing)} trial(s) of tier {tier}: {missing[:10]}")
    for trial_id, n, _ in trials:
        i = position[trial_id]
        if int(preds.n_frames[i]) != n or preds.values.shape[1] < n:
            raise PredictionError(
                source, f"trial {trial_id} (tier {tier}): predicted {int(preds.n_frames[i])} frames, the store has {n}"
            )
        matrix = window.cut(preds.values[i], n)[:, order].T
        if not np.all(np.isfinite(matrix)):
            raise PredictionError(source, f"trial {trial_id} (tier {tier}): non-finite values in the scored frames")
        yield trial_id, np.ascontiguousarray(matrix, dtype=np.float32)


def _table(mouse: str, unit_ids: np.ndarray, batch: list[tuple[int, np.ndarray]]) -> pa.Table:
    """One Parquet batch built from buffers (no Python float lists: real mice are ~10^9 values)."""
    n_neurons = len(unit_ids)
    lengths = np.concatenate([np.full(m.shape[0], m.shape[1], dtype=np.int64) for _, m in batch])
    inner_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate([m.ravel() for _, m in batch]).astype(np.float32)
    inner = pa.ListArray.from_arrays(pa.array(inner_offsets, pa.int32()), pa.array(flat, pa.float32()))
    outer_offsets = (np.arange(len(batch) + 1) * n_neurons).astype(np.int32)
    prediction = pa.ListArray.from_arrays(pa.array(outer_offsets, pa.int32()), inner)
    neuron_ids = pa.ListArray.from_arrays(
        pa.array(outer_offsets, pa.int32()), pa.array(np.tile(unit_ids.astype(np.int64), len(batch)), pa.int64())
    )
    columns = [
        pa.array([mouse] * len(batch), pa.string()),
        pa.array([t for t, _ in batch], pa.int64()),
        prediction.cast(SCHEMA.field("prediction").type),
        neuron_ids.cast(SCHEMA.field("neuron_ids").type),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _csv_cell(matrix: np.ndarray) -> str:
    """The full array as a JSON list of lists; float32 values round-trip exactly."""
    return json.dumps(matrix.tolist(), separators=(",", ":"))


def _write_mouse_tier(
    writer: pq.ParquetWriter,
    csv_path: Path | None,
    preds: Predictions,
    store: MouseStore,
    tier: str,
    window: EvaluationWindow,
    source: str,
) -> None:
    """Append one mouse's rows of ``tier`` to the Parquet file, in batches, and write its CSV."""
    with ExitStack() as stack:
        rows = None
        if csv_path is not None:
            csv_path.parent.mkdir(exist_ok=True)
            rows = csv.writer(stack.enter_context(open(csv_path, "w", newline="", encoding="utf-8")))
            rows.writerow(CSV_HEADER)
        batch: list[tuple[int, np.ndarray]] = []
        for trial_id, matrix in _submission_matrices(preds, store, tier, window, source):
            batch.append((trial_id, matrix))
            if rows is not None:
                rows.writerow([f"{trial_id}.npy", _csv_cell(matrix)])
            if len(batch) == BATCH_TRIALS:
                writer.write_table(_table(store.mouse, store.unit_ids, batch))
                batch = []
        if batch:
            writer.write_table(_table(store.mouse, store.unit_ids, batch))


def write_submission(
    predictions: Mapping[str, Predictions],
    stores: Mapping[str, MouseStore],
    out_dir: str | Path,
    window: EvaluationWindow,
    sources: Mapping[str, str | Path] | None = None,
    csv_fallback: bool = True,
) -> list[Path]:
    """Write the three zips and (``csv_fallback``) the CSV folder, each atomically; return their paths.

    The CSV text is ~20 bytes per value (about 14 GB per real mouse); turn it off when only
    the Parquet zips are wanted.

    Every test trial of every store must have a prediction of its usable length with finite
    scored values, else :class:`PredictionError` (naming ``sources[mouse]`` when given).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if set(predictions) != set(stores):
        raise SubmissionError(out_dir, f"predictions for {sorted(predictions)} but stores for {sorted(stores)}")
    for mouse, preds in predictions.items():
        source = str((sources or {}).get(mouse, f"<predictions of {mouse}>"))
        if "/" in mouse or mouse in ("", ".", ".."):
            raise SubmissionError(out_dir, f"mouse name {mouse!r} cannot be a CSV folder name")
        if preds.mouse != stores[mouse].mouse:
            raise PredictionError(
                source, f"predictions of mouse {str(preds.mouse)!r}, store of {str(stores[mouse].mouse)!r}"
            )
    written: list[Path] = []
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".submission-") as scratch:
        scratch = Path(scratch)
        csv_root = scratch / CSV_DIR
        csv_root.mkdir()
        for members in ZIPS.values():
            for member, tier in members.items():
                with pq.ParquetWriter(scratch / member, SCHEMA, **PARQUET_OPTIONS) as writer:
                    for mouse, preds in predictions.items():
                        if not (stores[mouse].trials["tier"] == tier).any():
                            continue  # a tier this mouse lacks: no rows, no CSV
                        csv_path = csv_root / mouse / f"{tier}.csv" if csv_fallback else None
                        source = str((sources or {}).get(mouse, f"<predictions of {mouse}>"))
                        _write_mouse_tier(writer, csv_path, preds, stores[mouse], tier, window, source)
        for name, members in ZIPS.items():
            with atomic_path(out_dir / name) as tmp:
                with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
                    for member in members:
                        _add_member(archive, scratch / member, member)
            written.append(out_dir / name)
        if csv_fallback:
            with atomic_path(out_dir / CSV_DIR) as tmp:
                csv_root.rename(tmp)
            written.append(out_dir / CSV_DIR)
    return written


def _add_member(archive: zipfile.ZipFile, path: Path, member: str) -> None:
    """Copy ``path`` into ``archive`` as ``member`` with a fixed timestamp and mode (not the file's)."""
    info = zipfile.ZipInfo(member, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    with open(path, "rb") as src, archive.open(info, "w", force_zip64=True) as dst:
        while chunk := src.read(1 << 24):
            dst.write(chunk)


# --- validation ---------------------------------------------------------------------------


class _Problems:
    """Problems per file, in the order found."""

    def __init__(self) -> None:
        self.by_file: dict[str, list[str]] = {}

    def add(self, file: str | Path, problem: str) -> None:
        self.by_file.setdefault(str(file), []).append(problem)

    def all(self) -> list[str]:
        return [f"{file}: {p}" for file, problems in self.by_file.items() for p in problems]

    def message(self) -> str:
        lines = [f"{len(self.all())} problem(s) in the submission"]
        for file, problems in self.by_file.items():
            lines += [f"  {file}: {p}" for p in problems[:MAX_LISTED]]
            if len(problems) > MAX_LISTED:
                lines.append(f"  {file}: ... and {len(problems) - MAX_LISTED} more problem(s)")
        return "\n".join(lines)


def _digest(matrix: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(matrix, dtype=np.float32).tobytes()).hexdigest()


def _row_matrix(cell: pa.ListScalar) -> np.ndarray | None:
    """A ``prediction`` cell as a 2-D float array; None when null or ragged."""
    if not cell.is_valid:
        return None
    rows = cell.values
    if len(rows) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = rows.value_lengths().to_numpy(zero_copy_only=False)
    if rows.null_count or np.any(lengths != lengths[0]):
        return None
    flat = rows.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(rows), int(lengths[0]))


def _admit(
    key: Any, seen: dict[Any, None], expected: Mapping[Any, Any], problems: _Problems, where: str | Path, *,
    duplicate: str, extra: str,
) -> bool:
    """Record a row's key in ``seen`` (in row order); ``False``, with the problem noted, when
    an earlier row had it (``duplicate``) or it is not one the stores expect (``extra``)."""
    if key in seen:
        problems.add(where, duplicate)
        return False
    seen[key] = None
    if key not in expected:
        problems.add(where, extra)
        return False
    return True


def _check_parquet(
    label: str,
    path: Path,
    tier: str,
    expected: dict[tuple[str, int], tuple[str, int]],
    unit_ids: dict[str, np.ndarray],
    digests: dict[tuple[str, str, int], str],
    problems: _Problems,
) -> None:
    """The scorer's rules for one Parquet member; fills ``digests[(tier, mouse key, trial)]``."""
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        problems.add(label, f"not a readable Parquet file ({exc})")
        return
    names = parquet.schema_arrow.names
    if sorted(names) != sorted(COLUMNS) or len(names) != len(COLUMNS):
        problems.add(label, f"columns {names}, expected exactly {list(COLUMNS)}")
    if any(c not in names for c in COLUMNS):
        return
    wrong = [c for c in COLUMNS if not _type_ok(c, parquet.schema_arrow.field(c).type)]
    for column in wrong:
        found = parquet.schema_arrow.field(column).type
        problems.add(label, f"column {column!r} holds {_type_name(found)}, expected {COLUMN_TYPES[column]}")
    if wrong:
        return
    seen: dict[tuple[str, int], None] = {}
    for batch in parquet.iter_batches(batch_size=BATCH_TRIALS, columns=list(COLUMNS)):
        mice = batch.column("mouse").to_pylist()
        trial_ids = batch.column("trial_indices").to_pylist()
        for i, (mouse, trial_id) in enumerate(zip(mice, trial_ids, strict=True)):
            if not isinstance(trial_id, int) or isinstance(trial_id, bool):
                problems.add(label, f"mouse {mouse}: trial_indices {trial_id!r} is not an integer")
                continue
            key = (mouse, trial_id)
            where = f"mouse {mouse} trial {trial_id}"
            if not _admit(key, seen, expected, problems, label, duplicate=f"{where}: duplicate (mouse, trial) row",
                          extra=f"{where}: extra row (not a {tier} trial of the stores)"):
                continue
            mouse_key, t_eval = expected[key]
            ids_cell = batch.column("neuron_ids")[i]
            ids = np.asarray(ids_cell.values.to_numpy(zero_copy_only=False) if ids_cell.is_valid else [])
            reference = unit_ids[mouse_key]
            if len(np.unique(ids)) != len(ids):
                problems.add(label, f"{where}: duplicate neuron ids")
            elif set(ids.tolist()) != set(reference.tolist()):
                problems.add(label, f"{where}: neuron id set differs from the store's unit_ids")
            elif not np.array_equal(ids, reference):
                problems.add(label, f"{where}: neuron ids are not in unit_ids order")
            matrix = _row_matrix(batch.column("prediction")[i])
            if matrix is None:
                problems.add(label, f"{where}: prediction is null or ragged")
                continue
            if matrix.shape != (len(reference), t_eval):
                problems.add(label, f"{where}: prediction shape {matrix.shape}, expected {(len(reference), t_eval)}")
                continue
            if not np.all(np.isfinite(matrix)):
                problems.add(label, f"{where}: prediction holds non-finite values")
                continue
            digests[(tier, mouse_key, trial_id)] = _digest(matrix)
    missing = sorted(set(expected) - set(seen))
    if missing:
        problems.add(label, f"{len(missing)} missing (mouse, trial) row(s): {missing[:10]}")


def _type_name(t: pa.DataType) -> str:
    """``list<list<string>>`` rather than Arrow's ``list<element: list<element: string>>``."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_type_name(t.value_type)}>"
    return str(t)


def _type_ok(column: str, found: pa.DataType) -> bool:
    """Whether a column's Arrow type can hold what the scorer reads (numbers of any width)."""

    def listed(t: pa.DataType) -> pa.DataType | None:
        return t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else None

    if column == "mouse":
        return pa.types.is_string(found) or pa.types.is_large_string(found)
    if column == "trial_indices":
        return pa.types.is_integer(found)
    if column == "neuron_ids":
        inner = listed(found)
        return inner is not None and pa.types.is_integer(inner)
    inner = listed(found)
    inner = listed(inner) if inner is not None else None
    return inner is not None and (pa.types.is_floating(inner) or pa.types.is_integer(inner))


@contextmanager
def _csv_field_limit() -> Iterator[None]:
    """A CSV cell holds a whole (N, T) array: lift the csv module's field limit, then restore it."""
    old = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _check_csv(
    path: Path,
    tier: str,
    mouse_key: str,
    trials: list[tuple[int, int, int]],
    n_neurons: int,
    digests: dict[tuple[str, str, int], str],
    problems: _Problems,
) -> None:
    """Header, rows (sorted, complete, no extras) and every cell parsed back as JSON."""
    if not path.is_file():
        problems.add(path, "missing")
        return
    shapes = {t: (n_neurons, t_eval) for t, _, t_eval in trials}
    seen: dict[int, None] = {}  # trial ids in the order of the rows
    with _csv_field_limit(), open(path, newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        header = next(reader, None)
        if header != CSV_HEADER:
            problems.add(path, f"header {header}, expected {CSV_HEADER}")
            return
        for line, record in enumerate(reader, start=2):
            if len(record) != 2:
                problems.add(path, f"line {line}: {len(record)} fields, expected 2")
                continue
            match = _FILE_NAME.match(record[0])
            if not match:
                problems.add(path, f"line {line}: file_name {record[0]!r} is not '<trial id>.npy'")
                continue
            trial_id = int(match.group(1))
            if not _admit(trial_id, seen, shapes, problems, path, duplicate=f"line {line}: duplicate trial {trial_id}",
                          extra=f"line {line}: trial {trial_id} is not a {tier} trial of the store"):
                continue
            try:
                matrix = np.asarray(json.loads(record[1]), dtype=np.float32)
            except (ValueError, TypeError):
                problems.add(path, f"line {line} (trial {trial_id}): predictions cell is not a full JSON list of lists")
                continue
            if matrix.shape != shapes[trial_id]:
                problems.add(path, f"line {line} (trial {trial_id}): shape {matrix.shape}, expected {shapes[trial_id]}")
                continue
            reference = digests.get((tier, mouse_key, trial_id))
            if reference is not None and _digest(matrix) != reference:
                problems.add(path, f"line {line} (trial {trial_id}): values differ from the Parquet prediction")
    if list(seen) != sorted(seen):
        problems.add(path, "rows are not sorted by trial id")
    missing = sorted(set(shapes) - set(seen))
    if missing:
        problems.add(path, f"{len(missing)} missing trial(s): {missing[:10]}")


def validate_submission(
    out_dir: str | Path, stores: Mapping[str, MouseStore], window: EvaluationWindow, csv_fallback: bool = True
) -> None:
    """Reopen every submission file (the CSVs too, with ``csv_fallback``) and apply the scorer's
    rules; raise one :class:`SubmissionError` listing every problem of every file (also on
    ``error.problems``)."""
    out_dir = Path(out_dir)
    problems = _Problems()
    trials = {
        (mouse, tier): _tier_trials(store, tier, window) for mouse, store in stores.items() for tier in TEST_TIERS
    }
    unit_ids = {mouse: store.unit_ids for mouse, store in stores.items()}
    digests: dict[tuple[str, str, int], str] = {}
    with tempfile.TemporaryDirectory(prefix="sensorium-validate-") as scratch:
        for name, members in ZIPS.items():
            path = out_dir / name
            if not path.is_file():
                problems.add(path, "missing")
                continue
            try:
                with zipfile.ZipFile(path) as archive:
                    names = archive.namelist()
                    for member in sorted(set(names) - set(members)):
                        problems.add(path, f"unexpected member {member!r}; expected exactly {sorted(members)}")
                    for member in sorted({n for n in names if names.count(n) > 1}):
                        problems.add(path, f"member {member!r} appears more than once")
                    for member, tier in members.items():
                        if member not in names:
                            problems.add(path, f"member {member!r} is missing")
                            continue
                        target = Path(scratch) / member
                        with archive.open(member) as src, open(target, "wb") as dst:
                            while chunk := src.read(1 << 24):
                                dst.write(chunk)
                        expected = {
                            (stores[mouse].mouse, t): (mouse, t_eval)
                            for mouse in stores
                            for t, _, t_eval in trials[(mouse, tier)]
                        }
                        _check_parquet(f"{path}!{member}", target, tier, expected, unit_ids, digests, problems)
                        target.unlink()
            except zipfile.BadZipFile as exc:
                problems.add(path, f"not a readable zip ({exc})")
    if csv_fallback:
        _check_csv_folder(out_dir / CSV_DIR, stores, trials, digests, problems)
    if problems.by_file:
        error = SubmissionError(out_dir, problems.message())
        error.problems = problems.all()  # type: ignore[attr-defined]
        raise error


def _check_csv_folder(
    csv_root: Path,
    stores: Mapping[str, MouseStore],
    trials: dict[tuple[str, str], list[tuple[int, int, int]]],
    digests: dict[tuple[str, str, int], str],
    problems: _Problems,
) -> None:
    """Every expected CSV checked, and no other file in the folder."""
    expected_csv = set()
    for mouse, store in stores.items():
        for tier in TEST_TIERS:
            if trials[(mouse, tier)]:
                path = csv_root / mouse / f"{tier}.csv"
                expected_csv.add(path)
                _check_csv(path, tier, mouse, trials[(mouse, tier)], store.n_neurons, digests, problems)
    if csv_root.is_dir():
        for path in sorted(p for p in csv_root.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if path not in expected_csv:  # hidden files (e.g. Snakemake's .snakemake_timestamp) are no submission
                problems.add(path, "unexpected file (no such mouse and test tier in the stores)")
    else:
        problems.add(csv_root, "missing")
