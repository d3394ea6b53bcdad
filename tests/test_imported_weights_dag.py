"""The DAG from published weights: a model entry ``{name, weights}`` imports the reference's
fold checkpoints (here the fixture's stand-ins for the tiny DAG's two mice) instead of
training, then predicts, ensembles, scores and writes a valid submission."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from sensorium_pipeline.models import load_trained
from test_end_to_end import snakemake_in, tiny_config
from test_workflow import ROOT, planned_jobs

pytestmark = pytest.mark.slow
WEIGHTS = ROOT / "tests/data/dwiseneuro/experiments/tiny_001"


def published_config(tmp_path, **entry):
    base = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    mice = [m["name"] for m in base["mice"]]
    model = {"name": "published", "weights": str(WEIGHTS), "mice": mice, **entry}
    # fewer test trials and windows every 8 frames keep the CPU run short (the reference's
    # every-offset average, stride 1, is checked against its recording in test_dwiseneuro_reference)
    tiers = {tier: {"n_stimuli": 1, "n_repeats": 2} for tier in base["simulation"]["defaults"]["tiers"]}
    simulation = {"defaults": {**base["simulation"]["defaults"], "tiers": tiers}}
    return tiny_config(
        tmp_path, models=[model], simulation=simulation, prediction={"window_frames": None, "stride": 8}
    )


def test_published_weights_reach_a_valid_submission_without_training(tmp_path):
    configfile, config = published_config(tmp_path)
    plan = snakemake_in(tmp_path, configfile, "-n")
    assert plan.returncode == 0, plan.stderr[-4000:]
    jobs = planned_jobs(plan.stdout)
    assert jobs.get("import_weights") == 2 and "train" not in jobs

    result = snakemake_in(tmp_path, configfile)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    results = tmp_path / "results"
    assert not (results / "logs" / "train").exists()
    for fold in (0, 1):
        trained = load_trained(results / "models" / "published" / f"fold{fold}" / "model.pt")
        assert trained.extra["imported_from"].endswith(".pth") and trained.model_config.inputs == "raw"
        assert trained.extra["training"]["targets"] == "raw"
    # the two folds are the two checkpoints, not one copied twice
    a, b = (torch.load(results / "models/published" / f"fold{k}/model.pt", weights_only=True) for k in (0, 1))
    assert not torch.equal(a["state_dict"]["core.stem.0.weight"], b["state_dict"]["core.stem.0.weight"])

    mice = [m["name"] for m in config["mice"]]
    stores = [arg for mouse in mice for arg in ("--store", str(results / "data" / mouse))]
    valid = subprocess.run(
        [sys.executable, "-m", "sensorium_pipeline", "validate", str(results / "submission"), *stores],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert valid.returncode == 0, valid.stderr
    scores = json.loads((results / "scores" / "ensemble.json").read_text())
    assert set(scores["tiers"]) >= {"oracle", "final_test_main"}


def test_an_imported_model_must_cover_the_configured_mice(tmp_path):
    configfile, _ = published_config(tmp_path, mice=["dynamic90101-1-1-Tiny-0a1b2c3d"])
    plan = snakemake_in(tmp_path, configfile, "-n")
    assert plan.returncode != 0
    assert "dynamic90102-2-2-Tiny-0a1b2c3d" in plan.stdout + plan.stderr


def test_the_published_overlay_plans_the_winning_ensemble_with_no_training(tmp_path):
    from test_workflow import run_snakemake

    for experiment in ("true_batch_001", "distillation_001"):
        for fold in range(7):
            (tmp_path / "data/experiments" / experiment / f"fold_{fold}").mkdir(parents=True)
    result = run_snakemake(
        "-n", "-s", str(ROOT / "workflow/Snakefile"), "-d", str(tmp_path), "--configfile",
        str(ROOT / "config/sensorium2023.yaml"), str(ROOT / "config/sensorium2023_published.yaml"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = planned_jobs(result.stdout)
    assert jobs["import_weights"] == 14 and "train" not in jobs
    assert jobs["predict"] == 14 * 10 and jobs["ensemble"] == 10
