"""The scores as one self-contained HTML page: per track, per tier and per mouse.

Three tables, each with a row per entry (the ensemble first): the leaderboard tracks (the
ranking metric of each track's live and final tier), every tier averaged over mice, and
every mouse's tiers. Where the noise ceiling is known (simulated mice) it stands beside
the score, with the fraction of it reached.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from .inputs import entry_order

#: (key in a tier's summary, column heading)
TIER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("single_trial_correlation", "single-trial r"),
    ("correlation_to_average", "corr. to average"),
    ("feve", "FEVE"),
    ("ceiling", "ceiling r"),
    ("fraction_of_ceiling", "of ceiling"),
)
TRACK_STAGES: tuple[tuple[str, str], ...] = (("main", "live"), ("main", "final"), ("bonus", "live"), ("bonus", "final"))

_NUMBER_CLASS = ' class="n"'
_STYLE = """
body { font-family: sans-serif; font-size: 14px; margin: 1em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f0f0f0; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.ensemble td { font-weight: bold; }
caption { text-align: left; font-weight: bold; padding: 4px 0; }
"""


def _number(value: Any, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:.1%}" if percent else f"{value:.3f}"


def _cells(summary: Mapping[str, Any]) -> list[str]:
    return [_number(summary.get(key), percent=key == "fraction_of_ceiling") for key, _ in TIER_COLUMNS]


def _table(caption: str, header: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]], n_text: int) -> str:
    """``rows``: (entry, cells); the first ``n_text`` cells are text, the rest numbers."""
    out = [f"<table><caption>{html.escape(caption)}</caption><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in header]
    out.append("</tr>")
    for entry, cells in rows:
        css = ' class="ensemble"' if entry == "ensemble" else ""
        tds = [f"<td{'' if i < n_text else _NUMBER_CLASS}>{html.escape(str(c))}</td>" for i, c in enumerate(cells)]
        out.append(f"<tr{css}>{''.join(tds)}</tr>")
    out.append("</table>")
    return "\n".join(out)


def tracks_table(scores: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for entry in entry_order(list(scores)):
        tracks = scores[entry].get("tracks", {})
        rows.append((entry, [entry] + [_number(tracks.get(t, {}).get(s)) for t, s in TRACK_STAGES]))
    header = ["entry"] + [f"{t} {s}" for t, s in TRACK_STAGES]
    return _table("Leaderboard tracks: single-trial correlation, mean over mice", header, rows, 1)


def tiers_table(scores: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for entry in entry_order(list(scores)):
        for tier, summary in scores[entry]["tiers"].items():
            rows.append((entry, [entry, tier, str(summary.get("n_mice", "")), *_cells(summary)]))
    header = ["entry", "tier", "mice"] + [h for _, h in TIER_COLUMNS]
    return _table("Per tier, mean over mice", header, rows, 2)


def mice_table(scores: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for entry in entry_order(list(scores)):
        for mouse, result in scores[entry]["mice"].items():
            for tier, summary in result.get("tiers", {}).items():
                rows.append((entry, [entry, mouse, tier, str(summary.get("n_trials", "")), *_cells(summary)]))
    header = ["entry", "mouse", "tier", "trials"] + [h for _, h in TIER_COLUMNS]
    return _table("Per mouse and tier", header, rows, 3)


def scores_html(scores: Mapping[str, Mapping[str, Any]], title: str = "Scores") -> str:
    """A complete HTML page of the three tables of ``scores`` (``{entry: scores JSON}``)."""
    window = next(iter(scores.values()), {}).get("settings", {}).get("window")
    note = f"<p>Scored frames: {html.escape(str(window))}.</p>" if window else ""
    body = "\n".join([tracks_table(scores), tiers_table(scores), mice_table(scores)])
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head>\n<body>\n<h2>{html.escape(title)}</h2>\n{note}\n{body}\n</body></html>\n"
    )


def data_html(statistics: Sequence[Any]) -> str:
    """The response scale of every mouse (:class:`~sensorium_pipeline.data.response_stats.ResponseStatistics`)
    beside its noise ceiling: what the models are fitting, at a glance."""
    from ..data.response_stats import QUANTILES

    names = ["median" if q == 0.5 else f"q{round(q * 100)}" for q in QUANTILES]
    header = [
        "mouse",
        "neurons",
        "train frames",
        *[f"mean {n}" for n in names],
        *[f"std {n}" for n in names],
        *[f"max {n}" for n in names],
        "largest",
        "below 0",
        "ceiling r (final main)",
    ]

    def g(value: float) -> str:
        return f"{value:.3g}"

    rows = []
    for s in statistics:
        cells = [s.mouse, str(s.n_neurons), str(s.n_frames)]
        cells += [g(v) for v in (*s.mean, *s.std, *s.max)]
        cells += [g(s.largest), f"{s.negative_fraction:.2%}", _number(s.ceiling)]
        rows.append((s.mouse, cells))
    caption = "Responses per mouse over the train trials (per-neuron statistics, quantiles over neurons)"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Data</title><style>{_STYLE}</style></head><body>"
        + _table(caption, header, rows, n_text=1)
        + "</body></html>"
    )
