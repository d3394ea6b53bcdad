"""Snakemake entry of rule `download`: fetch, verify and record the sha256 of one archive."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.data.download import download, write_checksum
from sensorium_pipeline.logs import log_to

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    log.info("downloading %s", smk.params.url)
    digest = download(
        smk.params.url,
        smk.output.archive,
        sha256=smk.params.sha256,
        retries=smk.params.retries,
        timeout_s=smk.params.timeout_s,
    )
    write_checksum(smk.output.checksum, digest)
    log.info("sha256 %s", digest)
