"""The Snakemake workflow as a user drives it: lint, the competition's dry run, config errors."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run_snakemake(*args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def planned_jobs(output: str) -> dict[str, int]:
    """Parse the job-count table a dry run prints."""
    counts: dict[str, int] = collections.Counter()
    for line in output.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match.group(1) == "total":
            break  # the table may be printed twice (dry run summary); read the first
        if match:
            counts[match.group(1)] += int(match.group(2))
    return dict(counts)


def test_lint_is_clean():
    result = run_snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_competition_dry_run_plans_the_leaderboard_reproduction():
    config = yaml.safe_load((ROOT / "config/sensorium2023.yaml").read_text())
    result = run_snakemake("-n", "--configfile", "config/sensorium2023.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned_jobs(result.stdout + result.stderr)
    n_mice, n_folds = len(config["mice"]), config["training"]["n_folds"]
    assert n_mice == 10 and n_folds == 7
    assert config["models"] == ["dwiseneuro", "baseline_factorized3d"]
    assert all(m["url"].startswith("https://gin.g-node.org/pollytur/") for m in config["mice"])
    # dwiseneuro in two stages (the 1st place's entry) and the baseline, each in 7 folds
    n_runs = len(config["models"]) + len(config["training"]["distillation"]["models"])
    assert jobs == {
        "all": 1,
        "download": n_mice,
        "convert": n_mice,
        "train": n_runs * n_folds,
        "predict": n_runs * n_folds * n_mice,
        "ensemble": n_mice,
        "evaluate": n_runs * n_folds + 1,
        "submission": 1,
        "report_scores": 1,
        "report_data": 1,
        "report_histograms": 1,
        "report_training": 1,
        "report_correlation_map": 1,
        "report_software": 1,
        "report_traces": n_mice,
    }
    # every training and prediction job asks for a GPU through Snakemake's gpu resource
    gpu_jobs = collections.Counter(
        rule for rule, resources in job_resources(result.stdout) if "gpu=1" in resources.split(", ")
    )
    assert gpu_jobs == {"train": n_runs * n_folds, "predict": n_runs * n_folds * n_mice}
    for fold in range(n_folds):
        assert f"results/models/dwiseneuro-distilled/fold{fold}/model.pt" in result.stdout
        assert f"results/predictions/dwiseneuro-distilled-fold{fold}/" in result.stdout
    # the second stage trains the winners' expansion-6 model, taught by the first stage's model of its fold
    configs = collections.Counter()
    for block in result.stdout.split("rule train:")[1:]:
        inputs, output = block.split("output:")[0], block.split("output:")[1].split("\n")[0]
        if "dwiseneuro-distilled/fold" in output:
            assert "results/models/dwiseneuro/fold" in inputs
        if "dwiseneuro" in output:
            configs[re.search(r"config/models/(\w+)\.yaml", inputs).group(1)] += 1
    assert configs == {"dwiseneuro": n_folds, "dwiseneuro_distill": n_folds}


def job_resources(output: str) -> list[tuple[str, str]]:
    """(rule, resources line) of every job a dry run lists."""
    jobs, rule = [], None
    for line in output.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):", line.strip()):
            rule = match.group(1)
        elif line.strip().startswith("resources:") and rule is not None:
            jobs.append((rule, line.strip().removeprefix("resources:").strip()))
            rule = None
    return jobs


def _demo_config(tmp_path: Path, **training) -> Path:
    """The demo config with ``training`` overrides, to be run in ``tmp_path`` (a fresh DAG)."""
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["training"].update(training)
    config["model_dir"] = str(ROOT / "config/models")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def dry_run_in(tmp_path: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(*args, "-n", "-s", str(ROOT / "workflow/Snakefile"), "-d", str(tmp_path),
                         "--configfile", str(configfile))


def test_per_mouse_scope_plans_one_training_job_per_mouse_model_and_fold(tmp_path):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    result = dry_run_in(tmp_path, _demo_config(tmp_path, scope="per_mouse"), "results/scores/ensemble.json")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned_jobs(result.stdout + result.stderr)
    n = len(config["mice"]) * len(config["models"]) * len(config["training"]["folds"])
    assert jobs["train"] == n and jobs["predict"] == n


def test_distillation_adds_a_second_stage_per_fold_and_needs_a_shared_model(tmp_path):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    result = dry_run_in(tmp_path, _demo_config(tmp_path, distillation={"enabled": True}), "results/scores/ensemble.json")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned_jobs(result.stdout + result.stderr)
    n_folds = len(config["training"]["folds"])
    assert jobs["train"] == 2 * n_folds and jobs["predict"] == 2 * n_folds * len(config["mice"])
    for fold in config["training"]["folds"]:  # each stage-2 job learns from the stage-1 model of its fold
        block = next(b for b in result.stdout.split("rule train:") if f"demo_cpu-distilled/fold{fold}/model.pt" in b)
        assert f"results/models/demo_cpu/fold{fold}/model.pt" in block.split("output:")[0]
    bad = _demo_config(tmp_path, distillation={"enabled": True}, scope="per_mouse")
    result = dry_run_in(tmp_path, bad)
    assert result.returncode != 0 and "scope" in result.stdout + result.stderr


def test_invalid_config_is_rejected_with_the_key(tmp_path):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["training"]["n_fold"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = run_snakemake("-n", "--configfile", str(bad), "-d", str(tmp_path), "-s", str(ROOT / "workflow/Snakefile"))
    assert result.returncode != 0
    assert "n_fold" in result.stdout + result.stderr
