# Deep Lake 4 in and out: a mouse whose url is deeplake:<folder> gets its store from that
# dataset instead of download + convert; any converted mouse can be exported on request
# (snakemake results/deeplake/<mouse>), which is not part of the default target.


# Both rules below and `convert` write results/data/{mouse}; ingest_deeplake only matches
# the deeplake mice, so for them it wins, and every other mouse is converted.
ruleorder: ingest_deeplake > convert


rule ingest_deeplake:
    input:
        dataset=deeplake_dataset,
    output:
        store=directory(paths.store("{mouse}")),
    params:
        code_version=CODE_VERSION,
        conversion=config["conversion"],
    log:
        "results/logs/ingest_deeplake/{mouse}.log",
    benchmark:
        "results/benchmarks/ingest_deeplake/{mouse}.tsv"
    wildcard_constraints:
        mouse=DEEPLAKE_MICE_PATTERN,
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/deeplake.yaml"
    script:
        "../../scripts/ingest_deeplake.py"


rule export_deeplake:
    input:
        store=paths.store("{mouse}"),
    output:
        dataset=directory(paths.deeplake_export("{mouse}")),
    params:
        code_version=CODE_VERSION,
        verify_trials=config["conversion"]["verify_trials"],
    log:
        "results/logs/export_deeplake/{mouse}.log",
    benchmark:
        "results/benchmarks/export_deeplake/{mouse}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/deeplake.yaml"
    script:
        "../../scripts/export_deeplake.py"
