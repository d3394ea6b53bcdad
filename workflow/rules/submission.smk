# The official submission files (Parquet/brotli zips) and the starter kit's CSVs, validated.


rule submission:
    input:
        predictions=expand("results/predictions/ensemble/{mouse}.zarr", mouse=MICE),
        stores=store_dirs(),
    output:
        main="results/submission/main_track.zip",
        bonus_live="results/submission/bonus_live.zip",
        bonus_final="results/submission/bonus_final.zip",
        csv=directory("results/submission/csv"),
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
