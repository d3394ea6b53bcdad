"""Snakemake entry of rule `report_correlation_map`: the ensemble's per-neuron correlation over
cortical position, one panel per mouse."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.logs import log_to
from sensorium_pipeline.report.inputs import load_neurons, pick_tier
from sensorium_pipeline.report.plots import correlation_map, save_png

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    neurons = load_neurons({"ensemble": smk.input.neurons})
    tier = pick_tier(neurons)
    save_png(correlation_map(neurons, tier, smk.params.mice), smk.output.plot)
    log.info("wrote %s (tier %s)", smk.output.plot, tier)
