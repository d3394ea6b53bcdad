"""Snakemake entry of rule `predict`: sliding-window predictions of one model for one mouse."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.logs import log_to
from sensorium_pipeline.scoring.predict import predict_mouse
from sensorium_pipeline.scoring.predictions import save_predictions

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    options = smk.params.prediction
    predictions = predict_mouse(
        smk.input.model,
        smk.input.store,
        options["tiers"],
        window_frames=options["window_frames"],
        stride=options["stride"],
        device=smk.params.device,
        threads=smk.threads,
    )
    save_predictions(smk.output.predictions, predictions)
    log.info("%s: predicted %d trials", predictions.mouse, len(predictions.trial_ids))
