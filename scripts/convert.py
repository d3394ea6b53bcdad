"""Snakemake entry of rule `convert`: validate an archive and write its Zarr store."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.data.convert import convert_archive
from sensorium_pipeline.data.download import read_checksum
from sensorium_pipeline.logs import log_to

smk = snakemake  # noqa: F821
with log_to(smk.log[0]):
    options = smk.params.conversion
    convert_archive(
        smk.input.archive,
        smk.output.store,
        dtype=options["dtype"],
        chunk_frames=options["chunk_frames"],
        verify_trials=options["verify_trials"],
        compression=options["compression"],
        sha256=read_checksum(smk.input.checksum),
        workers=smk.threads,
    )
