# Sliding-window predictions of every scored tier, one job per (run x fold x mouse), each mouse by
# the model that learnt it; then the mean over runs (models, stages) and folds.


rule predict:
    input:
        model=lambda wildcards: model_file(wildcards.run, wildcards.fold, wildcards.mouse),
        store=paths.store("{mouse}"),
    output:
        predictions=directory(paths.predictions(paths.member("{run}", "{fold}"), "{mouse}")),
    params:
        code_version=CODE_VERSION,
        prediction=config["prediction"],
        device=config["training"]["device"],
    log:
        "results/logs/predict/{run}-fold{fold}/{mouse}.log",
    benchmark:
        "results/benchmarks/predict/{run}-fold{fold}/{mouse}.tsv"
    threads: config["training"]["threads"]
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/predict.py"


rule ensemble:
    input:
        members=ensemble_members,
    output:
        predictions=directory(paths.predictions(paths.ENSEMBLE, "{mouse}")),
    log:
        "results/logs/ensemble/{mouse}.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../../envs/data.yaml"
    script:
        "../../scripts/ensemble.py"
