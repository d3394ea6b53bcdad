"""Snakemake entry of rule `submission`: write the submission files, then validate them."""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.data.store import open_mouse
from sensorium_pipeline.logs import log_to
from sensorium_pipeline.scoring.metrics import EvaluationWindow
from sensorium_pipeline.scoring.predictions import load_predictions
from sensorium_pipeline.scoring.submission import validate_submission, write_submission

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    settings = {k: v for k, v in smk.params.evaluation.items() if k != "tiers"}
    window = EvaluationWindow.from_dict(settings)
    mice = smk.params.mice
    predictions = {mouse: load_predictions(path) for mouse, path in zip(mice, smk.input.predictions)}
    stores = {mouse: open_mouse(path) for mouse, path in zip(mice, smk.input.stores)}
    out_dir = Path(smk.output.main).parent
    written = write_submission(predictions, stores, out_dir, window)
    validate_submission(out_dir, stores, window)
    log.info("wrote and validated %s", [str(p) for p in written])
