"""Score predictions against the ground truth with the competition's metrics (docs/metrics.md).

Targets are the solutions' raw responses put through the official per-frame normalisation
(docs/data-format.md) over each trial's usable frames; predictions are already in those units. Both are
cut by the same :class:`~sensorium_pipeline.scoring.metrics.EvaluationWindow`.

Per mouse and tier: single-trial correlation (mean over neurons), correlation to average,
mean FEVE over neurons with FEV >= 0.15 (and their count) and, where the solutions carry the
noise-free ``rates`` (simulated mice), the noise ceiling: the same metrics computed between
the noisy responses and the rates. Bonus tiers are scored per ``stimulus_type`` and every
number of the tier is the mean over types (trial, stimulus and frame counts are totals).
Over mice, every tier number is the plain mean (each mouse weighs the same); a bonus tier's,
as the competition's scorer totals the bonus track, is per stimulus type the mean over the mice
that have that type, then the mean over types. A number is reported only where every scored
mouse has it.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_text_atomic
from ..data.normalize import response_precision
from ..data.store import MouseStore, open_mouse
from ..errors import ConfigError, PredictionError
from ..layout import BONUS_TIERS, FINAL_BONUS, FINAL_MAIN, LIVE_BONUS, LIVE_MAIN, SCORED_TIERS, TIERS
from .metrics import (
    FEV_THRESHOLD,
    EvaluationWindow,
    correlation_to_average,
    fev_feve,
    single_trial_correlation,
)
from .predictions import Predictions, load_predictions
from .solutions import SOLUTION_COLUMNS, SolutionsError, read_solutions

logger = logging.getLogger(__name__)

#: The leaderboard tracks: which tier is the live and which the final stage.
TRACKS: dict[str, dict[str, str]] = {
    "main": {"live": LIVE_MAIN, "final": FINAL_MAIN},
    "bonus": {"live": LIVE_BONUS, "final": FINAL_BONUS},
}
RANKING_METRIC = "single_trial_correlation"
NATURAL = "natural"
UNKNOWN_TYPE = "unknown"
#: Tier numbers averaged over stimulus types (bonus) and over mice.
METRICS: tuple[str, ...] = (
    "single_trial_correlation",
    "correlation_to_average",
    "feve",
    "feve_neurons",
    "ceiling",
    "ceiling_correlation_to_average",
    "fraction_of_ceiling",
)
COUNTS: tuple[str, ...] = ("n_trials", "n_stimuli", "n_frames")
NEURON_COLUMNS: tuple[str, ...] = (
    "mouse",
    "tier",
    "unit_id",
    "x",
    "y",
    "z",
    "single_trial_correlation",
    "correlation_to_average",
    "fev",
    "feve",
    "ceiling",
)
_PER_NEURON = ("single_trial_correlation", "correlation_to_average", "fev", "feve", "ceiling")


def normalized_targets(
    rows: pd.DataFrame,
    store: MouseStore,
    window: EvaluationWindow | None = None,
    column: str = "responses",
    source: str | Path = "solutions",
) -> list[np.ndarray]:
    """Each row's raw ``column`` (N, T_valid) as official units, time-first, one array per row.

    The trial keeps its usable frames ``n`` (``store.usable_frames()``) and is multiplied by
    ``response_precision(std)[:n]``; ``window`` (if given) then cuts the scored frames.
    """
    usable = store.usable_frames()
    position = {int(t): i for i, t in enumerate(store.trials["trial_id"].to_numpy())}
    precision = response_precision(store.statistic("responses", "std"))
    n_neurons = store.n_neurons
    out = []
    for trial_id, matrix in zip(rows["trial_indices"], rows[column], strict=True):
        trial_id = int(trial_id)
        if trial_id not in position:
            raise SolutionsError(source, f"trial {trial_id} is not in the store {store.path}")
        if matrix is None:
            raise SolutionsError(source, f"trial {trial_id} has no {column}")
        matrix = np.asarray(matrix)
        n = int(usable[position[trial_id]])
        if matrix.ndim != 2 or matrix.shape[0] != n_neurons or matrix.shape[1] < n:
            raise SolutionsError(
                source,
                f"trial {trial_id}: {column} shape {matrix.shape}, expected ({n_neurons}, >= {n} usable frames)",
            )
        values = matrix[:, :n].T.astype(np.float32) * precision[:n]
        out.append(values if window is None else window.cut(values))
    return out


def _predicted(
    preds: Predictions,
    trial_ids: Sequence[int],
    usable: Sequence[int],
    window: EvaluationWindow,
    tier: str,
    source: str | Path,
) -> list[np.ndarray]:
    """The predictions of ``trial_ids`` cut by ``window``; every trial must be there, with the
    store's usable length and finite scored values."""
    position = {int(t): i for i, t in enumerate(preds.trial_ids)}
    missing = [t for t in trial_ids if t not in position]
    if missing:
        raise PredictionError(
            source, f"no prediction for {len(missing)} trial(s) of tier {tier}: {missing[:10]}"
        )
    out = []
    for trial_id, n in zip(trial_ids, usable, strict=True):
        i = position[trial_id]
        if int(preds.n_frames[i]) != n or preds.values.shape[1] < n:
            raise PredictionError(
                source,
                f"trial {trial_id} (tier {tier}): predicted {int(preds.n_frames[i])} frames "
                f"(array of {preds.values.shape[1]}), the store has {n} usable frames",
            )
        values = window.cut(preds.values[i], n)
        if not np.all(np.isfinite(values)):
            raise PredictionError(source, f"trial {trial_id} (tier {tier}): non-finite values in the scored frames")
        out.append(values)
    return out


def _score_group(
    targets: list[np.ndarray],
    predictions: list[np.ndarray],
    rates: list[np.ndarray] | None,
    stimulus_ids: list[str],
    threshold: float,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Summary numbers and per-neuron arrays of one set of trials."""
    single = single_trial_correlation(targets, predictions)
    average = correlation_to_average(targets, predictions, stimulus_ids)
    explained = fev_feve(targets, predictions, stimulus_ids, threshold)
    n_neurons = len(single)
    summary: dict[str, Any] = {
        "n_trials": len(targets),
        "n_stimuli": len(set(stimulus_ids)),
        "n_frames": int(sum(len(t) for t in targets)),
        "single_trial_correlation": float(np.mean(single)),
        "correlation_to_average": float(np.mean(average)),
        "feve": explained.mean_feve,
        "feve_neurons": explained.n_selected,
        "ceiling": None,
        "ceiling_correlation_to_average": None,
        "fraction_of_ceiling": None,
    }
    neurons = {
        "single_trial_correlation": single,
        "correlation_to_average": average,
        "fev": explained.fev,
        "feve": explained.feve,
        "ceiling": np.full(n_neurons, np.nan),
    }
    if rates is not None:
        ceiling = single_trial_correlation(targets, rates)
        summary["ceiling"] = float(np.mean(ceiling))
        summary["ceiling_correlation_to_average"] = float(np.mean(correlation_to_average(targets, rates, stimulus_ids)))
        summary["fraction_of_ceiling"] = _ratio(summary["single_trial_correlation"], summary["ceiling"])
        neurons["ceiling"] = ceiling
    return summary, neurons


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    if value is None or ceiling is None or not ceiling > 0:
        return None
    return value / ceiling


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of known (not None, not NaN) values; None where one is unknown or none is known."""
    if not values or any(v is None for v in values):
        return None
    finite = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.mean(finite)) if finite else None


def _combine_types(by_type: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A bonus tier's numbers: means over stimulus types; counts are totals."""
    summary: dict[str, Any] = {k: int(sum(s[k] for s in by_type.values())) for k in COUNTS}
    for key in METRICS:
        summary[key] = _mean([s[key] for s in by_type.values()])
    summary["fraction_of_ceiling"] = _ratio(summary["single_trial_correlation"], summary["ceiling"])
    summary["by_stimulus_type"] = by_type
    return summary


def _score_tier(
    targets: list[np.ndarray],
    predicted: list[np.ndarray],
    rates: list[np.ndarray] | None,
    stimulus_ids: list[str],
    types: list[str] | None,
    threshold: float,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """All trials at once, or (``types`` given: the bonus track) per stimulus type, then the
    mean over types, per neuron too."""
    if types is None:
        return _score_group(targets, predicted, rates, stimulus_ids, threshold)
    by_type, per_type = {}, []
    for kind in sorted(set(types)):
        pick = [i for i, t in enumerate(types) if t == kind]
        by_type[kind], neurons = _score_group(
            [targets[i] for i in pick],
            [predicted[i] for i in pick],
            None if rates is None else [rates[i] for i in pick],
            [stimulus_ids[i] for i in pick],
            threshold,
        )
        per_type.append(neurons)
    with warnings.catch_warnings():  # a neuron's FEV may be unknown in every type
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_neurons = {k: np.nanmean([n[k] for n in per_type], axis=0) for k in _PER_NEURON}
    return _combine_types(by_type), mean_neurons


def evaluate_mouse(
    preds: Predictions,
    solutions: pd.DataFrame,
    store: MouseStore,
    window: EvaluationWindow,
    tiers: Sequence[str] = SCORED_TIERS,
    *,
    source: str | Path | None = None,
    solutions_source: str | Path = "solutions",
    fev_threshold: float = FEV_THRESHOLD,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score one mouse's tiers that both the solutions and the predictions hold.

    Returns ``({"tiers": {tier: summary}, "no_solutions": [...], "no_predictions": [...]},
    per-neuron DataFrame)``. ``source`` names the predictions in errors. Raises
    :class:`PredictionError` when a solution trial of a scored tier has no prediction or a
    prediction of another length.
    """
    source = source if source is not None else f"<predictions of {preds.mouse}>"
    if not np.array_equal(preds.unit_ids, store.unit_ids):
        raise PredictionError(source, f"unit_ids differ from those of the store {store.path} (order included)")
    missing_columns = [c for c in SOLUTION_COLUMNS if c not in solutions.columns]
    if missing_columns:
        raise SolutionsError(solutions_source, f"missing columns {missing_columns}")
    for ids in solutions["neuron_ids"]:
        if not np.array_equal(np.asarray(ids, dtype=np.int64), store.unit_ids):
            raise SolutionsError(solutions_source, f"neuron_ids differ from the unit_ids of the store {store.path}")
    usable = store.usable_frames()
    usable_of = {int(t): int(n) for t, n in zip(store.trials["trial_id"], usable, strict=True)}
    result: dict[str, Any] = {"tiers": {}, "no_solutions": [], "no_predictions": []}
    frames = []
    for tier in tiers:
        rows = solutions[solutions["tier"] == tier].sort_values("trial_indices", kind="stable")
        if rows.empty:
            result["no_solutions"].append(tier)
            continue
        if tier not in set(preds.tiers.tolist()):
            logger.warning("%s: no predictions of tier %s; it is not scored", source, tier)
            result["no_predictions"].append(tier)
            continue
        trial_ids = [int(t) for t in rows["trial_indices"]]
        unknown = [t for t in trial_ids if t not in usable_of]
        if unknown:
            raise SolutionsError(
                solutions_source, f"trials {unknown[:10]} of tier {tier} are not in the store {store.path}"
            )
        targets = normalized_targets(rows, store, window, "responses", solutions_source)
        predicted = _predicted(preds, trial_ids, [usable_of[t] for t in trial_ids], window, tier, source)
        has_rates = all(r is not None for r in rows["rates"])
        rates = normalized_targets(rows, store, window, "rates", solutions_source) if has_rates else None
        types = [str(s) for s in rows["stimulus_type"]] if tier in BONUS_TIERS else None
        stimulus_ids = [str(s) for s in rows["stimulus_id"]]
        tier_summary, neurons = _score_tier(targets, predicted, rates, stimulus_ids, types, fev_threshold)
        result["tiers"][tier] = tier_summary
        frame = pd.DataFrame({"mouse": store.mouse, "tier": tier, "unit_id": store.unit_ids})
        frame[["x", "y", "z"]] = store.coordinates
        for key in _PER_NEURON:
            frame[key] = np.asarray(neurons[key], dtype=np.float64)
        frames.append(frame)
    return result, _neuron_frame(frames)


def _neuron_frame(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if frames:
        return pd.concat(frames, ignore_index=True)[list(NEURON_COLUMNS)]
    empty = {c: pd.Series(dtype="float64") for c in NEURON_COLUMNS}
    empty.update({"mouse": pd.Series(dtype="str"), "tier": pd.Series(dtype="str"), "unit_id": pd.Series(dtype="int64")})
    return pd.DataFrame(empty)


def _read_responses(store: MouseStore, row: int, valid: int) -> np.ndarray:
    """One trial's raw responses as in the archive: (N, valid_frames)."""
    return np.asarray(store.array("responses")[row, :valid]).T


def solutions_from_store(store: MouseStore, tiers: Sequence[str] = SCORED_TIERS) -> pd.DataFrame:
    """Solutions (format of :mod:`solutions`) for the tiers whose responses the archive releases.

    A tier counts as withheld when all its responses are zero (docs/data-format.md). Repeats are the
    store's ``stimulus_group``; the stimulus type is ``natural`` except on bonus tiers, where
    the real archives do not say it (``unknown``). ``rates`` are unknown (None).
    """
    rows: list[dict[str, Any]] = []
    trials = store.trials
    for tier in tiers:
        picked = trials[trials["tier"] == tier].sort_values("trial_id", kind="stable")
        tier_rows = []
        released = False
        for row, trial_id, valid, group in zip(
            picked["row"], picked["trial_id"], picked["valid_frames"], picked["stimulus_group"], strict=True
        ):
            responses = _read_responses(store, int(row), int(valid)).astype(np.float32)
            released = released or bool(np.any(np.nan_to_num(responses) != 0))
            tier_rows.append(
                {
                    "mouse": store.mouse,
                    "tier": tier,
                    "trial_indices": int(trial_id),
                    "stimulus_id": str(group),
                    "stimulus_type": UNKNOWN_TYPE if tier in BONUS_TIERS else NATURAL,
                    "neuron_ids": store.unit_ids,
                    "responses": responses,
                    "rates": None,
                }
            )
        if released:
            rows.extend(tier_rows)
        elif tier_rows:
            logger.info("%s: responses of tier %s are withheld (all zero); not scored", store.path, tier)
    frame = pd.DataFrame(rows, columns=list(SOLUTION_COLUMNS))
    return frame.astype({"trial_indices": "int64"}) if not frame.empty else frame


def _bonus_over_mice(scored: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A bonus tier over mice as the competition's scorer totals it: each stimulus type's
    numbers are the mean over the mice that were shown it, the tier's the mean over types (a
    mouse that lacks a type does not pull the others' mean of that type)."""
    by_type: dict[str, dict[str, Any]] = {}
    kinds = sorted(set().union(*(s["by_stimulus_type"] for s in scored.values())))
    for kind in kinds:
        having = {m: s["by_stimulus_type"][kind] for m, s in scored.items() if kind in s["by_stimulus_type"]}
        numbers: dict[str, Any] = {"mice": sorted(having), "n_mice": len(having)}
        for key in METRICS:
            numbers[key] = _mean([h[key] for h in having.values()])
        numbers["fraction_of_ceiling"] = _ratio(numbers["single_trial_correlation"], numbers["ceiling"])
        by_type[kind] = numbers
    summary = {key: _mean([t[key] for t in by_type.values()]) for key in METRICS}
    summary["by_stimulus_type"] = by_type
    return summary


def _aggregate(per_mouse: dict[str, dict[str, Any]], tiers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per tier, the plain mean over the mice that scored it; a bonus tier per stimulus type
    over the mice that have it, then the mean over types (:func:`_bonus_over_mice`)."""
    out = {}
    for tier in tiers:
        scored = {m: r["tiers"][tier] for m, r in per_mouse.items() if tier in r["tiers"]}
        if not scored:
            continue
        summary: dict[str, Any] = {"mice": sorted(scored), "n_mice": len(scored)}
        if tier in BONUS_TIERS and all("by_stimulus_type" in s for s in scored.values()):
            summary.update(_bonus_over_mice(scored))
        else:
            for key in METRICS:
                summary[key] = _mean([s[key] for s in scored.values()])
        summary["fraction_of_ceiling"] = _ratio(summary["single_trial_correlation"], summary["ceiling"])
        out[tier] = summary
    return out


def _tracks(tiers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ranking metric of each track's live and final tier (None where not scored)."""
    out = {}
    for track, stages in TRACKS.items():
        out[track] = {"metric": RANKING_METRIC}
        out[track].update({stage: tiers.get(tier, {}).get(RANKING_METRIC) for stage, tier in stages.items()})
    return out


def _json_ready(value: Any) -> Any:
    """NaN and infinities become null; numpy scalars become Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _check_tiers(tiers: Sequence[str]) -> list[str]:
    tiers = list(tiers)
    for tier in tiers:
        if tier not in TIERS:
            raise ConfigError(f"evaluation.tiers: unknown tier {tier!r}; expected some of {SCORED_TIERS}")
    return tiers


def evaluate(
    predictions: Mapping[str, str | Path],
    stores: Mapping[str, str | Path],
    solutions: Mapping[str, str | Path | None],
    window: EvaluationWindow,
    tiers: Sequence[str],
    out_json: str | Path,
    out_neurons_parquet: str | Path,
    fev_threshold: float = FEV_THRESHOLD,
) -> dict[str, Any]:
    """Score every mouse, average over mice per tier, and write the JSON and per-neuron Parquet.

    A mouse without a solutions path is scored against the responses its store releases
    (:func:`solutions_from_store`). Returns what the JSON holds: ``settings``, ``mice``
    (per mouse: ``tiers``, ``no_solutions``, ``no_predictions``), ``tiers`` (means over mice)
    and ``tracks`` (the ranking metric of the live and final tier of each track). Mice are
    named by their keys here, in the JSON and in the per-neuron table's ``mouse`` column.
    """
    tiers = _check_tiers(tiers)
    per_mouse: dict[str, dict[str, Any]] = {}
    frames = []
    for mouse, pred_path in predictions.items():
        if mouse not in stores:
            raise ConfigError(f"evaluate: mouse {mouse!r} has predictions but no store")
        store = open_mouse(stores[mouse])
        preds = load_predictions(pred_path)
        solutions_path = solutions.get(mouse)
        if solutions_path:
            result, neurons = evaluate_mouse(
                preds,
                read_solutions(solutions_path),
                store,
                window,
                tiers,
                source=pred_path,
                solutions_source=solutions_path,
                fev_threshold=fev_threshold,
            )
        else:  # one tier at a time: a real mouse's responses are large
            result, parts = {"tiers": {}, "no_solutions": [], "no_predictions": []}, []
            for tier in tiers:
                one, part = evaluate_mouse(
                    preds,
                    solutions_from_store(store, [tier]),
                    store,
                    window,
                    [tier],
                    source=pred_path,
                    solutions_source=store.path,
                    fev_threshold=fev_threshold,
                )
                for key in result:
                    result[key] = {**result[key], **one[key]} if key == "tiers" else result[key] + one[key]
                parts.append(part)
            neurons = _neuron_frame([p for p in parts if not p.empty])
        neurons["mouse"] = mouse
        per_mouse[mouse] = result
        frames.append(neurons)
        logger.info("%s: %s", mouse, {t: round(s[RANKING_METRIC], 4) for t, s in result["tiers"].items()})
    tier_summary = _aggregate(per_mouse, tiers)
    report = _json_ready(
        {
            "settings": {"window": window.to_dict(), "tiers": tiers, "fev_threshold": fev_threshold},
            "mice": per_mouse,
            "tiers": tier_summary,
            "tracks": _tracks(tier_summary),
        }
    )
    write_text_atomic(out_json, json.dumps(report, indent=2, allow_nan=False) + "\n")
    table = _neuron_frame([f for f in frames if not f.empty])
    with atomic_path(out_neurons_parquet) as tmp:
        table.to_parquet(tmp, index=False)
    return report
