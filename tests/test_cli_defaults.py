"""The CLI's store-writing commands take the options the rules pass, with the workflow's
defaults, and `deeplake-ingest --compression` reaches the store it writes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
import zarr
from factories import MOUSE, simulate_small

from sensorium_pipeline.__main__ import build_parser, main
from sensorium_pipeline.config_defaults import fill_defaults, workflow_defaults
from sensorium_pipeline.data.convert import convert_archive
from sensorium_pipeline.data.store import ZARR_NAME
from sensorium_pipeline.data.store_writer import COMPRESSIONS, DEFAULT_COMPRESSION

ROOT = Path(__file__).resolve().parents[1]
#: CLI option (dest) of each `conversion.*` key of the workflow config.
CONVERSION_OPTIONS = {"dtype": "dtype", "chunk_frames": "chunk_frames", "verify_trials": "verify_trials",
                      "compression": "compression"}


def _subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[name]


def _option(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    (action,) = [a for a in parser._actions if a.dest == dest]
    return action


@pytest.mark.parametrize("command", ["convert", "deeplake-ingest"])
def test_store_writing_commands_default_to_the_workflow(command):
    """The CLI's defaults are those the workflow fills in (the writer's), within the schema's choices."""
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    conversion = schema["properties"]["conversion"]["properties"]
    defaults = workflow_defaults()["conversion"]
    parser = _subcommand(command)
    for key, dest in CONVERSION_OPTIONS.items():
        action = _option(parser, dest)
        assert action.default == defaults[key], (command, key)
        if "enum" in conversion[key]:
            assert sorted(action.choices) == sorted(conversion[key]["enum"]), (command, key)
    assert _option(parser, "compression").default == DEFAULT_COMPRESSION
    assert sorted(_option(parser, "compression").choices) == sorted(COMPRESSIONS)


def test_deeplake_ingest_writes_the_compression_it_is_given(tmp_path):
    pytest.importorskip("deeplake")
    from sensorium_pipeline.data.deeplake_io import export_deeplake

    archive = simulate_small(tmp_path / "archive")
    convert_archive(archive, tmp_path / "converted" / MOUSE, chunk_frames=16, verify_trials=0)
    export_deeplake(tmp_path / "converted" / MOUSE, tmp_path / "dataset", verify_trials=0)
    for codec in ("none", "lz4"):
        out = tmp_path / codec / MOUSE
        assert main(["deeplake-ingest", str(tmp_path / "dataset"), str(out), "--compression", codec,
                     "--verify-trials", "1"]) == 0
        responses = zarr.open_group(str(out / ZARR_NAME), mode="r")["responses"]
        assert bool(responses.compressors) == (codec != "none"), codec


def test_every_library_default_is_typed_by_the_schema_and_not_repeated_there():
    """Each key ``workflow_defaults`` fills is a schema property without a default of its own,
    and the filled config passes the schema."""
    import jsonschema

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())

    def check(defaults, properties, where):
        for key, value in defaults.items():
            assert key in properties, f"{where}{key}"
            if isinstance(value, dict):
                check(value, properties[key]["properties"], f"{where}{key}.")
            else:
                assert "default" not in properties[key], f"{where}{key}"

    check(workflow_defaults(), schema["properties"], "")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    fill_defaults(config)
    jsonschema.validate(config, schema)
    assert config["conversion"]["compression"] == DEFAULT_COMPRESSION
