# DAG helpers: config validation, the planned jobs, input functions. No stage logic here.

import hashlib
import json
import re
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

sys.path.insert(0, str(Path(workflow.basedir).parent / "src"))
from sensorium_pipeline import __version__ as CODE_VERSION  # noqa: E402  (a code change re-runs the rules that use it)
from sensorium_pipeline.download import local_path  # noqa: E402

MICE = [m["name"] for m in config["mice"]]
MOUSE = {m["name"]: m for m in config["mice"]}
if len(set(MICE)) != len(MICE):
    raise ValueError(f"config 'mice': duplicate names in {MICE}")
MODELS = list(config["models"])
N_FOLDS = config["training"]["n_folds"]
FOLDS = config["training"]["folds"] if config["training"]["folds"] is not None else list(range(N_FOLDS))
for _fold in FOLDS:
    if _fold >= N_FOLDS:
        raise ValueError(f"config 'training.folds': fold {_fold} is not below n_folds={N_FOLDS}")
ENSEMBLE_MODELS = config["ensemble"]["models"] or MODELS
for _model in ENSEMBLE_MODELS:
    if _model not in MODELS:
        raise ValueError(f"config 'ensemble.models': {_model!r} is not among 'models' {MODELS}")
SIMULATED = [m for m in MICE if MOUSE[m]["url"] == "simulated"]
ENTRIES = [f"{model}-fold{fold}" for model in MODELS for fold in FOLDS]


wildcard_constraints:
    mouse="|".join(map(re.escape, MICE)),
    model="|".join(map(re.escape, MODELS)),
    fold="|".join(str(f) for f in FOLDS),
    entry="|".join(map(re.escape, ENTRIES + ["ensemble"])),


def model_config_file(wildcards):
    return str(Path(config["model_dir"]) / f"{wildcards.model}.yaml")


def model_config_digest(model):
    """Short hash of a model config: checkpoints of another config are never resumed."""
    text = (Path(config["model_dir"]) / f"{model}.yaml").read_bytes()
    payload = text + json.dumps(config["training"], sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def simulation_settings(mouse):
    settings = dict(config["simulation"]["defaults"])
    settings.update(MOUSE[mouse].get("simulation", {}))
    settings["mouse"] = mouse
    return settings


def archive_source(wildcards):
    """Local sources (the simulator's archive, file:// URLs, paths) are inputs of the download
    rule, so a changed source is fetched again; remote URLs are params only."""
    url = MOUSE[wildcards.mouse]["url"]
    if url == "simulated":
        return {"source": f"results/simulated/{wildcards.mouse}.zip"}
    local = local_path(url)
    return {"source": str(local)} if local is not None else {}


def archive_url(wildcards, input):
    if "source" in input.keys():
        return Path(input.source).resolve().as_uri()
    return MOUSE[wildcards.mouse]["url"]


def solutions_file(mouse):
    if MOUSE[mouse]["url"] == "simulated":
        return f"results/simulated/{mouse}.solutions.parquet"
    return MOUSE[mouse].get("solutions")


def solutions_inputs(wildcards):
    return {m: path for m in MICE if (path := solutions_file(m))}


def store_dirs():
    return expand("results/data/{mouse}", mouse=MICE)


def entry_predictions(entry):
    return expand("results/predictions/{entry}/{mouse}.zarr", entry=entry, mouse=MICE)


def ensemble_members(wildcards):
    return expand(
        "results/predictions/{model}-fold{fold}/{mouse}.zarr",
        model=ENSEMBLE_MODELS,
        fold=FOLDS,
        mouse=wildcards.mouse,
    )


def score_entries():
    return ENTRIES + ["ensemble"]


def submission_files():
    return [
        "results/submission/main_track.zip",
        "results/submission/bonus_live.zip",
        "results/submission/bonus_final.zip",
        "results/submission/csv",
    ]


ENVS_DIR = Path(workflow.basedir).parent / "envs"


def report_files():
    """The report's items (rules/report.smk); part of the default target."""
    return [
        "results/report/scores.html",
        "results/report/correlation_histograms.png",
        "results/report/training_curves.png",
        "results/report/correlation_map.png",
        "results/report/software.html",
        *expand("results/report/traces/{mouse}.png", mouse=MICE),
    ]


def trace_inputs(wildcards):
    """A mouse's ensemble predictions, store, per-neuron scores and (where known) solutions."""
    inputs = {
        "predictions": f"results/predictions/ensemble/{wildcards.mouse}.zarr",
        "store": f"results/data/{wildcards.mouse}",
        "neurons": "results/scores/ensemble.neurons.parquet",
    }
    if solutions := solutions_file(wildcards.mouse):
        inputs["solutions"] = solutions
    return inputs
