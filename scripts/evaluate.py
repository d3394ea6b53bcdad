"""Snakemake entry of rule `evaluate`: the competition's metrics for one prediction entry."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.logs import log_to
from sensorium_pipeline.scoring.evaluate import evaluate
from sensorium_pipeline.scoring.metrics import EvaluationWindow

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    settings = dict(smk.params.evaluation)
    tiers = settings.pop("tiers")
    mice = smk.params.mice
    summary = evaluate(
        predictions=dict(zip(mice, smk.input.predictions)),
        stores=dict(zip(mice, smk.input.stores)),
        solutions={mouse: smk.params.solutions.get(mouse) for mouse in mice},
        window=EvaluationWindow.from_dict(settings),
        tiers=tiers,
        out_json=smk.output.scores,
        out_neurons_parquet=smk.output.neurons,
    )
    log.info("scores: %s", summary.get("tiers"))
