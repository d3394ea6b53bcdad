"""Where the workflow's results live: the one owner of the ``results/`` layout.

The rule files (through ``workflow/rules/common.smk``) and the Snakemake-free readers
(:mod:`report.build`, the command line's ``report``) take every path from here, so they
cannot drift apart. Each function gives a path relative to ``root`` (``results`` for the
workflow, which runs in its working directory) as a string; a Snakemake wildcard such as
``"{mouse}"`` may stand for any name, so the same function writes a rule's output pattern
and a concrete file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESULTS = "results"
#: The entry of the averaged predictions (``results/predictions/ensemble/``).
ENSEMBLE = "ensemble"
SIMULATED_URL = "simulated"


def _join(root: str | Path, *parts: str) -> str:
    return "/".join((str(root).rstrip("/"), *parts))


def archive(mouse: str, root: str | Path = RESULTS) -> str:
    """The downloaded archive (its checksum beside it, ``.sha256``)."""
    return _join(root, "archives", f"{mouse}.zip")


def simulated_archive(mouse: str, root: str | Path = RESULTS) -> str:
    return _join(root, "simulated", f"{mouse}.zip")


def simulated_solutions(mouse: str, root: str | Path = RESULTS) -> str:
    return _join(root, "simulated", f"{mouse}.solutions.parquet")


def store(mouse: str, root: str | Path = RESULTS) -> str:
    """The converted (or ingested) store of a mouse."""
    return _join(root, "data", mouse)


def deeplake_export(mouse: str, root: str | Path = RESULTS) -> str:
    return _join(root, "deeplake", mouse)


def models_dir(root: str | Path = RESULTS) -> str:
    return _join(root, "models")


def fold_dir(unit: str, fold: int | str, root: str | Path = RESULTS) -> str:
    """A training unit's fold: ``<run>`` (shared) or ``<run>/mice/<mouse>`` (per mouse)."""
    return _join(root, "models", unit, f"fold{fold}")


def model(unit: str, fold: int | str, root: str | Path = RESULTS) -> str:
    return _join(fold_dir(unit, fold, root), "model.pt")


def metrics(unit: str, fold: int | str, root: str | Path = RESULTS) -> str:
    """The per-epoch training metrics of a unit's fold."""
    return _join(fold_dir(unit, fold, root), "metrics.csv")


def checkpoints(unit: str, fold: int | str, digest: str, root: str | Path = RESULTS) -> str:
    return _join(root, "checkpoints", unit, f"fold{fold}", digest)


def member(run: str, fold: int | str) -> str:
    """The prediction entry of one trained run's fold (an ensemble member)."""
    return f"{run}-fold{fold}"


def predictions(entry: str, mouse: str, root: str | Path = RESULTS) -> str:
    """An entry's predictions of a mouse (entries: :func:`member` names and :data:`ENSEMBLE`)."""
    return _join(root, "predictions", entry, f"{mouse}.zarr")


def scores_dir(root: str | Path = RESULTS) -> str:
    return _join(root, "scores")


def scores(entry: str, root: str | Path = RESULTS) -> str:
    return _join(root, "scores", f"{entry}.json")


def neuron_scores(entry: str, root: str | Path = RESULTS) -> str:
    return _join(root, "scores", f"{entry}.neurons.parquet")


#: The submission's files under ``results/submission/``, by the rule's output name.
SUBMISSION_FILES: dict[str, str] = {
    "main": "main_track.zip",
    "bonus_live": "bonus_live.zip",
    "bonus_final": "bonus_final.zip",
    "csv": "csv",
}


def submission(name: str, root: str | Path = RESULTS) -> str:
    """A submission file by its name in :data:`SUBMISSION_FILES`."""
    return _join(root, "submission", SUBMISSION_FILES[name])


#: The report's files under ``results/report/`` (besides ``traces/<mouse>.png``).
REPORT_FILES: tuple[str, ...] = (
    "scores.html",
    "data.html",
    "correlation_histograms.png",
    "training_curves.png",
    "correlation_map.png",
    "software.html",
)


def report(name: str, root: str | Path = RESULTS) -> str:
    return _join(root, "report", name)


def traces(mouse: str, root: str | Path = RESULTS) -> str:
    return _join(root, "report", "traces", f"{mouse}.png")


def solutions(mouse: Mapping[str, Any], root: str | Path = RESULTS) -> str | None:
    """The ground truth of a ``mice[]`` entry of the config: a simulated mouse's from the
    simulator, else its ``solutions`` key (``None``: scored on the tiers its archive releases)."""
    if mouse.get("url") == SIMULATED_URL:
        return simulated_solutions(str(mouse["name"]), root)
    given = mouse.get("solutions")
    return None if given is None else str(given)
