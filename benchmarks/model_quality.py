"""Model quality on the simulated benchmark: per model, training time and the single-trial
correlation on the final main and bonus tiers, with its fraction of the noise ceiling.

Runs the DAG of ``config/benchmark.yaml`` (or ``--configfile``) in ``--workdir`` (default
``benchmarks/.cache/model_quality``; a rerun only trains what changed), then prints one row
per scored entry (each model's folds, and the ensemble) and writes the table as Markdown to
``<workdir>/model_quality.md``.

    .venv/bin/python benchmarks/model_quality.py [--cores 2] [--configfile config/benchmark.yaml]
    .venv/bin/python benchmarks/model_quality.py --models gru_cpu_long          # one model only
    .venv/bin/python benchmarks/model_quality.py --seeds 0 1 2                  # medians over 3 seeds
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("final_test_main", "final_test_bonus")


def _config(
    path: Path, workdir: Path, model_dir: Path | None, models: list[str] | None, seed: int | None = None
) -> tuple[Path, dict]:
    """The benchmark config with absolute paths (the DAG runs in ``workdir``), optionally with
    other models from another folder (the simulated mice stay the same, so they are reused)
    and another training seed."""
    config = yaml.safe_load(path.read_text())
    config["model_dir"] = str((ROOT / (model_dir or config.get("model_dir", "config/models"))).resolve())
    if models:
        config["models"] = models
    if seed is not None:
        config.setdefault("training", {})["seed"] = seed
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


def _measure(name: str, seconds: float | None, scores: dict) -> dict:
    """One entry's figures: training minutes, and per final tier r and its fraction of the ceiling."""
    out = {"model": name, "minutes": None if seconds is None else seconds / 60}
    for tier in TIERS:
        s = scores["tiers"].get(tier, {})
        out[tier] = (s.get("single_trial_correlation"), s.get("fraction_of_ceiling"))
    out["ceiling"] = scores["tiers"].get("final_test_main", {}).get("ceiling")
    return out


def _median_cell(values: list[float | None], fmt: str) -> str:
    """The median of one figure over seeds, with its range when there are several."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    cell = format(statistics.median(values), fmt)
    if len(values) > 1:
        cell += f" ({format(min(values), fmt)}–{format(max(values), fmt)})"
    return cell


def _row(runs: list[dict]) -> list[str]:
    """One table row from the same entry's measurements under every seed."""
    cells = [runs[0]["model"], _median_cell([r["minutes"] for r in runs], ".1f")]
    for tier in TIERS:
        cells += [_median_cell([r[tier][0] for r in runs], ".3f"), _median_cell([r[tier][1] for r in runs], ".1%")]
    cells.append(_median_cell([r["ceiling"] for r in runs], ".3f"))
    return cells


def _share_data(first: Path, other: Path) -> None:
    """Let a seed's workdir use the first seed's simulated, downloaded and converted mice (they
    do not depend on the training seed)."""
    for name in ("simulated", "archives", "data"):
        link, target = other / "results" / name, first / "results" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and target.exists():
            link.symlink_to(target, target_is_directory=True)


def _run(workdir: Path, configfile: Path, targets: list[str], cores: str) -> bool:
    command = [sys.executable, "-m", "snakemake", *targets, "--cores", cores,
               "-s", str(ROOT / "workflow/Snakefile"), "-d", str(workdir), "--configfile", str(configfile)]
    print("running:", " ".join(command), flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        print("the benchmark DAG failed; see the logs under", workdir / "results/logs", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", type=Path, default=ROOT / "config/benchmark.yaml")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks/.cache/model_quality")
    parser.add_argument("--cores", default="2")
    parser.add_argument("--model-dir", type=Path, help="folder of the model configs (default: the config's)")
    parser.add_argument("--models", nargs="+", help="model configs to benchmark (default: the config's)")
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="training seeds, each in <workdir>/seed<k> (default: the config's seed, in <workdir>)")
    parser.add_argument("--no-run", action="store_true", help="only print the table of what was run before")
    args = parser.parse_args(argv)
    root = args.workdir.resolve()
    seeds = args.seeds or [None]
    measured: dict[str, list[dict]] = {}
    for seed in seeds:
        workdir = root if seed is None else root / f"seed{seed}"
        configfile, config = _config(args.configfile, workdir, args.model_dir, args.models, seed)
        if seed is not None and seed != seeds[0]:
            _share_data(root / f"seed{seeds[0]}", workdir)
        entries = _entries(config)
        targets = [f"results/scores/{entry}.json" for entry, _ in entries] + ["results/scores/ensemble.json"]
        if not args.no_run and not _run(workdir, configfile, targets, str(args.cores)):
            return 1
        for entry, files in [*entries, ("ensemble", [f for _, fs in entries for f in fs])]:
            path = workdir / "results/scores" / f"{entry}.json"
            if path.exists():
                measured.setdefault(entry, []).append(_measure(entry, _seconds(workdir, files), json.loads(path.read_text())))
    header = ["model", "training min", "final main r", "of ceiling", "final bonus r", "of ceiling", "main ceiling"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(_row(runs)) + " |" for runs in measured.values()]
    text = "\n".join(table)
    if len(seeds) > 1:
        text = f"medians over the seeds {seeds} (range in brackets)\n\n" + text
    print(text)
    (root / "model_quality.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
