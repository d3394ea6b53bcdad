# The competition's metrics per mouse and tier (and the noise ceiling where known).


rule evaluate:
    input:
        predictions=lambda wildcards: entry_predictions(wildcards.entry),
        stores=store_dirs(),
        solutions=lambda wildcards: list(solutions_inputs(wildcards).values()),
    output:
        scores=paths.scores("{entry}"),
        neurons=paths.neuron_scores("{entry}"),
    params:
        mice=MICE,
        solutions=lambda wildcards: solutions_inputs(wildcards),
        evaluation=config["evaluation"],
    log:
        "results/logs/evaluate/{entry}.log",
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/data.yaml"
    script:
        "../../scripts/evaluate.py"
