"""Snakemake entry of rule `report_traces`: recorded vs predicted traces of one mouse's best
and worst predicted neurons (ensemble)."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.logs import log_to
from sensorium_pipeline.report.inputs import load_neurons, load_traces
from sensorium_pipeline.report.plots import prediction_traces, save_png
from sensorium_pipeline.scoring.metrics import EvaluationWindow

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    mouse = smk.wildcards.mouse
    neurons = load_neurons({"ensemble": smk.input.neurons})
    settings = {k: v for k, v in smk.params.evaluation.items() if k != "tiers"}
    traces = load_traces(
        smk.input.predictions,
        smk.input.store,
        smk.input.get("solutions"),
        neurons[neurons["mouse"] == mouse],
        EvaluationWindow.from_dict(settings),
        k=smk.params.neurons_per_group,
        n_trials=smk.params.trials,
    )
    save_png(prediction_traces(traces), smk.output.plot)
    log.info("wrote %s (tier %s, neurons %s)", smk.output.plot, traces.tier, traces.unit_ids)
