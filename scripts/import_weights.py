"""Snakemake entry of rule `import_weights`: one fold of published reference weights -> model.pt."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.logs import log_to
from sensorium_pipeline.models.import_weights import import_fold

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    checkpoint = import_fold(
        smk.params.experiment,
        int(smk.wildcards.fold),
        smk.input.stores,
        smk.output.model,
        reference_mice=smk.params.mice,
    )
    log.info("imported %s as %s", checkpoint, smk.output.model)
