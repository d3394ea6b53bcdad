"""Snakemake entry of rule `ingest_deeplake`: a local Deep Lake 4 dataset → the mouse's store."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.data.deeplake_io import ingest_deeplake
from sensorium_pipeline.logs import log_to

smk = snakemake  # noqa: F821
with log_to(smk.log[0]):
    options = smk.params.conversion
    ingest_deeplake(
        smk.input.dataset,
        smk.output.store,
        mouse=smk.wildcards.mouse,
        dtype=options["dtype"],
        chunk_frames=options["chunk_frames"],
        verify_trials=options["verify_trials"],
        compression=options["compression"],
    )
