"""Read the pipeline's outputs into what the report's plots and tables draw.

Scores JSON (``evaluate``), per-neuron Parquet (``evaluate``), per-epoch ``metrics.csv``
(``train``; any numeric columns beyond ``epoch`` are kept, so new ones need no change here),
and the traces of a few neurons (predictions + solutions or the store's released responses).
A file that cannot be read raises :class:`ReportInputError` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import PathError
from ..layout import FINAL_MAIN, LIVE_MAIN, ORACLE
from ..paths import ENSEMBLE

#: Tiers the report shows per neuron, best first: the ranking tier, then tiers real data releases.
PREFERRED_TIERS: tuple[str, ...] = (FINAL_MAIN, LIVE_MAIN, ORACLE)


class ReportInputError(PathError):
    """An output of an earlier stage cannot be read for the report."""


def entry_order(entries: Sequence[str]) -> list[str]:
    """The ensemble first, then the model-fold entries in name order."""
    return sorted(entries, key=lambda e: (e != ENSEMBLE, e))


def load_scores(paths: Mapping[str, str | Path]) -> dict[str, dict[str, Any]]:
    """``{entry: scores JSON}`` (the structure :func:`sensorium_pipeline.scoring.evaluate.evaluate` writes)."""
    out = {}
    for entry, path in paths.items():
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ReportInputError(path, f"cannot read the scores JSON ({error})") from error
        if not isinstance(data, dict) or not isinstance(data.get("tiers"), dict) or not isinstance(data.get("mice"), dict):
            raise ReportInputError(path, "not a scores JSON: expected the keys 'tiers' and 'mice'")
        out[entry] = data
    return out


def load_neurons(paths: Mapping[str, str | Path]) -> pd.DataFrame:
    """Per-neuron scores of every entry, one table with an ``entry`` column."""
    frames = []
    for entry, path in paths.items():
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as error:
            raise ReportInputError(path, f"cannot read the per-neuron scores ({error})") from error
        missing = {"mouse", "tier", "unit_id", "single_trial_correlation"} - set(frame.columns)
        if missing:
            raise ReportInputError(path, f"per-neuron scores lack the columns {sorted(missing)}")
        frames.append(frame.assign(entry=entry))
    if not frames:
        return pd.DataFrame(columns=["entry", "mouse", "tier", "unit_id", "single_trial_correlation"])
    return pd.concat(frames, ignore_index=True)


def load_metrics(paths: Mapping[tuple[str, int], str | Path]) -> pd.DataFrame:
    """Per-epoch training metrics of every ``(unit, fold)``, with ``model`` (the training unit:
    a model config, ``<model>-distilled`` or ``<run>/mice/<mouse>``) and ``fold`` columns.

    Needs an ``epoch`` column; every other column is kept as it is.
    """
    frames = []
    for (model, fold), path in paths.items():
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as error:
            raise ReportInputError(path, f"cannot read the training metrics ({error})") from error
        if "epoch" not in frame.columns:
            raise ReportInputError(path, f"training metrics have no 'epoch' column (columns: {list(frame.columns)})")
        frames.append(frame.assign(model=model, fold=int(fold)))
    if not frames:
        return pd.DataFrame(columns=["model", "fold", "epoch"])
    return pd.concat(frames, ignore_index=True)


def pick_tier(neurons: pd.DataFrame, preferred: Sequence[str] = PREFERRED_TIERS) -> str | None:
    """The first of ``preferred`` with a finite per-neuron correlation, else any scored tier."""
    finite = neurons[np.isfinite(neurons["single_trial_correlation"].to_numpy(dtype=float))]
    present = list(dict.fromkeys(finite["tier"].astype(str)))
    for tier in preferred:
        if tier in present:
            return tier
    return present[0] if present else None


def pick_neurons(neurons: pd.DataFrame, k: int) -> tuple[list[int], list[int]]:
    """Unit ids of the ``k`` best and ``k`` worst predicted neurons (no neuron twice)."""
    scored = neurons[np.isfinite(neurons["single_trial_correlation"].to_numpy(dtype=float))]
    ranked = scored.sort_values(["single_trial_correlation", "unit_id"], ascending=[False, True], kind="stable")
    ids = [int(u) for u in ranked["unit_id"]]
    best = ids[:k]
    worst = [u for u in reversed(ids) if u not in best][:k]
    return best, worst


@dataclass(frozen=True)
class Traces:
    """Recorded and predicted activity of a few neurons over a few trials of one tier.

    ``recorded`` and ``predicted`` are (neurons, frames): the scored frames of ``trial_ids``
    one after another, split at ``boundaries`` (frame offsets where a trial starts).
    """

    mouse: str
    tier: str
    unit_ids: list[int]
    labels: list[str]
    correlations: list[float]
    trial_ids: list[int]
    boundaries: list[int]
    recorded: np.ndarray
    predicted: np.ndarray


def load_traces(
    predictions: str | Path,
    store: str | Path,
    solutions: str | Path | None,
    neurons: pd.DataFrame,
    window: Any,
    *,
    k: int = 3,
    n_trials: int = 3,
) -> Traces:
    """The ``k`` best and ``k`` worst predicted neurons of one mouse (``neurons``: its rows of
    the per-neuron table) on the first ``n_trials`` trials of the tier :func:`pick_tier` picks.

    Recorded traces come from ``solutions`` when given (simulated mice), else from the
    responses the store releases; both in the official normalised units the scores use.
    """
    from ..data.store import open_mouse
    from ..scoring.evaluate import normalized_targets, solutions_from_store
    from ..scoring.predictions import load_predictions
    from ..scoring.solutions import read_solutions

    mouse_store = open_mouse(store)
    tier = pick_tier(neurons)
    if tier is None:
        raise ReportInputError(store, "no tier of this mouse has a finite per-neuron correlation")
    picked = neurons[neurons["tier"] == tier]
    best, worst = pick_neurons(picked, k)
    rows = read_solutions(solutions) if solutions else solutions_from_store(mouse_store, [tier])
    rows = rows[rows["tier"] == tier]
    if "mouse" in rows.columns:
        rows = rows[rows["mouse"] == mouse_store.mouse]
    rows = rows.sort_values("trial_indices", kind="stable").head(n_trials)
    if rows.empty:
        raise ReportInputError(solutions or store, f"no recorded trials of tier {tier} for {mouse_store.mouse}")
    preds = load_predictions(predictions)
    position = {int(t): i for i, t in enumerate(preds.trial_ids)}
    usable = dict(zip(mouse_store.trials["trial_id"].astype(int), mouse_store.usable_frames(), strict=True))
    targets = normalized_targets(rows, mouse_store, window, "responses", solutions or store)
    column = {int(u): i for i, u in enumerate(mouse_store.unit_ids)}
    chosen = best + worst
    index = [column[u] for u in chosen]
    recorded, predicted, boundaries, trial_ids = [], [], [], []
    offset = 0
    for trial_id, target in zip(rows["trial_indices"].astype(int), targets, strict=True):
        if trial_id not in position:
            raise ReportInputError(predictions, f"no prediction for trial {trial_id} of tier {tier}")
        values = window.cut(preds.values[position[trial_id]], int(usable[trial_id]))
        recorded.append(target[:, index])
        predicted.append(values[:, index])
        boundaries.append(offset)
        trial_ids.append(trial_id)
        offset += len(target)
    correlation = picked.set_index("unit_id")["single_trial_correlation"]
    return Traces(
        mouse=mouse_store.mouse,
        tier=tier,
        unit_ids=chosen,
        labels=["best"] * len(best) + ["worst"] * len(worst),
        correlations=[float(correlation[u]) for u in chosen],
        trial_ids=trial_ids,
        boundaries=boundaries,
        recorded=np.concatenate(recorded).T,
        predicted=np.concatenate(predicted).T,
    )
