"""Is a converted store still what the converter wrote? (``python -m sensorium_pipeline verify``)

Snakemake only compares timestamps, and Zarr reads a deleted shard back as its fill value
(NaN), so a damaged store would otherwise be trained and scored on silently. Two checks:

- :func:`shard_report` (cheap, a file listing): every row of every per-trial array has its
  data on disk;
- :func:`verify_store` (reads the whole store, about as long as a conversion): every row of
  every per-trial array hashes to the sha256 recorded at conversion (``sha256_<modality>``
  columns of ``trials.parquet``; see :func:`store.row_digest`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from ..layout import MODALITIES
from .store import HASH_COLUMNS, REPAIR, TRIALS_NAME, ZARR_NAME, MouseStore, missing_rows, open_mouse, row_digest

logger = logging.getLogger(__name__)

#: Problems named in the error message (all are in the report).
MAX_LISTED = 5


def shard_report(store: MouseStore) -> dict[str, Any]:
    """Rows whose data is missing on disk, per modality, and whether hashes are recorded."""
    missing = {}
    for modality in MODALITIES:
        rows = missing_rows(store.group[modality], store.path / ZARR_NAME / modality)
        if rows:
            missing[modality] = rows
    n_rows = {m: int(store.group[m].shape[0]) for m in MODALITIES}
    return {
        "rows": len(store.trials),
        "missing_rows": missing,
        "table_matches_arrays": all(n == len(store.trials) for n in n_rows.values()),
        "trial_hashes": "recorded" if store.has_hashes() else "absent (converted before converter version 3)",
    }


def verify_store(path: str | Path) -> dict[str, Any]:
    """Check every shard is present and every row matches its recorded hash.

    Returns a report; raises :class:`StoreError` listing the first problems when there is any.
    """
    start = time.perf_counter()
    store = open_mouse(path)
    report = shard_report(store)
    problems: list[str] = []
    if not report["table_matches_arrays"]:
        shapes = {m: int(store.group[m].shape[0]) for m in MODALITIES}
        problems.append(f"{TRIALS_NAME} has {len(store.trials)} rows, the arrays {shapes}")
    trial_ids = store.trials["trial_id"].to_numpy(dtype=np.int64)
    for modality, rows in report["missing_rows"].items():
        problems += [f"{modality} row {r} (trial {int(trial_ids[r])}): shard missing" for r in rows]
    if not store.has_hashes():
        problems.append(f"{TRIALS_NAME} records no per-trial hashes (an older converter wrote it); reconvert")
    else:
        mismatched = 0
        for modality in MODALITIES:
            array, expected = store.group[modality], store.trials[HASH_COLUMNS[modality]].tolist()
            skip = set(report["missing_rows"].get(modality, []))
            for row in range(len(store.trials)):
                if row in skip:
                    continue
                try:
                    digest = row_digest(np.asarray(array[row]))
                except Exception as exc:  # zarr and the codecs raise several types for damaged bytes
                    problems.append(f"{modality} row {row} (trial {int(trial_ids[row])}): unreadable ({exc})")
                    continue
                if digest != expected[row]:
                    mismatched += 1
                    problems.append(f"{modality} row {row} (trial {int(trial_ids[row])}): content differs from its hash")
            logger.info(f"verified {modality}: {len(store.trials) - len(skip)} rows")
        report["hash_mismatches"] = mismatched
    report.update(
        {"store": str(store.path), "ok": not problems, "problems": problems,
         "seconds": round(time.perf_counter() - start, 2)}
    )  # fmt: skip
    if problems:
        listed = "; ".join(problems[:MAX_LISTED])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        error = StoreError(store.path, f"{len(problems)} integrity problem(s): {listed}{more}; {REPAIR}")
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report
