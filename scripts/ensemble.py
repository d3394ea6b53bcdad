"""Snakemake entry of rule `ensemble`: the mean of the members' predictions of one mouse."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.logs import log_to
from sensorium_pipeline.scoring.ensemble import ensemble
from sensorium_pipeline.scoring.predictions import load_predictions, save_predictions

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    members = [load_predictions(path) for path in smk.input.members]
    log.info("averaging %d members: %s", len(members), list(smk.input.members))
    save_predictions(smk.output.predictions, ensemble(members))
