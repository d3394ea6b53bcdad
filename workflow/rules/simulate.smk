# The simulated mouse: archives in the official layout plus their ground truth.


rule simulate:
    output:
        archive=paths.simulated_archive("{mouse}"),
        solutions=paths.simulated_solutions("{mouse}"),
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
