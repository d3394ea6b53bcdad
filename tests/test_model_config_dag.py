"""A typo in a model YAML fails when the DAG is built (`snakemake -n`), naming the file and the
key, not hours later inside a training job."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from test_workflow import ROOT, _demo_config, dry_run_in


def _config_with_models(tmp_path: Path, edit) -> tuple[Path, Path]:
    """The demo config reading its model YAMLs from a copy in ``tmp_path``, ``edit`` applied to
    the copy of its first model."""
    models = tmp_path / "models"
    shutil.copytree(ROOT / "config" / "models", models)
    path = _demo_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["model_dir"] = str(models)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    model_file = models / f"{config['models'][0]}.yaml"
    data = yaml.safe_load(model_file.read_text())
    edit(data)
    model_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, model_file


def _rename(section: str, old: str, new: str):
    def edit(data: dict) -> None:
        node = data
        for part in section.split("."):
            node = node[part]
        node[new] = node.pop(old)

    return edit


def test_the_copied_model_files_plan_as_the_originals(tmp_path):
    config, _ = _config_with_models(tmp_path, lambda data: None)
    result = dry_run_in(tmp_path, config)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("section", "old", "new", "key"),
    [("training", "lr", "lrr", "training.lrr"), ("model.core", "channels", "chanels", "core.chanels")],
)
def test_a_model_yaml_typo_fails_the_dry_run_with_file_and_key(tmp_path, section, old, new, key):
    config, model_file = _config_with_models(tmp_path, _rename(section, old, new))
    result = dry_run_in(tmp_path, config)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert str(model_file) in output and f"{key}: unknown key" in output, output
