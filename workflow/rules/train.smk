# One model per model config x fold; all mice share the core. Checkpoints live outside the
# outputs (results/checkpoints/...), so a rerun after an interruption resumes.


rule train:
    input:
        stores=store_dirs(),
        model_config=model_config_file,
    output:
        model="results/models/{model}/fold{fold}/model.pt",
        metrics="results/models/{model}/fold{fold}/metrics.csv",
    params:
        code_version=CODE_VERSION,
        training=config["training"],
        checkpoints=lambda wildcards: (
            f"results/checkpoints/{wildcards.model}/fold{wildcards.fold}/{model_config_digest(wildcards.model)}"
        ),
    log:
        "results/logs/train/{model}/fold{fold}.log",
    benchmark:
        "results/benchmarks/train/{model}/fold{fold}.tsv"
    threads: config["training"]["threads"]
    resources:
        mem_mb=16000,
        runtime=24 * 60,
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/train.py"
