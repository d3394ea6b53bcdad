"""Early sign of a model that does not learn: validation correlation still near zero.

A config whose loss or learning rate does not suit the data's scale (heavy-tailed raw
responses, say) trains to the end with a validation correlation of a few hundredths; the
run looks healthy unless someone reads the curve. :func:`learning_warning` looks at the
metrics history after the first ``after_epochs`` epochs and returns one sentence naming
the config and the mice when the best correlation so far is under ``threshold``. Training
logs it; the report shows it above the training curves. A pure function of the history, so
both say the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Epochs trained before the check speaks (the first epoch is mostly warm-up).
AFTER_EPOCHS = 2
#: Best validation correlation under which a model is "not learning".
THRESHOLD = 0.05


def learning_warning(
    history: Sequence[Mapping[str, Any]],
    config: str,
    mice: Sequence[str],
    *,
    after_epochs: int = AFTER_EPOCHS,
    threshold: float = THRESHOLD,
) -> str | None:
    """The warning for ``history`` (one row per epoch with ``val_correlation``), or ``None``."""
    if len(history) < after_epochs:
        return None
    scores = np.array([float(row["val_correlation"]) for row in history], dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    best = float(finite.max()) if finite.size else float("nan")
    if finite.size and best >= threshold:
        return None
    return (
        f"config {config!r} on {', '.join(mice) or 'no mice'}: validation correlation "
        f"{'not finite' if not finite.size else f'at most {best:.3f}'} after {len(history)} epochs "
        f"(under {threshold}): the model is not learning; check the response scale in the conversion log "
        "(targets, loss, learning rate, readout initialisation)"
    )


def metrics_warnings(metrics: pd.DataFrame, mice: Sequence[str]) -> list[str]:
    """The warnings of every run in the report's metrics table (``model``, ``fold``, one row per epoch)."""
    out = []
    if metrics.empty or "val_correlation" not in metrics.columns:
        return out
    for (model, fold), run in metrics.groupby(["model", "fold"], sort=True):
        warning = learning_warning(run.sort_values("epoch").to_dict("records"), f"{model}/fold{fold}", mice)
        if warning is not None:
            out.append(warning)
    return out
