"""Snakemake entry of rule `export_deeplake`: a converted store → a local Deep Lake 4 dataset."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.data.deeplake_io import export_deeplake
from sensorium_pipeline.logs import log_to

smk = snakemake  # noqa: F821
with log_to(smk.log[0]):
    export_deeplake(smk.input.store, smk.output.dataset, verify_trials=smk.params.verify_trials)
