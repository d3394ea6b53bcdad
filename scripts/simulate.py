"""Snakemake entry of rule `simulate`: one simulated mouse, archive and ground truth."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.logs import log_to
from sensorium_pipeline.simulate import SimulationConfig, simulate_mouse

with log_to(snakemake.log[0]) as log:  # noqa: F821
    config = SimulationConfig.from_dict(snakemake.params.settings)  # noqa: F821
    summary = simulate_mouse(config, snakemake.output.archive, snakemake.output.solutions)  # noqa: F821
    log.info("simulated %s: %s", config.mouse, summary)
