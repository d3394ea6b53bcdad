"""Snakemake entry of rule `predict`: sliding-window predictions of one model for every mouse."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.logs import log_to
from sensorium_pipeline.predict import predict_mouse
from sensorium_pipeline.predictions import save_predictions

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    options = smk.params.prediction
    for store, out in zip(smk.input.stores, smk.output.predictions):
        predictions = predict_mouse(
            smk.input.model,
            store,
            options["tiers"],
            window_frames=options["window_frames"],
            stride=options["stride"],
            device=smk.params.device,
            threads=smk.threads,
        )
        save_predictions(out, predictions)
        log.info("%s: predicted %d trials", predictions.mouse, len(predictions.trial_ids))
