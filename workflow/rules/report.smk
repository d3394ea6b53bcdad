# The report's items: scores table, per-neuron histograms and map, training curves, traces,
# software and config. Cheap, local jobs; part of the default target, so `snakemake` then
# `snakemake --report results/report.html` (or `make report`) renders them with the rule graph.


rule report_scores:
    input:
        scores=[paths.scores(e) for e in score_entries()],
    output:
        table=report(
            paths.report("scores.html"),
            category="Scores",
            caption="../report/scores.rst",
            labels={"item": "scores per track, tier and mouse"},
        ),
    params:
        entries=score_entries(),
    log:
        "results/logs/report/scores.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/report_scores.py"


rule report_histograms:
    input:
        neurons=[paths.neuron_scores(e) for e in score_entries()],
    output:
        plot=report(
            paths.report("correlation_histograms.png"),
            category="Per-neuron correlation",
            caption="../report/correlation_histograms.rst",
            labels={"item": "histograms per model and ensemble"},
        ),
    params:
        entries=score_entries(),
    log:
        "results/logs/report/correlation_histograms.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/report_histograms.py"


rule report_correlation_map:
    input:
        neurons=paths.neuron_scores(paths.ENSEMBLE),
    output:
        plot=report(
            paths.report("correlation_map.png"),
            category="Per-neuron correlation",
            caption="../report/correlation_map.rst",
            labels={"item": "map over cortical position"},
        ),
    params:
        mice=MICE,
    log:
        "results/logs/report/correlation_map.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/report_map.py"


rule report_training:
    input:
        metrics=[paths.metrics(unit, fold) for unit in TRAIN_UNITS for fold in FOLDS],
    output:
        plot=report(
            paths.report("training_curves.png"),
            category="Training",
            caption="../report/training_curves.rst",
            labels={"item": "curves per model and fold"},
        ),
    params:
        runs=[(unit, fold) for unit in TRAIN_UNITS for fold in FOLDS],
        mice=MICE,
    log:
        "results/logs/report/training_curves.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/report_training.py"


rule report_traces:
    input:
        unpack(trace_inputs),
    output:
        plot=report(
            paths.traces("{mouse}"),
            category="Predictions",
            caption="../report/traces.rst",
            labels={"item": "traces", "mouse": "{mouse}"},
        ),
    params:
        evaluation=config["evaluation"],
        neurons_per_group=3,
        trials=3,
    log:
        "results/logs/report/traces/{mouse}.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/report_traces.py"


rule report_software:
    input:
        envs=[str(ENVS_DIR / f"{name}.yaml") for name in ("data", "torch", "report")],
        models=[str(Path(config["model_dir"]) / f"{model}.yaml") for model in TRAINED_MODELS],
    output:
        page=report(
            paths.report("software.html"),
            category="Software and config",
            caption="../report/software.rst",
            labels={"item": "versions and config"},
        ),
    params:
        config=config,
        code_version=CODE_VERSION,
    log:
        "results/logs/report/software.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/report_software.py"


rule report_data:
    input:
        stores=[paths.store(m) for m in MICE],
        scores=paths.scores(paths.ENSEMBLE),
    output:
        table=report(
            paths.report("data.html"),
            category="Data",
            caption="../report/data.rst",
            labels={"item": "response scale per mouse"},
        ),
    params:
        mice=MICE,
    log:
        "results/logs/report/data.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/report_data.py"
