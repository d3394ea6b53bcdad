# Archive (zip) -> validated, chunked Zarr store + trials/neurons tables, per-neuron train
# statistics and perceptual video hashes (see src/sensorium_pipeline/data/convert.py).

from sensorium_pipeline.data.store_writer import CONVERTER_VERSION  # noqa: E402  (a new store format rebuilds stores)


rule convert:
    input:
        archive=paths.archive("{mouse}"),
        checksum=paths.archive("{mouse}") + ".sha256",
    output:
        store=directory(paths.store("{mouse}")),
    params:
        code_version=CODE_VERSION,
        converter_version=CONVERTER_VERSION,
        conversion=config["conversion"],
    log:
        "results/logs/convert/{mouse}.log",
    benchmark:
        "results/benchmarks/convert/{mouse}.tsv"
    threads: config["conversion"]["workers"]
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/data.yaml"
    script:
        "../../scripts/convert.py"
