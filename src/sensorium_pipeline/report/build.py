"""The report's plots and scores table from a results folder, without Snakemake.

The command line's ``report`` finds what the workflow wrote under ``results/`` (scores,
per-neuron scores, training metrics, ensemble predictions, stores, solutions) where
:mod:`paths` says the workflow writes them, and draws the same items the report rules draw,
so a user can look at a run, or a copied part of one, without the DAG. The solutions of a
mouse are its config entry's (``mice[].solutions``, or a simulated mouse's own), when the
config is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import paths
from ..atomic import write_text_atomic
from ..errors import PathError
from ..scoring.metrics import EvaluationWindow
from . import plots
from .inputs import ENSEMBLE, load_metrics, load_neurons, load_scores, load_traces, pick_tier
from .tables import scores_html


def _metrics_files(models: Path) -> dict[tuple[str, int], Path]:
    """``results/models/<unit>/fold<k>/metrics.csv`` keyed by ``(unit, k)``."""
    found = {}
    for path in sorted(models.rglob("metrics.csv")):
        fold = path.parent.name
        if fold.startswith("fold") and fold[4:].isdigit():
            found[(path.parent.parent.relative_to(models).as_posix(), int(fold[4:]))] = path
    return found


def build_report(
    results: str | Path, out: str | Path, mice: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Write ``scores.html``, the histograms, training curves, correlation map and per-mouse
    traces of ``results`` into ``out``; returns what was written and what was missing.

    ``mice`` are the config's ``mice`` entries: a mouse's traces are drawn against the
    solutions :func:`paths.solutions` names for it; without them, against a simulated
    mouse's solutions when ``results`` holds them."""
    results, out = Path(results), Path(out)
    scores_dir = Path(paths.scores_dir(results))
    score_files = {p.name[: -len(".json")]: p for p in sorted(scores_dir.glob("*.json"))}
    if not score_files:
        raise PathError(scores_dir, "no scores JSON found (run the workflow or `score --out` first)")
    written, skipped = [], []
    scores = load_scores(score_files)
    write_text_atomic(out / "scores.html", scores_html(scores))
    written.append(out / "scores.html")
    neuron_files = {e: Path(paths.neuron_scores(e, results)) for e in score_files}
    neurons = load_neurons({e: p for e, p in neuron_files.items() if p.exists()})
    tier = pick_tier(neurons) if not neurons.empty else None
    if tier is not None:
        written.append(plots.save_png(plots.correlation_histograms(neurons, tier), out / "correlation_histograms.png"))
    metrics = _metrics_files(Path(paths.models_dir(results)))
    if metrics:
        written.append(plots.save_png(plots.training_curves(load_metrics(metrics)), out / "training_curves.png"))
    else:
        skipped.append("training_curves.png: no results/models/*/fold*/metrics.csv")
    ensemble = neurons[neurons["entry"] == ENSEMBLE] if not neurons.empty else neurons
    if ensemble.empty:
        skipped.append("correlation_map.png and traces: no ensemble per-neuron scores")
        return {"written": [str(p) for p in written], "skipped": skipped}
    written.append(plots.save_png(plots.correlation_map(ensemble, pick_tier(ensemble)), out / "correlation_map.png"))
    window = EvaluationWindow.from_dict(scores.get(ENSEMBLE, {}).get("settings", {}).get("window"))
    entries = {str(m["name"]): m for m in mice or ()}
    for mouse in dict.fromkeys(ensemble["mouse"]):
        predictions = Path(paths.predictions(ENSEMBLE, mouse, results))
        store = Path(paths.store(mouse, results))
        if not (predictions.exists() and store.exists()):
            skipped.append(f"traces/{mouse}.png: no {predictions} or {store}")
            continue
        entry = entries.get(mouse, {"name": mouse, "url": paths.SIMULATED_URL})  # no config: simulated, if any
        named = paths.solutions(entry, results)
        if named is not None and not Path(named).exists():
            if entry.get("url") != paths.SIMULATED_URL:
                raise PathError(named, f"the solutions of {mouse} (config mice[].solutions) do not exist")
            named = None
        traces = load_traces(predictions, store, named, ensemble[ensemble["mouse"] == mouse], window)
        written.append(plots.save_png(plots.prediction_traces(traces), out / "traces" / f"{mouse}.png"))
    return {"written": [str(p) for p in written], "skipped": skipped}
