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
    result = run_snakemake("-n", "--configfile", "config/sensorium2023.yaml", "--quiet", "rules")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned_jobs(result.stdout + result.stderr)
    n_mice, n_models, n_folds = len(config["mice"]), len(config["models"]), config["training"]["n_folds"]
    assert n_mice == 10
    assert all(m["url"].startswith("https://gin.g-node.org/pollytur/") for m in config["mice"])
    assert jobs == {
        "all": 1,
        "download": n_mice,
        "convert": n_mice,
        "train": n_models * n_folds,
        "predict": n_models * n_folds,
        "ensemble": n_mice,
        "evaluate": n_models * n_folds + 1,
        "submission": 1,
        "report_scores": 1,
        "report_histograms": 1,
        "report_training": 1,
        "report_correlation_map": 1,
        "report_software": 1,
        "report_traces": n_mice,
    }


def test_invalid_config_is_rejected_with_the_key(tmp_path):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["training"]["n_fold"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = run_snakemake("-n", "--configfile", str(bad), "-d", str(tmp_path), "-s", str(ROOT / "workflow/Snakefile"))
    assert result.returncode != 0
    assert "n_fold" in result.stdout + result.stderr
