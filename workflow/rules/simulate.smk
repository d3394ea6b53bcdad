# The simulated mouse: archives in the official layout plus their ground truth.


rule simulate:
    output:
        archive="results/simulated/{mouse}.zip",
        solutions="results/simulated/{mouse}.solutions.parquet",
    params:
        settings=lambda wildcards: simulation_settings(wildcards.mouse),
    log:
        "results/logs/simulate/{mouse}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/data.yaml"
    script:
        "../../scripts/simulate.py"
