# One training job per (unit x fold). A unit is a run ("<model>", or "<model>-distilled" in the
# distillation stage) of all mice (training.scope: shared, the winners' way) or of one mouse
# ("<run>/mice/<mouse>", training.scope: per_mouse, the starter kit's way). Checkpoints live
# outside the outputs (results/checkpoints/...), so a rerun after an interruption resumes.


rule train:
    input:
        unpack(train_inputs),
    output:
        model=paths.model("{unit}", "{fold}"),
        metrics=paths.metrics("{unit}", "{fold}"),
    params:
        code_version=CODE_VERSION,
        training=config["training"],
        checkpoints=lambda wildcards: (
            paths.checkpoints(wildcards.unit, wildcards.fold, model_config_digest(unit_run(wildcards.unit)))
        ),
    log:
        "results/logs/train/{unit}/fold{fold}.log",
    benchmark:
        "results/benchmarks/train/{unit}/fold{fold}.tsv"
    threads: config["training"]["threads"]
    resources:
        mem_mb=16000,
        runtime=24 * 60,
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/train.py"


# A model of config 'models' given as {name, weights}: its folds come from published weights
# (the 1st-place team's checkpoints, <weights>/fold_<k>/model-<epoch>-<score>.pth), imported
# as model.pt files that predict reads like trained ones.
rule import_weights:
    input:
        unpack(imported_weights),
    output:
        model=paths.model("{imported}", "{fold}"),
    params:
        code_version=CODE_VERSION,
        experiment=lambda wildcards: IMPORTED[wildcards.imported]["weights"],
        mice=lambda wildcards: imported_mice(wildcards.imported),
    log:
        "results/logs/import_weights/{imported}/fold{fold}.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/import_weights.py"
