"""Training as a user relies on it: folds never split repeats, an interrupted run resumes to
the same result, a checkpoint of another config is refused, and predictions cover every frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from factories import make_store
from sensorium_pipeline.errors import ConfigError, PathError
from sensorium_pipeline.folds import assign_folds, split_rows
from sensorium_pipeline.models import ModelConfig, load_trained
from sensorium_pipeline.predict import predict_mouse, window_starts
from sensorium_pipeline.train import TrainConfig, load_model_file, train

MODEL = ModelConfig.from_dict(
    {
        "core": {"type": "factorized3d", "channels": [4, 4], "spatial_kernels": [3, 3], "temporal_kernels": [3, 3]},
        "readout": {"type": "gaussian", "position_hidden": 4, "position_layers": 1},
        "shifter": {"hidden": 2, "layers": 2},
        "downsample": 4,
    }
)
TRAINING = TrainConfig(
    seed=3,
    threads=1,
    device="cpu",
    max_epochs=3,
    batches_per_epoch=3,
    batch_size=2,
    window_frames=20,
    scheduler="cosine",
    patience=10,
    val_skip_first=5,
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return [make_store(root / "a", mouse="mouse-a", seed=1), make_store(root / "b", mouse="mouse-b", n_neurons=7, seed=2)]


def run(stores, out, training=TRAINING, **kwargs):
    return train(
        stores,
        MODEL,
        training,
        fold=1,
        n_folds=2,
        out_model=out / "model.pt",
        out_metrics_csv=out / "metrics.csv",
        checkpoint_dir=out / "checkpoints",
        log=lambda msg: None,
        **kwargs,
    )


def test_folds_keep_repeats_of_a_stimulus_together():
    trials = pd.DataFrame(
        {
            "tier": ["train"] * 12 + ["oracle"] * 12 + ["final_test_main"] * 3,
            "stimulus_group": list(range(12)) + [100, 101, 102] * 4 + [200] * 3,
        }
    )
    folds = assign_folds(trials, n_folds=3, seed=0)
    assert (folds[-3:] == -1).all()  # test tiers are in no fold
    for group, members in trials.iloc[:24].groupby("stimulus_group").groups.items():
        assert len(set(folds[list(members)])) == 1, group
    assert np.array_equal(folds, assign_folds(trials, n_folds=3, seed=0))
    train_rows, val_rows = split_rows(folds, 2)
    assert not set(train_rows) & set(val_rows)
    assert len(train_rows) + len(val_rows) == 24
    with pytest.raises(ConfigError, match="n_folds"):
        assign_folds(trials, n_folds=40, seed=0)


def test_an_interrupted_training_resumes_to_the_same_model(stores, tmp_path):
    full = run(stores, tmp_path / "full")

    class Interrupt(Exception):
        pass

    def stop_after_first(epoch, metrics):
        if epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(stores, tmp_path / "resumed", on_epoch_end=stop_after_first)
    assert not (tmp_path / "resumed" / "model.pt").exists()  # no final output of an unfinished run
    assert len(pd.read_csv(tmp_path / "resumed" / "metrics.csv")) == 1
    resumed = run(stores, tmp_path / "resumed")
    assert resumed == full
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "full" / "metrics.csv").drop(columns="seconds"),
        pd.read_csv(tmp_path / "resumed" / "metrics.csv").drop(columns="seconds"),
    )


def test_a_checkpoint_of_another_config_is_refused(stores, tmp_path):
    class Interrupt(Exception):
        pass

    def stop(epoch, metrics):
        raise Interrupt

    with pytest.raises(Interrupt):
        run(stores, tmp_path, on_epoch_end=stop)
    with pytest.raises(PathError, match="another model"):
        run(stores, tmp_path, TrainConfig(**{**TRAINING.to_dict(), "lr": 0.001}))


def test_predictions_cover_every_usable_frame_of_the_requested_tiers(stores, tmp_path):
    run(stores, tmp_path)
    preds = predict_mouse(tmp_path / "model.pt", stores[1], ["oracle", "final_test_main"], window_frames=16, stride=7)
    assert preds.mouse == "mouse-b"
    assert set(preds.tiers) == {"oracle", "final_test_main"}
    assert preds.values.shape == (6, 36, 7)
    assert np.isfinite(preds.values).all() and (preds.values > 0).all()  # ELU+1 rates
    trained = load_trained(tmp_path / "model.pt")
    assert trained.extra["fold"] == 1 and sorted(trained.model.mice) == ["mouse-a", "mouse-b"]
    starts, length = window_starts(36, 16, 7)
    assert length == 16 and starts[0] == 0 and starts[-1] + length == 36
    assert window_starts(10, 16, 7) == ([0], 10)


def test_model_files_reject_unknown_keys(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("model:\n  core_channels: [8]\n  spatial_kernels: [3]\n  temporal_kernels: [3]\n  widht: 3\n")
    with pytest.raises(ConfigError, match=r"m\.yaml.*widht"):
        load_model_file(path)
