"""Snakemake entry of rule `report_training`: training and validation curves per model and fold."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.logs import log_to
from sensorium_pipeline.report.inputs import load_metrics
from sensorium_pipeline.report.plots import add_warnings, save_png, training_curves
from sensorium_pipeline.training.learning_check import metrics_warnings

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    runs = [(model, int(fold)) for model, fold in smk.params.runs]
    metrics = load_metrics(dict(zip(runs, smk.input.metrics, strict=True)))
    warnings = metrics_warnings(metrics, smk.params.mice)
    for warning in warnings:
        log.warning("%s", warning)
    save_png(add_warnings(training_curves(metrics), warnings), smk.output.plot)
    log.info("wrote %s (%d runs, columns %s)", smk.output.plot, len(runs), list(metrics.columns))
