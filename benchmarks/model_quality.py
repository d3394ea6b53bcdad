"""Model quality on the simulated benchmark: per model, training time and the single-trial
correlation on the final main and bonus tiers, with its fraction of the noise ceiling.

Runs the DAG of ``config/benchmark.yaml`` (or ``--configfile``) in ``--workdir`` (default
``benchmarks/.cache/model_quality``; a rerun only trains what changed), then prints one row
per scored entry (each model's folds, and the ensemble) and writes the table as Markdown to
``<workdir>/model_quality.md``.

    .venv/bin/python benchmarks/model_quality.py [--cores 2] [--configfile config/benchmark.yaml]
    .venv/bin/python benchmarks/model_quality.py --models gru_cpu_long          # one model only
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("final_test_main", "final_test_bonus")


def _config(path: Path, workdir: Path, model_dir: Path | None, models: list[str] | None) -> tuple[Path, dict]:
    """The benchmark config with absolute paths (the DAG runs in ``workdir``), optionally with
    other models from another folder (the simulated mice stay the same, so they are reused)."""
    config = yaml.safe_load(path.read_text())
    config["model_dir"] = str((ROOT / (model_dir or config.get("model_dir", "config/models"))).resolve())
    if models:
        config["models"] = models
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "config.yaml"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out, config


def _entries(config: dict) -> list[tuple[str, list[str]]]:
    """(entry, training-benchmark files) of every model fold (stage 1 and distilled), in order."""
    training = config.get("training", {})
    folds = training.get("folds") or list(range(training.get("n_folds", 7)))
    distill = training.get("distillation", {}) or {}
    runs = list(config["models"])
    if distill.get("enabled"):
        runs += [f"{m}-distilled" for m in (distill.get("models") or config["models"])]
    mice = [m["name"] for m in config["mice"]]
    per_mouse = training.get("scope", "shared") == "per_mouse"
    out = []
    for run in runs:
        for fold in folds:
            units = [f"{run}/mice/{m}" for m in mice] if per_mouse else [run]
            out.append((f"{run}-fold{fold}", [f"results/benchmarks/train/{u}/fold{fold}.tsv" for u in units]))
    return out


def _seconds(workdir: Path, files: list[str]) -> float | None:
    total = 0.0
    for name in files:
        path = workdir / name
        if not path.exists():
            return None
        with path.open() as handle:
            total += float(next(csv.DictReader(handle, delimiter="\t"))["s"])
    return total


def _row(name: str, seconds: float | None, scores: dict) -> list[str]:
    cells = [name, "-" if seconds is None else f"{seconds / 60:.1f}"]
    for tier in TIERS:
        s = scores["tiers"].get(tier, {})
        r, fraction = s.get("single_trial_correlation"), s.get("fraction_of_ceiling")
        cells += ["-" if r is None else f"{r:.3f}", "-" if fraction is None else f"{fraction:.1%}"]
    ceiling = scores["tiers"].get("final_test_main", {}).get("ceiling")
    cells.append("-" if ceiling is None else f"{ceiling:.3f}")
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", type=Path, default=ROOT / "config/benchmark.yaml")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks/.cache/model_quality")
    parser.add_argument("--cores", default="2")
    parser.add_argument("--model-dir", type=Path, help="folder of the model configs (default: the config's)")
    parser.add_argument("--models", nargs="+", help="model configs to benchmark (default: the config's)")
    parser.add_argument("--no-run", action="store_true", help="only print the table of what was run before")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    configfile, config = _config(args.configfile, workdir, args.model_dir, args.models)
    entries = _entries(config)
    targets = [f"results/scores/{entry}.json" for entry, _ in entries] + ["results/scores/ensemble.json"]
    if not args.no_run:
        command = [sys.executable, "-m", "snakemake", *targets, "--cores", str(args.cores),
                   "-s", str(ROOT / "workflow/Snakefile"), "-d", str(workdir), "--configfile", str(configfile)]
        print("running:", " ".join(command), flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            print("the benchmark DAG failed; see the logs under", workdir / "results/logs", file=sys.stderr)
            return 1
    header = ["model", "training min", "final main r", "of ceiling", "final bonus r", "of ceiling", "main ceiling"]
    rows = []
    for entry, files in [*entries, ("ensemble", [f for _, fs in entries for f in fs])]:
        path = workdir / "results/scores" / f"{entry}.json"
        if path.exists():
            rows.append(_row(entry, _seconds(workdir, files), json.loads(path.read_text())))
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(table)
    print(text)
    (workdir / "model_quality.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
