# DAG helpers: config validation, the planned jobs, input functions. No stage logic here.

import hashlib
import json
import re
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir).parent / "src"))
from sensorium_pipeline import paths  # noqa: E402  (every results/ path)
from sensorium_pipeline.config_defaults import fill_defaults  # noqa: E402

# The library's defaults first (the schema types them but does not repeat them), then the schema's own.
fill_defaults(config)
validate(config, schema="../schemas/config.schema.yaml")

from sensorium_pipeline import __version__ as CODE_VERSION  # noqa: E402  (a code change re-runs the rules that use it)
from sensorium_pipeline.data.download import local_path  # noqa: E402
from sensorium_pipeline.data.deeplake_url import dataset_path, is_deeplake_url, is_retired_url, retired_error  # noqa: E402
from sensorium_pipeline.errors import ConfigError  # noqa: E402
# imports torch: the model YAMLs are checked with the typed configs the train job uses
from sensorium_pipeline.training.train import load_model_file  # noqa: E402

MICE = [m["name"] for m in config["mice"]]
MOUSE = {m["name"]: m for m in config["mice"]}
if len(set(MICE)) != len(MICE):
    raise ValueError(f"config 'mice': duplicate names in {MICE}")
# A model entry is a config name (config/models/<name>.yaml, trained here) or a mapping
# {name, weights, mice, stage}: a model imported from the 1st-place team's published weights
# (<weights>/fold_<k>/), predicted and ensembled like a trained one, with no train job.
MODEL_ENTRIES = [{"name": e} if isinstance(e, str) else dict(e) for e in config["models"]]
MODELS = [e["name"] for e in MODEL_ENTRIES]
if len(set(MODELS)) != len(MODELS):
    raise ValueError(f"config 'models': duplicate names in {MODELS}")
IMPORTED = {e["name"]: e for e in MODEL_ENTRIES if "weights" in e}
TRAINED_MODELS = [m for m in MODELS if m not in IMPORTED]
N_FOLDS = config["training"]["n_folds"]
FOLDS = config["training"]["folds"] if config["training"]["folds"] is not None else list(range(N_FOLDS))
for _fold in FOLDS:
    if _fold >= N_FOLDS:
        raise ValueError(f"config 'training.folds': fold {_fold} is not below n_folds={N_FOLDS}")
# Each model YAML is read as the train job reads it (typed model and training configs, with the
# workflow's seed, threads and device), so a typo fails here, at `snakemake -n`, naming file and key.
# (Imported models have no file: their architecture comes from their checkpoints.)
for _model in TRAINED_MODELS:
    try:
        load_model_file(
            Path(config["model_dir"]) / f"{_model}.yaml",
            seed=config["training"]["seed"],
            threads=config["training"]["threads"],
            device=config["training"]["device"],
        )
    except ConfigError as _exc:
        raise ValueError(f"config 'models', {_model}: {_exc}") from None
ENSEMBLE_MODELS = config["ensemble"]["models"] or MODELS
for _model in ENSEMBLE_MODELS:
    if _model not in MODELS:
        raise ValueError(f"config 'ensemble.models': {_model!r} is not among 'models' {MODELS}")
SIMULATED = [m for m in MICE if MOUSE[m]["url"] == "simulated"]
for _mouse in MICE:
    if is_retired_url(MOUSE[_mouse]["url"]):
        raise ValueError(f"config 'mice', {_mouse}: url {retired_error(MOUSE[_mouse]['url'])}")
DEEPLAKE_MICE = [m for m in MICE if is_deeplake_url(MOUSE[m]["url"])]
# the mice whose store rule ingest_deeplake writes; "(?!)" matches no name
DEEPLAKE_MICE_PATTERN = "|".join(map(re.escape, DEEPLAKE_MICE)) or "(?!)"
# Training: scope (one model shared by all mice, or one per mouse), the optional distillation
# stage, and the runs whose folds are predicted ("<model>" and "<model>-distilled").
SCOPE = config["training"]["scope"]
DISTILLATION = config["training"]["distillation"]
DISTILLED_SUFFIX = "-distilled"
DISTILLED_MODELS = (DISTILLATION["models"] or TRAINED_MODELS) if DISTILLATION["enabled"] else []
for _model in DISTILLED_MODELS:
    if _model in IMPORTED:
        raise ValueError(f"config 'training.distillation.models': {_model!r} is imported from weights, not trained")
    if _model not in MODELS:
        raise ValueError(f"config 'training.distillation.models': {_model!r} is not among 'models' {MODELS}")
if DISTILLED_MODELS and SCOPE != "shared":
    raise ValueError(
        "config 'training.distillation': distillation fills in the other mice's readouts, so it needs "
        "training.scope 'shared' (got 'per_mouse')"
    )
# (without a distillation stage, as in an overlay that switches it off, the key has nothing to configure)
STUDENT_CONFIGS = DISTILLATION["student_configs"] if DISTILLED_MODELS else {}
for _model, _student in STUDENT_CONFIGS.items():
    if _model not in DISTILLED_MODELS:
        raise ValueError(
            f"config 'training.distillation.student_configs': {_model!r} gets no distillation stage {DISTILLED_MODELS}"
        )
    try:
        load_model_file(
            Path(config["model_dir"]) / f"{_student}.yaml",
            seed=config["training"]["seed"],
            threads=config["training"]["threads"],
            device=config["training"]["device"],
        )
    except ConfigError as _exc:
        raise ValueError(f"config 'training.distillation.student_configs', {_model}: {_exc}") from None
RUNS = MODELS + [f"{model}{DISTILLED_SUFFIX}" for model in DISTILLED_MODELS]
ENTRIES = [f"{run}-fold{fold}" for run in RUNS for fold in FOLDS]
ENSEMBLE_STAGES = config["ensemble"]["stages"] or [1, 2]


def run_model(run):
    """The model config of a run: ``<model>`` or ``<model>-distilled``."""
    return run[: -len(DISTILLED_SUFFIX)] if run.endswith(DISTILLED_SUFFIX) and run not in MODELS else run


def run_config(run):
    """The model config file of a run: the first stage's, or for a distilled run its
    ``distillation.student_configs`` entry when there is one."""
    model = run_model(run)
    return STUDENT_CONFIGS.get(model, model) if run_stage(run) == 2 else model


def run_stage(run):
    if run in IMPORTED:
        return int(IMPORTED[run].get("stage", 1))
    return 2 if run_model(run) != run else 1


def imported_mice(run):
    """The mouse of each readout of an imported model, in order (default: the reference's ten)."""
    from sensorium_pipeline.models.import_weights import REFERENCE_MICE

    return list(IMPORTED[run].get("mice") or REFERENCE_MICE)


for _run in IMPORTED:
    _missing = [m for m in imported_mice(_run) if m not in MICE] + [m for m in MICE if m not in imported_mice(_run)]
    if _missing:
        raise ValueError(
            f"config 'models', {_run}: the imported model's mice and config 'mice' differ ({_missing[0]!r}); "
            "list every mouse of its readouts under 'mice' (set the model's 'mice' for another readout order)"
        )


def train_unit(run, mouse=None):
    """The folder of a run's training jobs: ``<run>`` (shared scope) or ``<run>/mice/<mouse>``."""
    return run if SCOPE == "shared" else f"{run}/mice/{mouse}"


# One training job per (unit x fold): units are the runs (shared) or (run, mouse) pairs (per_mouse).
TRAINED_RUNS = [run for run in RUNS if run not in IMPORTED]
TRAIN_UNITS = list(TRAINED_RUNS) if SCOPE == "shared" else [train_unit(run, m) for run in TRAINED_RUNS for m in MICE]
ENSEMBLE_RUNS = [
    run for run in RUNS if run_model(run) in ENSEMBLE_MODELS and run_stage(run) in ENSEMBLE_STAGES
]
if not ENSEMBLE_RUNS:
    raise ValueError(f"config 'ensemble': no trained run is left for models {ENSEMBLE_MODELS} and stages {ENSEMBLE_STAGES}")


wildcard_constraints:
    mouse="|".join(map(re.escape, MICE)),
    model="|".join(map(re.escape, MODELS)),
    run="|".join(map(re.escape, RUNS)),
    unit="|".join(map(re.escape, TRAIN_UNITS)) or "(?!)",
    imported="|".join(map(re.escape, IMPORTED)) or "(?!)",
    fold="|".join(str(f) for f in FOLDS),
    entry="|".join(map(re.escape, ENTRIES + [paths.ENSEMBLE])),


def unit_run(unit):
    return unit.split("/")[0]


def unit_mice(unit):
    """The mice a training unit learns: all (shared) or its one mouse (per_mouse: ``<run>/mice/<mouse>``)."""
    parts = unit.split("/")
    return MICE if len(parts) == 1 else [parts[2]]


def model_file(run, fold, mouse):
    """The trained (or imported) model that predicts ``mouse`` in ``run`` and ``fold``."""
    if run in IMPORTED:
        return paths.model(run, fold)
    return paths.model(train_unit(run, mouse), fold)


def imported_weights(wildcards):
    """The fold's checkpoint folder of an imported model and the stores of its mice."""
    weights = Path(IMPORTED[wildcards.imported]["weights"])
    return {
        "weights": str(weights / f"fold_{wildcards.fold}"),
        "stores": [paths.store(m) for m in imported_mice(wildcards.imported)],
    }


def train_inputs(wildcards):
    """Stores of the unit's mice, its model config and, in the distillation stage, the teacher
    (the first-stage model of the same fold)."""
    run = unit_run(wildcards.unit)
    inputs = {
        "stores": [paths.store(m) for m in unit_mice(wildcards.unit)],
        "model_config": str(Path(config["model_dir"]) / f"{run_config(run)}.yaml"),
    }
    if run_stage(run) == 2:
        inputs["teacher"] = paths.model(run_model(run), wildcards.fold)
    return inputs


def model_config_digest(model):
    """Short hash of a model config: checkpoints of another config are never resumed."""
    text = (Path(config["model_dir"]) / f"{run_config(model)}.yaml").read_bytes()
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
        return {"source": paths.simulated_archive(wildcards.mouse)}
    if is_deeplake_url(url):  # reached only when rule ingest_deeplake cannot run
        raise ValueError(
            f"config 'mice', {wildcards.mouse}: Deep Lake dataset {dataset_path(url)} not found; "
            "a deeplake: mouse's store is ingested from it (rule ingest_deeplake), not downloaded"
        )
    local = local_path(url)
    return {"source": str(local)} if local is not None else {}


def deeplake_dataset(wildcards):
    """The local Deep Lake folder a deeplake: mouse's store is ingested from."""
    return str(dataset_path(MOUSE[wildcards.mouse]["url"]))


def archive_url(wildcards, input):
    if "source" in input.keys():
        return Path(input.source).resolve().as_uri()
    return MOUSE[wildcards.mouse]["url"]


def solutions_file(mouse):
    return paths.solutions(MOUSE[mouse])


def solutions_inputs(wildcards):
    return {m: path for m in MICE if (path := solutions_file(m))}


def store_dirs():
    return [paths.store(m) for m in MICE]


def entry_predictions(entry):
    return [paths.predictions(entry, m) for m in MICE]


def ensemble_members(wildcards):
    """Every ensembled run (models x stages) and fold; the windows are averaged by predict."""
    return [paths.predictions(paths.member(run, fold), wildcards.mouse) for run in ENSEMBLE_RUNS for fold in FOLDS]


def score_entries():
    return ENTRIES + [paths.ENSEMBLE]


def submission_files():
    return [paths.submission(name) for name in paths.SUBMISSION_FILES]


ENVS_DIR = Path(workflow.basedir).parent / "envs"


def report_files():
    """The report's items (rules/report.smk); part of the default target."""
    return [*(paths.report(name) for name in paths.REPORT_FILES), *(paths.traces(m) for m in MICE)]


def trace_inputs(wildcards):
    """A mouse's ensemble predictions, store, per-neuron scores and (where known) solutions."""
    inputs = {
        "predictions": paths.predictions(paths.ENSEMBLE, wildcards.mouse),
        "store": paths.store(wildcards.mouse),
        "neurons": paths.neuron_scores(paths.ENSEMBLE),
    }
    if solutions := solutions_file(wildcards.mouse):
        inputs["solutions"] = solutions
    return inputs
