"""Deep Lake 4 in and out: a converted store survives export + ingest bit for bit, a bad
dataset is refused naming the dataset and the column, and the workflow routes a
``deeplake:`` mouse to the ingest rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from factories import MOUSE, make_store, simulate_small
from test_workflow import ROOT, planned_jobs, run_snakemake

from sensorium_pipeline.__main__ import main
from sensorium_pipeline.data.convert import convert_archive
from sensorium_pipeline.data.deeplake_url import DeepLakeError, dataset_path
from sensorium_pipeline.data.store import NEURONS_NAME, TRIALS_NAME, ZARR_NAME, open_mouse
from sensorium_pipeline.data.store_writer import same_bits
from sensorium_pipeline.layout import MODALITIES

#: Attributes an ingest adds; every other store attribute comes through unchanged.
INGEST_ATTRS = {"deeplake_source", "deeplake_io_version"}


@pytest.fixture(scope="module")
def deeplake():
    return pytest.importorskip("deeplake")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("deeplake")
    archive = simulate_small(folder / "archive")
    convert_archive(archive, folder / "converted" / MOUSE, chunk_frames=16, verify_trials=0)
    return folder / "converted" / MOUSE


@pytest.fixture(scope="module")
def exported(deeplake, converted, tmp_path_factory) -> Path:
    from sensorium_pipeline.data.deeplake_io import export_deeplake

    dest = tmp_path_factory.mktemp("exported") / MOUSE
    summary = export_deeplake(converted, dest)
    assert summary["n_trials"] == len(open_mouse(converted).trials) and summary["verified_trials"] == 8
    return dest


def zarr_arrays(path: Path) -> dict[str, zarr.Array]:
    group = zarr.open_group(str(path / ZARR_NAME), mode="r")
    return {name: node for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}


def store_files(path: Path) -> set[str]:
    """Every file of a store's Zarr group, relative to it (the on-disk key layout)."""
    root = path / ZARR_NAME
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def zarr_metadata(path: Path) -> dict[str, dict]:
    """Every ``zarr.json`` of a store (array and group metadata, attributes included)."""
    root = path / ZARR_NAME
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in root.rglob("zarr.json")}


def assert_same_store(a: Path, b: Path, *, layout: bool = True) -> None:
    """Every array bit for bit (and, with ``layout``, chunked alike, under the same file names,
    with the same metadata), the tables, the attributes."""
    if layout:
        assert store_files(a) == store_files(b)
        meta_a, meta_b = zarr_metadata(a), zarr_metadata(b)
        root_b = meta_b["zarr.json"]["attributes"]
        meta_b["zarr.json"]["attributes"] = {k: v for k, v in root_b.items() if k not in INGEST_ATTRS}
        assert meta_a == meta_b
    arrays_a, arrays_b = zarr_arrays(a), zarr_arrays(b)
    assert sorted(arrays_a) == sorted(arrays_b)
    for name, x in arrays_a.items():
        y = arrays_b[name]
        assert (x.shape, x.dtype) == (y.shape, y.dtype), name
        if layout:
            assert (x.chunks, x.shards, x.metadata.dimension_names) == (y.chunks, y.shards, y.metadata.dimension_names)
        assert same_bits(np.asarray(x[...]), np.asarray(y[...])), name
    for table in (TRIALS_NAME, NEURONS_NAME):
        pd.testing.assert_frame_equal(pd.read_parquet(a / table), pd.read_parquet(b / table), check_exact=True)
    group_a, group_b = (zarr.open_group(str(p / ZARR_NAME), mode="r") for p in (a, b))
    assert {k: v for k, v in group_b.attrs.items() if k not in INGEST_ATTRS} == dict(group_a.attrs)
    groups_a = {
        name: dict(node.attrs) for name, node in group_a.members(max_depth=None) if isinstance(node, zarr.Group)
    }
    groups_b = {
        name: dict(node.attrs) for name, node in group_b.members(max_depth=None) if isinstance(node, zarr.Group)
    }
    assert groups_a == groups_b


def test_converted_store_round_trips_bit_for_bit(converted, exported, tmp_path):
    from sensorium_pipeline.data.deeplake_io import ingest_deeplake

    out = tmp_path / MOUSE
    summary = ingest_deeplake(f"deeplake:{exported}", out, mouse=MOUSE, chunk_frames=16)
    assert summary["n_trials"] == len(open_mouse(converted).trials) and summary["verified_trials"] == 8
    assert_same_store(converted, out)
    a, b = open_mouse(converted), open_mouse(out)
    assert np.array_equal(a.usable_frames(), b.usable_frames())
    assert np.array_equal(a.rows("oracle"), b.rows("oracle"))
    assert b.trials["stimulus_group"].nunique() < len(b.trials)  # repeats found again from the videos
    assert not list(tmp_path.glob(f".{MOUSE}.tmp-*"))


def test_dataset_is_laid_out_like_the_competitions(deeplake, converted, exported):
    store = open_mouse(converted)
    ds = deeplake.open_read_only(str(exported))
    assert {c.name for c in ds.schema.columns} == {*MODALITIES, "id"}
    row = 3
    trial_id = int(ds["id"][row])
    store_row = int(np.flatnonzero(store.trials["trial_id"].to_numpy() == trial_id)[0])
    video, responses = np.asarray(ds["videos"][row]), np.asarray(ds["responses"][row])
    assert video.shape == (1, store.t_pad, 36, 64) and responses.shape == (store.n_neurons, store.t_pad)
    assert same_bits(responses.T.copy(), np.asarray(store.array("responses")[store_row]))
    assert ds.metadata["neuron_ids"] == store.unit_ids.tolist()
    assert ds.metadata["mouse"] == MOUSE and ds.metadata["t_pad"] == store.t_pad
    tiers = dict(zip(ds.metadata["trial_ids"], ds.metadata["tiers"], strict=True))
    assert tiers[trial_id] == store.trials["tier"].iloc[store_row]


def test_factory_store_round_trips_in_float64(deeplake, tmp_path):
    from sensorium_pipeline.data.deeplake_io import export_deeplake, ingest_deeplake

    store = make_store(tmp_path / "a", valid_frames=[30, 40, 36, 25] * 4, t_pad=40)
    export_deeplake(store, tmp_path / "dataset")
    ingest_deeplake(tmp_path / "dataset", tmp_path / "b", mouse="mouse-a", dtype="float64", chunk_frames=40)
    a, b = open_mouse(store), open_mouse(tmp_path / "b")
    assert b.array("videos").dtype == np.float64
    for modality in MODALITIES:  # float32 → float64 is exact
        assert same_bits(np.asarray(a.array(modality)[...]).astype(np.float64), np.asarray(b.array(modality)[...]))
    assert b.trials["valid_frames"].tolist() == [30, 40, 36, 25] * 4


def rewrite_dataset(deeplake, source: Path, dest: Path, *, drop=(), change=None, metadata=None) -> Path:
    """Copy a dataset row by row through Deep Lake, dropping columns or changing samples / metadata."""
    src = deeplake.open_read_only(str(source))
    ds = deeplake.create(str(dest))
    for column in src.schema.columns:
        if column.name not in drop:
            ds.add_column(column.name, column.dtype)
    for key in src.metadata.keys():  # noqa: SIM118 (not a dict)
        ds.metadata[key] = src.metadata[key]
    for key, value in (metadata or {}).items():
        ds.metadata[key] = value
    for row in range(len(src)):
        sample = {c.name: src[c.name][row] for c in ds.schema.columns}
        if change:
            sample = change(row, sample)
        ds.append([sample])
    ds.commit()
    return dest


def test_unpadded_trials_are_padded_back(deeplake, converted, exported, tmp_path):
    """Samples cut before their NaN padding (as a competition dataset might hold them) ingest the same."""
    from sensorium_pipeline.data.deeplake_io import ingest_deeplake

    def unpadded(sample, time_axis):
        nan = np.isnan(np.moveaxis(sample, time_axis, 0)).reshape(sample.shape[time_axis], -1).all(axis=1)
        frames = int(np.argmax(nan)) if nan.any() else len(nan)
        return np.ascontiguousarray(np.take(sample, np.arange(frames), axis=time_axis))

    def cut(row, sample):
        sample["videos"] = unpadded(sample["videos"], 1)  # (1, T, 36, 64)
        for modality in ("responses", "behavior", "pupil_center"):  # (C, T)
            sample[modality] = unpadded(sample[modality], 1)
        return sample

    cut_dataset = rewrite_dataset(deeplake, exported, tmp_path / "cut", change=cut)
    cut_ds = deeplake.open_read_only(str(cut_dataset))
    assert np.asarray(cut_ds["videos"][0]).shape[1] < open_mouse(converted).t_pad
    ingest_deeplake(cut_dataset, tmp_path / MOUSE, chunk_frames=16)
    assert_same_store(converted, tmp_path / MOUSE)


@pytest.mark.parametrize("url", ["hub://sinzlab/Sensorium_2023_dynamic29156_train", "deeplake:al://sinzlab/x"])
def test_hub_urls_explain_the_retired_v3_api(url, tmp_path):
    with pytest.raises(DeepLakeError, match=r"retired Deep Lake v3 API.*zip archives.*deeplake 3"):
        dataset_path(url)
    assert main(["deeplake-ingest", url, str(tmp_path / "store")]) == 2
    assert not (tmp_path / "store").exists()


def test_missing_column_names_dataset_and_column(deeplake, exported, tmp_path):
    from sensorium_pipeline.data.deeplake_io import ingest_deeplake

    broken = rewrite_dataset(deeplake, exported, tmp_path / "no_pupil", drop=("pupil_center",))
    with pytest.raises(DeepLakeError, match=rf"^{broken}: missing column\(s\) \['pupil_center'\]"):
        ingest_deeplake(broken, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_wrong_shape_names_dataset_column_and_row(deeplake, exported, tmp_path):
    from sensorium_pipeline.data.deeplake_io import ingest_deeplake

    def extra_neuron(row, sample):
        if row == 5:
            sample["responses"] = np.concatenate([sample["responses"], sample["responses"][:1]])
        return sample

    broken = rewrite_dataset(deeplake, exported, tmp_path / "bad_shape", change=extra_neuron)
    with pytest.raises(DeepLakeError, match=rf"^{broken}: column 'responses' row 5: shape \(21, 70\), expected"):
        ingest_deeplake(broken, tmp_path / "store")
    assert not (tmp_path / "store").exists() and not list(tmp_path.glob(".store.tmp-*"))


def test_metadata_problems_name_the_key(deeplake, exported, tmp_path):
    from sensorium_pipeline.data.deeplake_io import ingest_deeplake

    ds = deeplake.open_read_only(str(exported))
    cases = {
        "mouse": ({}, "other-mouse", r"metadata 'mouse': .* differs from the configured mouse 'other-mouse'"),
        "tiers": ({"tiers": ["train"] * len(ds)}, None, None),  # valid: every trial relabelled
        "frames": ({"valid_frames": [1] * len(ds)}, None, r"metadata 'valid_frames': trial \d+ records 1 frames"),
        "ids": ({"trial_ids": [i + 1000 for i in ds.metadata["trial_ids"]]}, None, r"column 'id': ids differ"),
        "unknown tier": ({"tiers": ["validation"] * len(ds)}, None, r"metadata 'tiers': unknown tier\(s\)"),
    }
    for name, (metadata, mouse, message) in cases.items():
        dataset = rewrite_dataset(deeplake, exported, tmp_path / name.replace(" ", "_"), metadata=metadata)
        out = tmp_path / f"store_{name.replace(' ', '_')}"
        if message is None:
            ingest_deeplake(dataset, out, mouse=mouse)
            assert set(open_mouse(out).trials["tier"]) == {"train"}
            continue
        with pytest.raises(DeepLakeError, match=message):
            ingest_deeplake(dataset, out, mouse=mouse)
        assert not out.exists()


def test_cli_exports_and_ingests(deeplake, converted, tmp_path, capsys):
    assert main(["deeplake-export", str(converted), str(tmp_path / "dataset"), "--verify-trials", "2"]) == 0
    assert main(["deeplake-ingest", str(tmp_path / "dataset"), str(tmp_path / MOUSE), "--chunk-frames", "16"]) == 0
    assert '"verified_trials": 8' in capsys.readouterr().out
    assert_same_store(converted, tmp_path / MOUSE)
    assert main(["deeplake-ingest", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "nowhere: no such Deep Lake dataset folder" in capsys.readouterr().err


def test_package_works_without_deeplake(tmp_path):
    """deeplake is optional: without it the package, the CLI and the DAG helpers import, and the
    Deep Lake commands say what to install."""
    code = (
        "import sys; sys.modules['deeplake'] = None\n"  # makes `import deeplake` raise ImportError
        "from sensorium_pipeline.__main__ import main\n"
        "import sensorium_pipeline.data.deeplake_io\n"
        f"sys.exit(main(['deeplake-export', {str(tmp_path)!r}, {str(tmp_path / 'out')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert "pip install -e '.[deeplake]'" in result.stderr


def deeplake_config(tmp_path: Path, url: str) -> Path:
    """The tiny test config with its second mouse read from ``url``."""
    config = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    config["model_dir"] = str(ROOT / "tests/configs/models")
    config["mice"][1] = {"name": MOUSE, "url": url}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(tmp_path: Path, configfile: Path, *args: str):
    return run_snakemake(
        *args, "-s", str(ROOT / "workflow/Snakefile"), "-d", str(tmp_path), "--configfile", str(configfile)
    )


def test_deeplake_mouse_dry_runs_to_the_ingest_rule(tmp_path):
    (tmp_path / "datasets" / MOUSE).mkdir(parents=True)
    configfile = deeplake_config(tmp_path, f"deeplake:datasets/{MOUSE}")
    result = snakemake(tmp_path, configfile, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned_jobs(result.stdout + result.stderr)
    assert jobs["ingest_deeplake"] == 1
    assert jobs["simulate"] == jobs["download"] == jobs["convert"] == 1  # only the simulated mouse
    result = snakemake(tmp_path, configfile, f"results/deeplake/{MOUSE}", "-n", "--quiet", "rules")
    assert planned_jobs(result.stdout + result.stderr) == {"ingest_deeplake": 1, "export_deeplake": 1}


def test_missing_dataset_or_hub_url_stops_the_dag(tmp_path):
    result = snakemake(tmp_path, deeplake_config(tmp_path, "deeplake:nowhere"), "-n")
    assert result.returncode != 0
    assert "Deep Lake dataset nowhere not found" in result.stdout + result.stderr
    result = snakemake(tmp_path, deeplake_config(tmp_path, "hub://sinzlab/Sensorium_2023_x_train"), "-n")
    assert result.returncode != 0
    assert "retired Deep Lake v3 API" in result.stdout + result.stderr


def test_workflow_ingests_and_exports(deeplake, exported, tmp_path):
    """The two rules run for real: a deeplake: mouse is ingested, a simulated one exported."""
    configfile = deeplake_config(tmp_path, f"deeplake:{exported}")
    simulated = yaml.safe_load(configfile.read_text())["mice"][0]["name"]
    result = snakemake(tmp_path, configfile, "--cores", "2", f"results/data/{MOUSE}", f"results/deeplake/{simulated}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert open_mouse(tmp_path / "results/data" / MOUSE).trials.shape[0] == len(deeplake.open_read_only(str(exported)))
    assert len(deeplake.open_read_only(str(tmp_path / "results/deeplake" / simulated))) == len(
        open_mouse(tmp_path / "results/data" / simulated).trials
    )
