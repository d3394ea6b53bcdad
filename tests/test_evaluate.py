"""The evaluation stage: official normalisation of targets, metrics per tier, ceiling, bonus types."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from factories import make_store, withhold_responses
from sensorium_pipeline.errors import PredictionError
from sensorium_pipeline.scoring.evaluate import (
    NEURON_COLUMNS,
    evaluate,
    evaluate_mouse,
    normalized_targets,
    solutions_from_store,
)
from sensorium_pipeline.data.normalize import response_precision
from sensorium_pipeline.data.store import MouseStore, open_mouse
from sensorium_pipeline.scoring.metrics import EvaluationWindow, correlation_to_average, single_trial_correlation
from sensorium_pipeline.scoring.predictions import Predictions, save_predictions
from sensorium_pipeline.scoring.solutions import write_solutions

WINDOW = EvaluationWindow(skip_first=4, max_frames=30, skip_last=1)  # frames 4..28 of 36 usable
TIERS = ["train"] * 8 + ["oracle"] * 4 + ["live_test_main"] * 2 + ["final_test_main"] * 2 + ["live_test_bonus"] * 4


def _store(tmp_path, name="m", seed=0, **kwargs) -> MouseStore:
    kwargs.setdefault("tiers", TIERS)
    return open_mouse(make_store(tmp_path / name, mouse=name, n_neurons=6, seed=seed, **kwargs))


def _solutions(store: MouseStore, with_rates: bool = False, seed: int = 0) -> pd.DataFrame:
    """Rows for every non-train trial: repeats pair up, bonus types x, x, y, y."""
    rng = np.random.default_rng(seed)
    trials = store.trials[store.trials["tier"] != "train"]
    rows = []
    for k, (row, trial_id, tier, valid) in enumerate(
        zip(trials["row"], trials["trial_id"], trials["tier"], trials["valid_frames"], strict=True)
    ):
        responses = np.asarray(store.array("responses")[row, :valid]).T
        bonus = tier == "live_test_bonus"
        rows.append(
            {
                "mouse": store.mouse,
                "tier": tier,
                "trial_indices": int(trial_id),
                "stimulus_id": f"{tier}/{k // 2}",
                "stimulus_type": ("x" if k % 4 < 2 else "y") if bonus else "natural",
                "neuron_ids": store.unit_ids,
                "responses": responses,
                "rates": responses + rng.random(responses.shape, dtype=np.float32) if with_rates else None,
            }
        )
    return pd.DataFrame(rows)


def _predictions(store: MouseStore, solutions: pd.DataFrame, noise: float = 0.0, seed: int = 1) -> Predictions:
    """Predictions equal to the normalised targets over all usable frames (plus optional noise)."""
    rng = np.random.default_rng(seed)
    targets = normalized_targets(solutions, store)
    values = np.full((len(targets), store.t_pad, store.n_neurons), np.nan, dtype=np.float32)
    for i, target in enumerate(targets):
        values[i, : len(target)] = target + noise * rng.normal(size=target.shape)
    return Predictions(
        store.mouse,
        solutions["trial_indices"].to_numpy(),
        solutions["tier"].to_numpy(),
        values,
        [len(t) for t in targets],
        store.unit_ids,
    )


def test_normalized_targets_use_the_per_frame_precision(tmp_path):
    store = _store(tmp_path)
    solutions = _solutions(store)
    targets = normalized_targets(solutions, store, WINDOW)
    precision = response_precision(store.statistic("responses", "std"))
    raw = solutions["responses"].iloc[0]
    np.testing.assert_allclose(targets[0], (raw.T * precision[: raw.shape[1]])[4:29], rtol=1e-6)
    assert targets[0].shape == (25, 6)


def test_predicting_the_normalised_targets_scores_one(tmp_path):
    store = _store(tmp_path)
    solutions = _solutions(store)
    preds = _predictions(store, solutions)
    summary, neurons = evaluate_mouse(preds, solutions, store, WINDOW, ["oracle", "live_test_main", "final_test_main"])
    for tier in ("oracle", "live_test_main", "final_test_main"):
        result = summary["tiers"][tier]
        assert result["single_trial_correlation"] == pytest.approx(1.0, abs=1e-5)
        assert result["correlation_to_average"] == pytest.approx(1.0, abs=1e-5)
        assert result["n_frames"] == 25 * result["n_trials"]
        assert result["ceiling"] is None and result["fraction_of_ceiling"] is None
    assert summary["tiers"]["oracle"]["n_stimuli"] == 2
    assert list(neurons.columns) == list(NEURON_COLUMNS)
    assert len(neurons) == 3 * 6 and neurons["ceiling"].isna().all()
    np.testing.assert_allclose(neurons["single_trial_correlation"], 1.0, atol=1e-5)
    # noisy predictions score lower, and the number is the mean over neurons of the metric
    noisy = _predictions(store, solutions, noise=1.0)
    summary, neurons = evaluate_mouse(noisy, solutions, store, WINDOW, ["oracle"])
    oracle = solutions[solutions["tier"] == "oracle"]
    targets = normalized_targets(oracle, store, WINDOW)
    predicted = [WINDOW.cut(noisy.values[i], 36) for i in np.flatnonzero(noisy.tiers == "oracle")]
    assert summary["tiers"]["oracle"]["single_trial_correlation"] == pytest.approx(
        single_trial_correlation(targets, predicted).mean()
    )
    assert summary["tiers"]["oracle"]["single_trial_correlation"] < 0.9


def test_ceiling_is_computed_when_rates_exist(tmp_path):
    store = _store(tmp_path)
    solutions = _solutions(store, with_rates=True)
    preds = _predictions(store, solutions, noise=0.5)
    summary, neurons = evaluate_mouse(preds, solutions, store, WINDOW, ["oracle"])
    oracle = solutions[solutions["tier"] == "oracle"]
    targets = normalized_targets(oracle, store, WINDOW)
    rates = normalized_targets(oracle, store, WINDOW, column="rates")
    result = summary["tiers"]["oracle"]
    expected = single_trial_correlation(targets, rates)
    assert result["ceiling"] == pytest.approx(expected.mean())
    assert result["ceiling_correlation_to_average"] == pytest.approx(
        correlation_to_average(targets, rates, list(oracle["stimulus_id"])).mean()
    )
    assert result["fraction_of_ceiling"] == pytest.approx(result["single_trial_correlation"] / expected.mean())
    np.testing.assert_allclose(neurons["ceiling"], expected, rtol=1e-6)


def test_bonus_tiers_average_over_stimulus_types(tmp_path):
    store = _store(tmp_path)
    solutions = _solutions(store)
    preds = _predictions(store, solutions)
    bonus = np.flatnonzero(preds.tiers == "live_test_bonus")
    rng = np.random.default_rng(5)
    preds.values[bonus[2:]] = rng.random(preds.values[bonus[2:]].shape)  # type y: unrelated predictions
    preds.values[bonus[2:], 36:] = np.nan
    summary, _ = evaluate_mouse(preds, solutions, store, WINDOW, ["live_test_bonus"])
    result = summary["tiers"]["live_test_bonus"]
    rows = solutions[solutions["tier"] == "live_test_bonus"]
    targets = normalized_targets(rows, store, WINDOW)
    predicted = [WINDOW.cut(preds.values[i], 36) for i in bonus]
    y = single_trial_correlation(targets[2:], predicted[2:]).mean()
    assert set(result["by_stimulus_type"]) == {"x", "y"}
    assert result["by_stimulus_type"]["x"]["single_trial_correlation"] == pytest.approx(1.0, abs=1e-5)
    assert result["by_stimulus_type"]["y"]["single_trial_correlation"] == pytest.approx(y)
    assert result["single_trial_correlation"] == pytest.approx((1.0 + y) / 2, abs=1e-5)
    pooled = single_trial_correlation(targets, predicted).mean()
    assert abs(result["single_trial_correlation"] - pooled) > 1e-3  # not the all-trials number
    assert result["n_trials"] == 4


def test_missing_or_mismatched_predictions_raise_naming_the_path(tmp_path):
    store = _store(tmp_path)
    solutions = _solutions(store)
    preds = _predictions(store, solutions)
    keep = preds.trial_ids != solutions[solutions["tier"] == "oracle"]["trial_indices"].iloc[1]
    partial = Predictions(
        preds.mouse, preds.trial_ids[keep], preds.tiers[keep], preds.values[keep], preds.n_frames[keep], preds.unit_ids
    )
    with pytest.raises(PredictionError, match=r"preds/m\.zarr: no prediction for 1 trial\(s\) of tier oracle"):
        evaluate_mouse(partial, solutions, store, WINDOW, ["oracle"], source="preds/m.zarr")
    preds.n_frames[0] = 30
    with pytest.raises(PredictionError, match="predicted 30 frames"):
        evaluate_mouse(preds, solutions, store, WINDOW, ["oracle"], source="preds/m.zarr")


def test_solutions_from_store_skips_withheld_tiers(tmp_path):
    store = _store(tmp_path)
    withhold_responses(store.path, ["final_test_main"])
    solutions = solutions_from_store(store, ["oracle", "final_test_main", "live_test_bonus"])
    assert solutions["tier"].tolist() == ["oracle"] * 4 + ["live_test_bonus"] * 4
    assert set(solutions[solutions["tier"] == "oracle"]["stimulus_type"]) == {"natural"}
    assert set(solutions[solutions["tier"] == "live_test_bonus"]["stimulus_type"]) == {"unknown"}
    assert solutions["rates"].isna().all()
    assert solutions["responses"].iloc[0].shape == (6, 36)


def test_evaluate_writes_per_tier_means_over_mice(tmp_path):
    stores, predictions, solutions = {}, {}, {}
    for k, name in enumerate(["m1", "m2"]):
        store = _store(tmp_path, name, seed=k)
        sol = _solutions(store, with_rates=(k == 0))
        preds = _predictions(store, sol, noise=0.3 * (k + 1), seed=k)
        save_predictions(tmp_path / f"{name}.zarr", preds)
        stores[name], predictions[name] = store.path, tmp_path / f"{name}.zarr"
        if k == 0:
            write_solutions(tmp_path / "m1.solutions.parquet", sol.to_dict("records"))
            solutions[name] = tmp_path / "m1.solutions.parquet"
        else:
            solutions[name] = None  # scored from the responses the store releases
    tiers = ["oracle", "live_test_main", "final_test_main", "live_test_bonus", "final_test_bonus"]
    report = evaluate(predictions, stores, solutions, WINDOW, tiers, tmp_path / "s.json", tmp_path / "n.parquet")
    assert json.loads((tmp_path / "s.json").read_text()) == report
    m1, m2 = report["mice"]["m1"]["tiers"], report["mice"]["m2"]["tiers"]
    assert report["mice"]["m1"]["no_solutions"] == ["final_test_bonus"]
    for tier in tiers[:3]:
        mean = (m1[tier]["single_trial_correlation"] + m2[tier]["single_trial_correlation"]) / 2
        assert report["tiers"][tier]["single_trial_correlation"] == pytest.approx(mean)
        assert report["tiers"][tier]["n_mice"] == 2
        assert report["tiers"][tier]["ceiling"] is None  # known for m1 only
    # the bonus tier: m1's types x and y (its solutions say them) and m2's "unknown" (from its store)
    # are each a type of one mouse here, so the total is the mean over the three types
    bonus = report["tiers"]["live_test_bonus"]
    types = {**m1["live_test_bonus"]["by_stimulus_type"], **m2["live_test_bonus"]["by_stimulus_type"]}
    assert set(bonus["by_stimulus_type"]) == set(types) == {"x", "y", "unknown"}
    assert bonus["n_mice"] == 2 and bonus["by_stimulus_type"]["unknown"]["mice"] == ["m2"]
    assert bonus["single_trial_correlation"] == pytest.approx(
        np.mean([t["single_trial_correlation"] for t in types.values()]))
    assert m1["oracle"]["ceiling"] is not None
    assert report["tracks"]["main"]["final"] == report["tiers"]["final_test_main"]["single_trial_correlation"]
    assert report["tracks"]["bonus"]["final"] is None
    assert report["settings"]["window"] == WINDOW.to_dict()
    neurons = pd.read_parquet(tmp_path / "n.parquet")
    assert list(neurons.columns) == list(NEURON_COLUMNS)
    assert len(neurons) == 2 * 4 * 6
    assert set(neurons["mouse"]) == {"m1", "m2"}
    assert neurons[neurons["mouse"] == "m1"]["ceiling"].notna().all()
    assert neurons[neurons["mouse"] == "m2"]["ceiling"].isna().all()


def test_the_bonus_total_is_per_type_over_the_mice_that_have_it_then_over_types(tmp_path):
    """As the competition's scorer: a mouse lacking a type does not enter that type's mean. Mouse
    m1 shows types x and y, m2 only x; the mean of the mice's own means differs."""
    stores, predictions, solutions = {}, {}, {}
    for k, name in enumerate(["m1", "m2"]):
        store = _store(tmp_path, name, seed=k)
        sol = _solutions(store)
        if name == "m2":
            sol.loc[sol["tier"] == "live_test_bonus", "stimulus_type"] = "x"
        preds = _predictions(store, sol, noise=0.2 + 0.6 * k, seed=k)
        rng = np.random.default_rng(7 + k)
        y = (sol["stimulus_type"] == "y").to_numpy()
        preds.values[y] = rng.random(preds.values[y].shape)  # m1's type y is poorly predicted
        save_predictions(tmp_path / f"{name}.zarr", preds)
        write_solutions(tmp_path / f"{name}.parquet", sol.to_dict("records"))
        stores[name], predictions[name], solutions[name] = store.path, tmp_path / f"{name}.zarr", tmp_path / f"{name}.parquet"
    report = evaluate(predictions, stores, solutions, WINDOW, ["live_test_bonus"], tmp_path / "s.json",
                      tmp_path / "n.parquet")
    m1 = report["mice"]["m1"]["tiers"]["live_test_bonus"]["by_stimulus_type"]
    m2 = report["mice"]["m2"]["tiers"]["live_test_bonus"]["by_stimulus_type"]
    assert set(m1) == {"x", "y"} and set(m2) == {"x"}
    metric = "single_trial_correlation"
    x = (m1["x"][metric] + m2["x"][metric]) / 2
    scorer = (x + m1["y"][metric]) / 2
    per_mouse_first = ((m1["x"][metric] + m1["y"][metric]) / 2 + m2["x"][metric]) / 2
    total = report["tiers"]["live_test_bonus"]
    assert total[metric] == pytest.approx(scorer)
    assert total["by_stimulus_type"]["x"][metric] == pytest.approx(x)
    assert total["by_stimulus_type"]["y"]["mice"] == ["m1"]
    assert abs(scorer - per_mouse_first) > 0.01  # the two rules differ here
    assert report["tracks"]["bonus"]["live"] == pytest.approx(scorer)
