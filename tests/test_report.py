"""The report's plots, tables and versions page on small synthetic data, and the command
line's help. The report rules themselves run in the tiny end-to-end run (test_end_to_end)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from factories import make_store
from sensorium_pipeline.__main__ import build_parser, main
from sensorium_pipeline.data.store import open_mouse
from sensorium_pipeline.report import inputs, plots, tables, versions
from sensorium_pipeline.scoring.evaluate import normalized_targets, solutions_from_store
from sensorium_pipeline.scoring.metrics import EvaluationWindow
from sensorium_pipeline.scoring.predictions import Predictions, save_predictions

MIN_STD = 0.02  # of RGB values in [0, 1]: a plot with lines and text is far above, a blank one is 0
MIN_COLOURS = 8


def assert_png_not_blank(path: str | Path) -> None:
    """The file exists, decodes as an image, and is not one flat colour."""
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 0, path
    image = imread(path)  # raises on a file that is not a decodable PNG
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50, image.shape
    rgb = image[..., :3].reshape(-1, 3)
    assert float(rgb.std()) > MIN_STD, f"{path}: nearly uniform image (std {rgb.std():.4f})"
    assert len(np.unique(rgb, axis=0)) >= MIN_COLOURS, f"{path}: only {len(np.unique(rgb, axis=0))} colours"


def neuron_table(rng: np.random.Generator, entries=("ensemble", "m-fold0", "m-fold1"), mice=("a", "b")) -> pd.DataFrame:
    rows = []
    for entry in entries:
        for mouse in mice:
            for tier in ("oracle", "final_test_main"):
                n = 40
                rows.append(
                    pd.DataFrame(
                        {
                            "entry": entry,
                            "mouse": mouse,
                            "tier": tier,
                            "unit_id": np.arange(n),
                            "x": rng.uniform(-300, 300, n),
                            "y": rng.uniform(-300, 300, n),
                            "z": rng.uniform(100, 300, n),
                            "single_trial_correlation": rng.uniform(-0.1, 0.6, n),
                            "ceiling": rng.uniform(0.5, 0.9, n),
                        }
                    )
                )
    return pd.concat(rows, ignore_index=True)


def test_the_blank_check_rejects_an_empty_figure(tmp_path):
    path = plots.save_png(Figure(figsize=(3, 2)), tmp_path / "blank.png")
    with pytest.raises(AssertionError, match="uniform"):
        assert_png_not_blank(path)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(Exception):
        assert_png_not_blank(tmp_path / "junk.png")


def test_correlation_histograms_draw_one_panel_per_entry_ensemble_first(tmp_path):
    neurons = neuron_table(np.random.default_rng(0))
    figure = plots.correlation_histograms(neurons, "final_test_main")
    titles = [ax.get_title() for ax in figure.axes if ax.get_visible()]
    assert titles == ["ensemble: 80 neurons", "m-fold0: 80 neurons", "m-fold1: 80 neurons"]
    assert_png_not_blank(plots.save_png(figure, tmp_path / "hist.png"))


def test_histograms_without_ceiling_or_data_still_render(tmp_path):
    neurons = neuron_table(np.random.default_rng(1)).drop(columns="ceiling")
    assert_png_not_blank(plots.save_png(plots.correlation_histograms(neurons, "oracle"), tmp_path / "a.png"))
    assert_png_not_blank(plots.save_png(plots.correlation_histograms(neurons, "live_test_bonus"), tmp_path / "b.png"))


def test_training_curves_plot_every_numeric_column_even_new_ones(tmp_path):
    rng = np.random.default_rng(2)
    metrics = pd.concat(
        [
            pd.DataFrame(
                {
                    "epoch": np.arange(6),
                    "train_loss": 1 - 0.05 * np.arange(6) + rng.normal(0, 0.01, 6),
                    "val_correlation": 0.1 + 0.03 * np.arange(6),
                    "lr": 0.005 * 0.5 ** np.arange(6),
                    "seconds": rng.uniform(1, 2, 6),
                    "grad_norm": rng.uniform(0, 3, 6),  # a column the plot has never heard of
                    "note": "x",  # text: not plotted
                }
            ).assign(model=model, fold=fold)
            for model in ("a", "b")
            for fold in (0, 1)
        ],
        ignore_index=True,
    )
    figure = plots.training_curves(metrics)
    labels = [ax.get_ylabel() for ax in figure.axes if ax.get_visible()]
    assert labels[:2] == [plots.METRIC_LABELS["train_loss"], plots.METRIC_LABELS["val_correlation"]]
    assert "grad_norm" in labels and "note" not in labels and len(labels) == 5
    assert len(figure.axes[0].get_lines()) == 4  # 2 models x 2 folds
    assert_png_not_blank(plots.save_png(figure, tmp_path / "training.png"))
    # an older metrics.csv with only the loss still plots
    old = metrics[["epoch", "train_loss", "model", "fold"]]
    assert_png_not_blank(plots.save_png(plots.training_curves(old), tmp_path / "old.png"))


def test_correlation_map_has_a_panel_per_mouse(tmp_path):
    neurons = neuron_table(np.random.default_rng(3), entries=("ensemble",), mice=("a", "b", "c"))
    figure = plots.correlation_map(neurons, "final_test_main", ["a", "b", "c"])
    assert [ax.get_title() for ax in figure.axes if ax.get_title()] == ["a", "b", "c"]
    assert_png_not_blank(plots.save_png(figure, tmp_path / "map.png"))


def test_prediction_traces_plot(tmp_path):
    rng = np.random.default_rng(4)
    traces = inputs.Traces(
        mouse="a", tier="oracle", unit_ids=[1, 2, 3, 4], labels=["best", "best", "worst", "worst"],
        correlations=[0.6, 0.5, 0.0, -0.1], trial_ids=[3, 5], boundaries=[0, 30],
        recorded=rng.gamma(2, 1, (4, 60)), predicted=rng.gamma(2, 1, (4, 60)),
    )
    figure = plots.prediction_traces(traces)
    assert len(figure.axes) == 4
    assert_png_not_blank(plots.save_png(figure, tmp_path / "traces.png"))


def test_save_png_leaves_nothing_behind_on_failure(tmp_path):
    figure = Figure()
    figure.subplots().plot([0, 1], [0, 1])
    figure.savefig = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full"))
    with pytest.raises(RuntimeError):
        plots.save_png(figure, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_pick_neurons_never_repeats_a_neuron():
    frame = pd.DataFrame({"unit_id": [5, 6, 7, 8], "single_trial_correlation": [0.1, np.nan, 0.4, 0.2]})
    assert inputs.pick_neurons(frame, 2) == ([7, 8], [5])
    assert inputs.pick_neurons(frame, 1) == ([7], [5])


def test_pick_tier_prefers_the_ranking_tier_then_released_ones():
    frame = pd.DataFrame(
        {"tier": ["oracle", "final_test_main", "live_test_main"], "single_trial_correlation": [0.1, np.nan, 0.3]}
    )
    assert inputs.pick_tier(frame) == "live_test_main"  # final has no finite value (withheld)
    assert inputs.pick_tier(frame[frame["tier"] == "oracle"]) == "oracle"
    assert inputs.pick_tier(frame[frame["tier"] == "final_test_main"]) is None


def test_load_traces_cuts_the_scored_frames_of_the_picked_neurons(tmp_path):
    store_path = make_store(tmp_path / "store", n_neurons=10, valid_frames=36)
    store = open_mouse(store_path)
    rng = np.random.default_rng(5)
    trials = store.trials
    values = rng.random((len(trials), store.t_pad, store.n_neurons), dtype=np.float32)
    preds = Predictions(store.mouse, trials["trial_id"], trials["tier"], values, np.full(len(trials), 36), store.unit_ids)
    save_predictions(tmp_path / "p.zarr", preds)
    correlation = np.linspace(-0.2, 0.7, store.n_neurons)
    neurons = pd.DataFrame(
        {"mouse": store.mouse, "tier": "oracle", "unit_id": store.unit_ids, "single_trial_correlation": correlation}
    )
    window = EvaluationWindow(skip_first=5, max_frames=300, skip_last=1)
    traces = inputs.load_traces(tmp_path / "p.zarr", store_path, None, neurons, window, k=2, n_trials=3)
    ids = store.unit_ids.tolist()
    assert traces.tier == "oracle"
    assert traces.unit_ids == [ids[-1], ids[-2], ids[0], ids[1]]
    assert traces.labels == ["best", "best", "worst", "worst"]
    assert traces.correlations == pytest.approx([0.7, correlation[-2], -0.2, correlation[1]])
    oracle = trials[trials["tier"] == "oracle"].sort_values("trial_id")
    assert traces.trial_ids == oracle["trial_id"].head(3).tolist()
    assert traces.boundaries == [0, 30, 60] and traces.recorded.shape == (4, 90) == traces.predicted.shape
    first = oracle["row"].iloc[0]
    columns = [ids.index(u) for u in traces.unit_ids]
    np.testing.assert_allclose(traces.predicted[:, :30], values[first, 5:35][:, columns].T)
    rows = solutions_from_store(store, ["oracle"]).sort_values("trial_indices").head(1)
    expected = normalized_targets(rows, store, window)[0][:, columns].T
    np.testing.assert_allclose(traces.recorded[:, :30], expected)


def test_load_traces_names_a_prediction_file_that_lacks_a_trial(tmp_path):
    store_path = make_store(tmp_path / "store", n_neurons=6)
    store = open_mouse(store_path)
    train = store.trials[store.trials["tier"] == "train"]
    preds = Predictions(
        store.mouse, train["trial_id"], train["tier"], np.zeros((len(train), store.t_pad, 6)), np.full(len(train), 36),
        store.unit_ids,
    )
    save_predictions(tmp_path / "p.zarr", preds)
    neurons = pd.DataFrame({"mouse": store.mouse, "tier": "oracle", "unit_id": store.unit_ids,
                            "single_trial_correlation": np.arange(6) / 10})
    with pytest.raises(inputs.ReportInputError, match="p.zarr: no prediction for trial"):
        inputs.load_traces(tmp_path / "p.zarr", store_path, None, neurons, EvaluationWindow(5, 300, 1))


def scores_json(single: float, ceiling: float | None) -> dict:
    tier = {
        "single_trial_correlation": single, "correlation_to_average": single + 0.1, "feve": 0.3,
        "ceiling": ceiling, "fraction_of_ceiling": None if ceiling is None else single / ceiling,
        "n_mice": 1, "n_trials": 6,
    }
    return {
        "settings": {"window": {"skip_first": 50, "max_frames": 300, "skip_last": 1}},
        "mice": {"mouse-a": {"tiers": {"final_test_main": tier}}},
        "tiers": {"final_test_main": tier},
        "tracks": {"main": {"live": None, "final": single}, "bonus": {"live": None, "final": None}},
    }


def test_scores_table_shows_tracks_tiers_mice_and_the_ceiling():
    page = tables.scores_html({"m-fold0": scores_json(0.2, 0.8), "ensemble": scores_json(0.25, 0.8)})
    assert page.index("Leaderboard tracks") < page.index("Per tier") < page.index("Per mouse")
    assert page.index("<td>ensemble</td>") < page.index("<td>m-fold0</td>")  # the ensemble first
    assert '<td class="n">0.250</td>' in page and '<td class="n">0.800</td>' in page
    assert '<td class="n">31.2%</td>' in page  # 0.25 / 0.8
    assert "mouse-a" in page and "final_test_main" in page
    real = tables.scores_html({"ensemble": scores_json(0.25, None)})
    assert '<td class="n">–</td>' in real  # no ceiling on real data


def test_unreadable_inputs_are_named(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text("{not json")
    with pytest.raises(inputs.ReportInputError, match="s.json: cannot read the scores JSON"):
        inputs.load_scores({"e": bad})
    bad.write_text(json.dumps({"tiers": {}}))
    with pytest.raises(inputs.ReportInputError, match="expected the keys"):
        inputs.load_scores({"e": bad})
    csv = tmp_path / "metrics.csv"
    csv.write_text("step,train_loss\n0,1.0\n")
    with pytest.raises(inputs.ReportInputError, match="metrics.csv: training metrics have no 'epoch'"):
        inputs.load_metrics({("m", 0): csv})


def test_versions_page_lists_packages_envs_and_config(tmp_path):
    env = tmp_path / "report.yaml"
    env.write_text("dependencies:\n  - matplotlib==3.11.2\n")
    record = versions.software_record([env], tmp_path)
    assert record["packages"]["numpy"] == np.__version__
    assert versions.package_versions(["no-such-package-xyz"]) == {"no-such-package-xyz": None}
    page = versions.versions_html(record, {"models": ["demo_cpu"], "training": {"n_folds": 4}}, {"demo_cpu": "model: {}\n"})
    assert "matplotlib==3.11.2" in page and "n_folds: 4" in page and "model config demo_cpu" in page
    assert f"<td>numpy</td><td>{np.__version__}</td>" in page


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_has_help_with_a_description_and_an_example(capsys):
    commands = subcommands()
    assert {"inspect", "validate", "score", "convert", "simulate", "summary"} <= set(commands)
    for name, sub in commands.items():
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert f"usage: python -m sensorium_pipeline {name}" in text
        assert sub.description and sub.description.split()[0] in text, name
        assert "example:" in text and f"python -m sensorium_pipeline {name} " in text, name
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--help" in capsys.readouterr().out


def test_the_command_line_report_finds_every_training_unit(tmp_path):
    from sensorium_pipeline.report.build import _metrics_files

    for unit in ("m", "m-distilled", "m/mice/mouse-a"):
        for fold in (0, 1):
            path = tmp_path / unit / f"fold{fold}" / "metrics.csv"
            path.parent.mkdir(parents=True)
            path.write_text("epoch,train_loss\n0,1.0\n")
    (tmp_path / "m" / "other").mkdir()
    (tmp_path / "m" / "other" / "metrics.csv").write_text("epoch\n0\n")  # not a fold folder
    assert sorted(_metrics_files(tmp_path)) == [
        ("m", 0), ("m", 1), ("m-distilled", 0), ("m-distilled", 1), ("m/mice/mouse-a", 0), ("m/mice/mouse-a", 1)
    ]


def test_the_command_line_report_names_a_results_folder_without_scores(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path / 'scores'}: no scores JSON found" in capsys.readouterr().err


def test_data_table_shows_the_response_scale_beside_the_ceiling():
    from sensorium_pipeline.data.response_stats import ResponseStatistics

    def stats(mouse, ceiling):
        return ResponseStatistics(
            mouse=mouse, n_neurons=300, n_frames=90000, mean=(1.2, 2.0, 3.1), std=(6.4, 8.5, 11.3),
            max=(228.0, 430.0, 679.0), largest=2111.0, negative_fraction=0.035, negative_trials=300,
            train_trials=300, ceiling=ceiling,
        )  # fmt: skip

    page = tables.data_html([stats("sim-a", 0.446), stats("real-b", None)])
    assert "sim-a" in page and "real-b" in page and "2.11e+03" in page and "3.50%" in page
    assert '<td class="n">0.446</td>' in page and '<td class="n">–</td>' in page
    assert ResponseStatistics.from_dict(stats("x", None).to_dict()) == stats("x", None)
