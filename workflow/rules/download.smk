# Fetch each archive (resumable, retried, checksummed) into results/archives.


rule download:
    input:
        unpack(archive_source),
    output:
        archive=paths.archive("{mouse}"),
        checksum=paths.archive("{mouse}") + ".sha256",
    params:
        url=archive_url,
        sha256=lambda wildcards: MOUSE[wildcards.mouse]["sha256"],
        retries=config["download"]["retries"],
        timeout_s=config["download"]["timeout_s"],
    log:
        "results/logs/download/{mouse}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=240,
    conda:
        "../../envs/data.yaml"
    script:
        "../../scripts/download.py"
