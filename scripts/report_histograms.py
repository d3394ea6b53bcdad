"""Snakemake entry of rule `report_histograms`: per-neuron correlation per model and ensemble."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.logs import log_to
from sensorium_pipeline.report.inputs import load_neurons, pick_tier
from sensorium_pipeline.report.plots import correlation_histograms, save_png

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    neurons = load_neurons(dict(zip(smk.params.entries, smk.input.neurons, strict=True)))
    tier = pick_tier(neurons)
    save_png(correlation_histograms(neurons, tier), smk.output.plot)
    log.info("wrote %s (tier %s, %d rows)", smk.output.plot, tier, len(neurons))
