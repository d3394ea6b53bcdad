# Sliding-window predictions of every scored tier, then the mean over models and folds.


rule predict:
    input:
        model="results/models/{model}/fold{fold}/model.pt",
        stores=store_dirs(),
    output:
        predictions=[
            directory(path)
            for path in expand("results/predictions/{{model}}-fold{{fold}}/{mouse}.zarr", mouse=MICE)
        ],
    params:
        code_version=CODE_VERSION,
        prediction=config["prediction"],
        device=config["training"]["device"],
    log:
        "results/logs/predict/{model}-fold{fold}.log",
    benchmark:
        "results/benchmarks/predict/{model}-fold{fold}.tsv"
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
        predictions=directory("results/predictions/ensemble/{mouse}.zarr"),
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
