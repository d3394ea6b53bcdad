"""Snakemake entry of rule `report_data`: every mouse's response scale beside its noise ceiling."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.atomic import write_text_atomic
from sensorium_pipeline.data.response_stats import response_statistics
from sensorium_pipeline.data.store import open_mouse
from sensorium_pipeline.logs import log_to
from sensorium_pipeline.report.tables import data_html

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    with open(smk.input.scores) as handle:
        mice = json.load(handle).get("mice", {})
    rows = []
    for mouse, store in zip(smk.params.mice, smk.input.stores, strict=True):
        tier = mice.get(mouse, {}).get("tiers", {}).get("final_test_main") or {}
        stats = response_statistics(open_mouse(store)).with_ceiling(tier.get("ceiling"))
        log.info("%s", stats.describe())
        rows.append(stats)
    write_text_atomic(smk.output.table, data_html(rows))
