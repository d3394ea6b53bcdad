"""Snakemake entry of rule `report_scores`: the scores per track, tier and mouse as HTML."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.atomic import write_text_atomic
from sensorium_pipeline.logs import log_to
from sensorium_pipeline.report.inputs import load_scores
from sensorium_pipeline.report.tables import scores_html

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    scores = load_scores(dict(zip(smk.params.entries, smk.input.scores, strict=True)))
    write_text_atomic(smk.output.table, scores_html(scores))
    log.info("wrote %s (%d entries)", smk.output.table, len(scores))
