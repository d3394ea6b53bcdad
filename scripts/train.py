"""Snakemake entry of rule `train`: one training unit (run of all mice or of one mouse) x fold,
resuming from checkpoints; with a `teacher` input it is the distillation stage."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, os.pardir, "src"))  # noqa: F821

from sensorium_pipeline.logs import log_to
from sensorium_pipeline.training.distill import DistillConfig
from sensorium_pipeline.training.train import load_model_file, train

smk = snakemake  # noqa: F821
with log_to(smk.log[0]) as log:
    options = smk.params.training
    model_config, train_config = load_model_file(
        smk.input.model_config,
        seed=options["seed"],
        threads=smk.threads,
        device=options["device"],
    )
    distillation = {k: v for k, v in options["distillation"].items() if k not in ("enabled", "models", "student_configs")}
    result = train(
        list(smk.input.stores),
        model_config,
        train_config,
        fold=int(smk.wildcards.fold),
        n_folds=options["n_folds"],
        out_model=smk.output.model,
        out_metrics_csv=smk.output.metrics,
        checkpoint_dir=smk.params.checkpoints,
        fold_grouping=options["fold_grouping"],
        phash_distance=options["phash_distance"],
        labelled_tiers=options["labelled_tiers"],
        teachers=[smk.input.teacher] if "teacher" in smk.input.keys() else [],
        distillation=DistillConfig(**distillation),
    )
    log.info("trained: %s", result)
