"""The whole DAG on a tiny simulated config, as a user runs it: every stage's artifacts, a
valid submission, scores with the noise ceiling, nothing to redo on a second run, and a bad
archive stopped at conversion with nothing half-written."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from sensorium_pipeline.data.store import open_mouse
from test_workflow import ROOT, run_snakemake

TINY = ROOT / "tests/configs/tiny.yaml"
SNAKEFILE = str(ROOT / "workflow/Snakefile")
pytestmark = pytest.mark.slow


def tiny_config(tmp_path: Path, **changes) -> tuple[Path, dict]:
    config = yaml.safe_load(TINY.read_text())
    config["model_dir"] = str(ROOT / "tests/configs/models")
    config.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def snakemake_in(workdir: Path, configfile: Path, *args: str, timeout: int = 900):
    # targets first: --configfile takes every word after it
    return run_snakemake(
        *args, "--cores", "2", "-s", SNAKEFILE, "-d", str(workdir), "--configfile", str(configfile), timeout=timeout
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    configfile, config = tiny_config(workdir)
    result = snakemake_in(workdir, configfile)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return workdir, configfile, config


def test_every_stage_leaves_its_artifacts(tiny_run):
    workdir, _, config = tiny_run
    results = workdir / "results"
    for mouse in (m["name"] for m in config["mice"]):
        archive = results / "archives" / f"{mouse}.zip"
        recorded = (results / "archives" / f"{mouse}.zip.sha256").read_text().split()[0]
        assert recorded == hashlib.sha256(archive.read_bytes()).hexdigest()
        store = open_mouse(results / "data" / mouse)
        assert store.group.attrs["archive_sha256"] == recorded
        assert set(store.trials["tier"]) == {
            "train", "oracle", "live_test_main", "final_test_main", "live_test_bonus", "final_test_bonus"
        }
        for fold in range(config["training"]["n_folds"]):
            metrics = pd.read_csv(results / "models" / "tiny" / f"fold{fold}" / "metrics.csv")
            assert len(metrics) >= 1 and metrics["val_correlation"].notna().all()
            assert (results / "predictions" / f"tiny-fold{fold}" / f"{mouse}.zarr").is_dir()
        assert (results / "predictions" / "ensemble" / f"{mouse}.zarr").is_dir()
        assert (results / "logs" / "convert" / f"{mouse}.log").stat().st_size > 0


def test_scores_report_every_tier_with_the_noise_ceiling(tiny_run):
    workdir, _, config = tiny_run
    for entry in ("ensemble", "tiny-fold0", "tiny-fold1"):
        scores = json.loads((workdir / "results" / "scores" / f"{entry}.json").read_text())
        assert set(scores["tiers"]) == {"oracle", "live_test_main", "final_test_main", "live_test_bonus", "final_test_bonus"}
        for tier, summary in scores["tiers"].items():
            assert summary["n_mice"] == len(config["mice"])
            assert -1 <= summary["single_trial_correlation"] <= 1
            assert 0 < summary["ceiling"] <= 1, tier
        assert scores["tracks"]["main"]["final"] == scores["tiers"]["final_test_main"]["single_trial_correlation"]
        neurons = pd.read_parquet(workdir / "results" / "scores" / f"{entry}.neurons.parquet")
        assert len(neurons) == 5 * config["simulation"]["defaults"]["n_neurons"] * len(config["mice"])


def test_submission_files_follow_the_official_format(tiny_run):
    workdir, _, config = tiny_run
    out = workdir / "results" / "submission"
    mice = [m["name"] for m in config["mice"]]
    with zipfile.ZipFile(out / "main_track.zip") as zf:
        assert sorted(zf.namelist()) == ["predictions_final_main.parquet.brotli", "predictions_live_main.parquet.brotli"]
        table = pq.read_table(io.BytesIO(zf.read("predictions_final_main.parquet.brotli")))
    assert table.column_names == ["mouse", "trial_indices", "prediction", "neuron_ids"]
    frame = table.to_pandas()
    for mouse in mice:
        store = open_mouse(workdir / "results" / "data" / mouse)
        expected = store.trials.loc[store.trials["tier"] == "final_test_main", "trial_id"]
        rows = frame[frame["mouse"] == mouse]
        assert sorted(rows["trial_indices"]) == sorted(expected)
        first = np.stack(rows["prediction"].iloc[0])
        assert first.shape == (store.n_neurons, 90 - 50 - 1)  # frames 50..88 of a 90-frame trial
        assert list(rows["neuron_ids"].iloc[0]) == store.unit_ids.tolist()
    for name, member in (("bonus_live.zip", "predictions_live_test_bonus_ood.parquet.brotli"),
                         ("bonus_final.zip", "predictions_final_test_bonus_ood.parquet.brotli")):
        with zipfile.ZipFile(out / name) as zf:
            assert zf.namelist() == [member]
    csvs = sorted(p.relative_to(out / "csv").as_posix() for p in (out / "csv").rglob("*.csv"))
    assert len(csvs) == 4 * len(mice)
    sample = pd.read_csv(out / "csv" / mice[0] / "final_test_main.csv")
    assert list(sample.columns) == ["file_name", "predictions"]
    assert all(name.endswith(".npy") for name in sample["file_name"])
    matrix = np.asarray(json.loads(sample["predictions"].iloc[0]))
    assert matrix.ndim == 2 and matrix.shape[0] == config["simulation"]["defaults"]["n_neurons"]
    assert "..." not in sample["predictions"].iloc[0]


def test_a_second_run_has_nothing_to_do(tiny_run):
    workdir, configfile, _ = tiny_run
    result = snakemake_in(workdir, configfile, "-n")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def test_a_corrupted_archive_stops_conversion_and_leaves_no_store(tmp_path, tiny_run):
    tiny_dir, _, config = tiny_run
    mouse = config["mice"][0]["name"]
    source = tiny_dir / "results" / "archives" / f"{mouse}.zip"
    broken = tmp_path / f"{mouse}.zip"
    data = source.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # a truncated download
    configfile, _ = tiny_config(tmp_path, mice=[{"name": mouse, "url": str(broken)}])
    result = snakemake_in(tmp_path, configfile, f"results/data/{mouse}")
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "convert" / f"{mouse}.log").read_text()
    assert "ArchiveError" in log and f"{mouse}.zip" in log
    assert not (tmp_path / "results" / "data" / mouse).exists()
    leftovers = [p.name for p in (tmp_path / "results" / "data").iterdir()] if (tmp_path / "results" / "data").exists() else []
    assert leftovers == []
    broken.write_bytes(data)  # the fixed input converts
    result = snakemake_in(tmp_path, configfile, f"results/data/{mouse}")
    assert result.returncode == 0, result.stderr[-4000:]
    assert open_mouse(tmp_path / "results" / "data" / mouse).mouse == mouse


def cli(*args: str):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "sensorium_pipeline", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_the_command_line_inspects_validates_and_scores_without_snakemake(tiny_run):
    workdir, _, config = tiny_run
    results = workdir / "results"
    mice = [m["name"] for m in config["mice"]]
    stores = [arg for mouse in mice for arg in ("--store", str(results / "data" / mouse))]

    archive = json.loads(cli("inspect", str(results / "archives" / f"{mice[0]}.zip")).stdout)
    assert archive["root"] == mice[0] and archive["n_neurons"] == 24 and archive["trials"]["none"] == 2
    store = json.loads(cli("inspect", str(results / "data" / mice[1])).stdout)
    assert store["mouse"] == mice[1] and store["source_dtype"] == "float64"

    valid = cli("validate", str(results / "submission"), *stores)
    assert valid.returncode == 0, valid.stderr
    assert json.loads(valid.stdout)["valid"] is True
    wrong_window = cli("validate", str(results / "submission"), *stores, "--skip-first", "40")
    assert wrong_window.returncode == 2 and "shape" in wrong_window.stderr

    solutions = [arg for mouse in mice for arg in ("--solutions", str(results / "simulated" / f"{mouse}.solutions.parquet"))]
    predictions = [str(results / "predictions" / "ensemble" / f"{mouse}.zarr") for mouse in mice]
    scored = cli("score", *predictions, *stores, *solutions)
    assert scored.returncode == 0, scored.stderr
    expected = json.loads((results / "scores" / "ensemble.json").read_text())
    assert json.loads(scored.stdout)["tiers"] == expected["tiers"]

    table = cli("summary", str(results / "scores" / "ensemble.json"))
    assert table.returncode == 0 and "final_test_main" in table.stdout

    missing = cli("inspect", str(workdir / "nope.zip"))
    assert missing.returncode == 2 and "nope.zip" in missing.stderr


def test_the_report_renders_every_plot_the_scores_and_the_rule_graph(tiny_run):
    from test_report import assert_png_not_blank

    workdir, configfile, config = tiny_run
    out = workdir / "results" / "report"
    mice = [m["name"] for m in config["mice"]]
    plots = ["correlation_histograms.png", "training_curves.png", "correlation_map.png"]
    plots += [f"traces/{mouse}.png" for mouse in mice]
    for name in plots:
        assert_png_not_blank(out / name)
    scores = json.loads((workdir / "results" / "scores" / "ensemble.json").read_text())
    table = (out / "scores.html").read_text()
    final = scores["tiers"]["final_test_main"]
    assert f"{final['single_trial_correlation']:.3f}" in table and f"{final['ceiling']:.3f}" in table
    assert all(mouse in table for mouse in mice) and "tiny-fold1" in table
    software = (out / "software.html").read_text()
    assert "matplotlib==3.11.2" in software and "snakemake" in software and mice[0] in software

    html = workdir / "results" / "report.html"
    result = snakemake_in(workdir, configfile, "--report", str(html))
    assert result.returncode == 0, result.stderr[-4000:]
    text = html.read_text()
    for name in [*plots, "scores.html", "software.html"]:
        assert Path(name).name in text, name
    assert "rulegraph_spec" in text and '"report_traces"' in text and '"train"' in text
    assert '<script src="http' not in text  # self-contained: no script fetched from elsewhere


def test_the_command_line_draws_the_report_without_snakemake(tiny_run, tmp_path):
    from test_report import assert_png_not_blank

    workdir, _, config = tiny_run
    result = cli("report", str(workdir / "results"), "--out", str(tmp_path / "plots"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["skipped"] == []
    names = {Path(p).relative_to(tmp_path / "plots").as_posix() for p in summary["written"]}
    mice = [m["name"] for m in config["mice"]]
    assert names == {"scores.html", "correlation_histograms.png", "training_curves.png", "correlation_map.png"} | {
        f"traces/{mouse}.png" for mouse in mice
    }
    for name in names - {"scores.html"}:
        assert_png_not_blank(tmp_path / "plots" / name)


def test_the_command_line_report_takes_the_solutions_the_config_names(tiny_run, tmp_path):
    """With --config, a mouse's traces are drawn against its mice[].solutions (here a copy of
    the simulator's table under another name); a named table that is missing is an error."""
    import shutil

    workdir, _, config = tiny_run
    mouse = config["mice"][0]["name"]
    truth = tmp_path / "truth.parquet"
    shutil.copyfile(workdir / "results" / "simulated" / f"{mouse}.solutions.parquet", truth)
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump({"mice": [{"name": mouse, "url": "https://example.org/a.zip",
                                                     "solutions": str(truth)}]}))
    out = tmp_path / "plots"
    result = cli("report", str(workdir / "results"), "--out", str(out), "--config", str(configfile))
    assert result.returncode == 0, result.stderr
    assert str(out / "traces" / f"{mouse}.png") in json.loads(result.stdout)["written"]
    truth.unlink()
    result = cli("report", str(workdir / "results"), "--out", str(out), "--config", str(configfile))
    assert result.returncode == 2 and str(truth) in result.stderr and "mice[].solutions" in result.stderr


@pytest.mark.parametrize(
    ("training", "units"),
    [
        ({"distillation": {"enabled": True}}, ["tiny", "tiny-distilled"]),
        ({"scope": "per_mouse"}, ["tiny/mice/dynamic90101-1-1-Tiny-0a1b2c3d", "tiny/mice/dynamic90102-2-2-Tiny-0a1b2c3d"]),
    ],
    ids=["distillation", "per_mouse"],
)
def test_distillation_and_per_mouse_training_run_to_scores(tmp_path, training, units):
    """The two other training plans, fold 0 only: every planned model trains, predicts and is scored."""
    base = yaml.safe_load(TINY.read_text())["training"]
    configfile, config = tiny_config(tmp_path, training={**base, "folds": [0], **training})
    result = snakemake_in(tmp_path, configfile, "results/scores/ensemble.json")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    results = tmp_path / "results"
    for unit in units:
        assert (results / "models" / unit / "fold0" / "model.pt").is_file(), unit
        metrics = pd.read_csv(results / "models" / unit / "fold0" / "metrics.csv")
        assert len(metrics) >= 1 and metrics["val_correlation"].notna().all(), unit
    scores = json.loads((results / "scores" / "ensemble.json").read_text())
    for summary in scores["tiers"].values():
        assert summary["n_mice"] == len(config["mice"])
        assert -1 <= summary["single_trial_correlation"] <= 1
