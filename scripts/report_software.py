"""Snakemake entry of rule `report_software`: software versions, pinned envs and the config used."""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.atomic import write_text_atomic
from sensorium_pipeline.logs import log_to
from sensorium_pipeline.report.versions import software_record, versions_html

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    record = software_record(smk.input.envs, Path(smk.scriptdir).parent)
    models = {Path(p).stem: Path(p).read_text(encoding="utf-8") for p in smk.input.models}
    write_text_atomic(smk.output.page, versions_html(record, smk.params.config, models))
    log.info("software: %s", record["packages"])
