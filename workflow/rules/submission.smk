# The official submission files (Parquet/brotli zips) and the starter kit's CSVs, validated.


rule submission:
    input:
        predictions=[paths.predictions(paths.ENSEMBLE, m) for m in MICE],
        stores=store_dirs(),
    output:
        main=paths.submission("main"),
        bonus_live=paths.submission("bonus_live"),
        bonus_final=paths.submission("bonus_final"),
        csv=directory(paths.submission("csv")),
    params:
        mice=MICE,
        evaluation=config["evaluation"],
    log:
        "results/logs/submission/submission.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/data.yaml"
    script:
        "../../scripts/submission.py"
