"""The report's figures: data in, a matplotlib :class:`~matplotlib.figure.Figure` out.

Figures are built with the object-oriented API on a bare ``Figure`` (Agg canvas), never
with ``pyplot``: no global figure registry, no backend to select, nothing shared between
calls. :func:`save_png` writes one atomically, so a failed plot leaves no half-written file.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..atomic import atomic_path
from .inputs import Traces, entry_order

DPI = 110
MAX_LEGEND = 12  # more training runs than this (per-mouse training) get no legend
PANEL_INCHES = (4.2, 3.0)
CORRELATION = "single_trial_correlation"
#: Training-metric columns drawn first, in this order; any other numeric column follows.
METRIC_ORDER: tuple[str, ...] = ("train_loss", "val_correlation", "lr", "seconds")
METRIC_LABELS = {
    "train_loss": "training loss (Poisson)",
    "val_correlation": "validation single-trial correlation",
    "lr": "learning rate",
    "seconds": "seconds per epoch",
}


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return path


def _grid(n_panels: int, n_cols: int = 3, *, share_x: bool = False) -> tuple[Figure, list[Axes]]:
    """A figure of ``n_panels`` panels in rows of ``n_cols``; unused panels are hidden."""
    n_cols = max(1, min(n_cols, n_panels))
    n_rows = max(1, math.ceil(n_panels / n_cols))
    figure = Figure(figsize=(PANEL_INCHES[0] * n_cols, PANEL_INCHES[1] * n_rows + 0.4), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False, sharex=share_x).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return figure, axes[:n_panels]


def _empty(message: str) -> Figure:
    """A figure that says why there is nothing to draw (still a readable report item)."""
    figure = Figure(figsize=PANEL_INCHES, layout="constrained")
    ax = figure.subplots()
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return figure


def correlation_histograms(neurons: pd.DataFrame, tier: str, bins: int = 30) -> Figure:
    """Per entry (each model-fold and the ensemble) a histogram of the per-neuron single-trial
    correlation on ``tier``, over all mice; the noise ceiling's histogram behind it where known."""
    rows = neurons[neurons["tier"] == tier]
    entries = entry_order(list(dict.fromkeys(rows["entry"])))
    if not entries:
        return _empty(f"no per-neuron scores of tier {tier}")
    values = rows[CORRELATION].to_numpy(dtype=float)
    ceilings = rows["ceiling"].to_numpy(dtype=float) if "ceiling" in rows else np.array([np.nan])
    finite = np.concatenate([values[np.isfinite(values)], ceilings[np.isfinite(ceilings)]])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    edges = np.linspace(min(low, 0.0), max(high, 0.0) + 1e-9, bins + 1)
    figure, axes = _grid(len(entries), share_x=True)
    for ax, entry in zip(axes, entries, strict=True):
        mine = rows[rows["entry"] == entry]
        corr = mine[CORRELATION].to_numpy(dtype=float)
        corr = corr[np.isfinite(corr)]
        if "ceiling" in mine:
            ceiling = mine["ceiling"].to_numpy(dtype=float)
            ceiling = ceiling[np.isfinite(ceiling)]
            if ceiling.size:
                ax.hist(ceiling, bins=edges, color="0.8", label=f"noise ceiling (mean {ceiling.mean():.3f})")
        ax.hist(corr, bins=edges, color="C0" if entry != "ensemble" else "C3", alpha=0.85,
                label=f"model (mean {corr.mean():.3f})" if corr.size else "model")
        if corr.size:
            ax.axvline(corr.mean(), color="k", linewidth=1, linestyle="--")
        ax.set_title(f"{entry}: {len(corr)} neurons")
        ax.set_xlabel("single-trial correlation")
        ax.set_ylabel("neurons")
        ax.legend(fontsize="small", loc="upper left")
    figure.suptitle(f"Per-neuron single-trial correlation, tier {tier}")
    return figure


def _metric_columns(metrics: pd.DataFrame) -> list[str]:
    """Numeric columns with at least one finite value, known ones first."""
    skip = {"epoch", "model", "fold", "step"}  # identifiers and counters, not metrics
    numeric = [
        c for c in metrics.columns
        if c not in skip and pd.api.types.is_numeric_dtype(metrics[c]) and np.isfinite(metrics[c].to_numpy(dtype=float)).any()
    ]
    known = [c for c in METRIC_ORDER if c in numeric]
    return known + [c for c in numeric if c not in known]


def training_curves(metrics: pd.DataFrame) -> Figure:
    """Per training metric (loss, validation correlation, and whatever else ``metrics.csv``
    records) one panel, one line per model and fold: does training converge, and when did it stop."""
    columns = _metric_columns(metrics)
    if metrics.empty or not columns:
        return _empty("no training metrics recorded")
    figure, axes = _grid(len(columns), n_cols=2 if len(columns) == 4 else 3)
    runs = sorted(metrics.groupby(["model", "fold"]).groups)
    models = sorted({model for model, _ in runs})
    styles = ["-", "--", ":", "-."]
    for ax, column in zip(axes, columns, strict=True):
        for model, fold in runs:
            run = metrics[(metrics["model"] == model) & (metrics["fold"] == fold)].sort_values("epoch")
            y = run[column].to_numpy(dtype=float)
            ax.plot(
                run["epoch"].to_numpy(), y, marker="o", markersize=3,
                color=f"C{models.index(model) % 10}", linestyle=styles[int(fold) % len(styles)],
                label=f"{model} fold {fold}",
            )
        positive = metrics[column].to_numpy(dtype=float)
        positive = positive[np.isfinite(positive)]
        if column == "lr" and positive.size and (positive > 0).all() and positive.max() / positive.min() > 20:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(METRIC_LABELS.get(column, column))
        ax.grid(alpha=0.3)
    if len(runs) <= MAX_LEGEND:
        axes[0].legend(fontsize="small")
    figure.suptitle(f"Training per model and fold ({len(runs)} runs)")
    return figure


def prediction_traces(traces: Traces) -> Figure:
    """Recorded against predicted activity of the best and worst predicted neurons, over a few
    trials (scored frames only, dotted lines between trials)."""
    n = len(traces.unit_ids)
    if n == 0:
        return _empty(f"{traces.mouse}: no neurons to show")
    figure = Figure(figsize=(11, 1.5 * n + 0.8), layout="constrained")
    axes = figure.subplots(n, 1, squeeze=False, sharex=True).ravel()
    frames = np.arange(traces.recorded.shape[1])
    for i, ax in enumerate(axes):
        ax.plot(frames, traces.recorded[i], color="0.35", linewidth=1, label="recorded")
        ax.plot(frames, traces.predicted[i], color="C3" if traces.labels[i] == "worst" else "C2", linewidth=1.2,
                label="predicted")
        for start in traces.boundaries[1:]:
            ax.axvline(start - 0.5, color="0.6", linestyle=":", linewidth=1)
        ax.set_title(
            f"{traces.labels[i]}: neuron {traces.unit_ids[i]}, r = {traces.correlations[i]:.3f}",
            fontsize="small", loc="left",
        )
        ax.set_ylabel("activity")
    axes[0].legend(fontsize="small", loc="upper right", ncols=2)
    axes[-1].set_xlabel(f"scored frame (trials {', '.join(map(str, traces.trial_ids))})")
    figure.suptitle(f"{traces.mouse}, tier {traces.tier}: recorded vs predicted")
    return figure


def correlation_map(neurons: pd.DataFrame, tier: str, mice: Sequence[str] | None = None) -> Figure:
    """Per mouse, each neuron at its cortical (x, y) position coloured by its single-trial
    correlation on ``tier``: are badly predicted neurons clustered somewhere?"""
    rows = neurons[neurons["tier"] == tier]
    mice = list(mice) if mice is not None else list(dict.fromkeys(rows["mouse"]))
    mice = [m for m in mice if (rows["mouse"] == m).any()]
    if not mice:
        return _empty(f"no per-neuron scores of tier {tier}")
    values = rows[CORRELATION].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.05, high + 0.05
    figure, axes = _grid(len(mice), n_cols=min(len(mice), 3))
    image = None
    for ax, mouse in zip(axes, mice, strict=True):
        mine = rows[rows["mouse"] == mouse]
        image = ax.scatter(
            mine["x"].to_numpy(dtype=float), mine["y"].to_numpy(dtype=float),
            c=mine[CORRELATION].to_numpy(dtype=float), cmap="viridis", vmin=low, vmax=high, s=14, edgecolors="none",
        )
        ax.set_title(mouse, fontsize="small")
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
        ax.set_aspect("equal", adjustable="datalim")
    figure.colorbar(image, ax=axes, label="single-trial correlation", shrink=0.9)
    figure.suptitle(f"Per-neuron correlation over cortical position, tier {tier}")
    return figure


def add_warnings(figure: Figure, warnings: Sequence[str]) -> Figure:
    """Write ``warnings`` (e.g. of a model that does not learn) in red above the panels."""
    if warnings:
        text = "\n".join(textwrap.fill(f"WARNING: {w}", 140) for w in warnings)
        figure.suptitle(text, color="#b00020", fontsize=8, ha="left", x=0.01, y=1.0, va="bottom")
    return figure
