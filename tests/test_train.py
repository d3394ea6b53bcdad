"""Training as a user relies on it: folds never split repeats, an interrupted run (with EMA,
CutMix and gradient accumulation) resumes to the same result, a checkpoint of another config
is refused, the schedule warms up then decays, distillation trains the other mice's readouts,
one model per mouse works, progress is one plain line per epoch, and predictions cover every
frame (also with a frame step)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from factories import captured_logs, make_store
from sensorium_pipeline.errors import ConfigError, PathError
from sensorium_pipeline.models import ModelConfig, build_model, load_trained
from sensorium_pipeline.scoring.predict import predict_mouse, predict_windows, window_starts
from sensorium_pipeline.training.cutmix import CutMixPlan
from sensorium_pipeline.training.distill import DistillConfig, Teacher
from sensorium_pipeline.training.ema import ModelEma
from sensorium_pipeline.training.folds import assign_folds, split_rows
from sensorium_pipeline.training.placement import load_sources
from sensorium_pipeline.training.sampler import WindowSampler
from sensorium_pipeline.training.train import METRIC_COLUMNS, TrainConfig, load_model_file, lr_at, poisson_loss, train

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
    warmup_epochs=1,
    patience=10,
    val_skip_first=5,
    ema_decay=0.9,
    cutmix_prob=0.5,
    grad_accumulation=2,
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return [make_store(root / "a", mouse="mouse-a", seed=1), make_store(root / "b", mouse="mouse-b", n_neurons=7, seed=2)]


def run(stores, out, training=TRAINING, log=None, **kwargs):
    """Train; ``log`` sees every line the package logs."""
    with captured_logs(log):
        return train(
            stores,
            MODEL,
            training,
            fold=1,
            n_folds=2,
            out_model=out / "model.pt",
            out_metrics_csv=out / "metrics.csv",
            checkpoint_dir=out / "checkpoints",
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

    def stop_after_first(line):  # an epoch's line is logged once its checkpoint is written
        if line.startswith("epoch 1/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        run(stores, tmp_path / "resumed", log=stop_after_first)
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

    def stop(line):
        if line.startswith("epoch "):
            raise Interrupt

    with pytest.raises(Interrupt):
        run(stores, tmp_path, log=stop)
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
    path.write_text("model:\n  core: {type: factorized3d, channels: [8], spatial_kernels: [3], temporal_kernels: [3]}\n  widht: 3\n")
    with pytest.raises(ConfigError, match=r"m\.yaml.*widht"):
        load_model_file(path)


def test_the_schedule_warms_up_linearly_then_decays_by_cosine_to_min_lr():
    cfg = TrainConfig(max_epochs=4, batches_per_epoch=10, warmup_epochs=1, lr=0.01, min_lr=0.001, scheduler="cosine")
    lrs = [lr_at(cfg, step) for step in range(40)]
    assert lrs[0] == pytest.approx(0.001) and lrs[9] == pytest.approx(0.01)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert lrs[10] == pytest.approx(0.01) and lrs[39] == pytest.approx(0.001)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    plateau = TrainConfig(warmup_epochs=1, batches_per_epoch=10, scheduler="plateau")
    assert lr_at(plateau, 5) is not None and lr_at(plateau, 10) is None


def test_cutmix_pastes_a_box_of_each_windows_partner_and_mixes_targets_by_its_area():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 5, 4, 64, 64, generator=gen)  # 4 own windows + 2 partners, 5 stacked channels
    y = torch.rand(6, 4, 3, generator=gen)
    partners = np.array([4, -1, 5, -1])
    plan = CutMixPlan.draw(partners, 6, 64, 64, 1.0, np.random.default_rng(1))
    assert [(i, j) for i, j, _ in plan.pairs] == [(0, 4), (2, 5)]
    mixed, targets = plan.inputs(x), plan.targets(y)
    assert mixed.shape == (4, 5, 4, 64, 64) and targets.shape == (4, 4, 3)
    for i in (1, 3):  # no partner: unchanged
        assert torch.equal(mixed[i], x[i]) and torch.equal(targets[i], y[i])
    for i, j, box in plan.pairs:
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[box.top : box.bottom, box.left : box.right] = True
        # every channel (video and behaviour) of every frame comes from the partner inside the box
        assert torch.equal(mixed[i][..., inside], x[j][..., inside])
        assert torch.equal(mixed[i][..., ~inside], x[i][..., ~inside])
        assert box.share == pytest.approx(float(inside.float().mean()))
        assert torch.allclose(targets[i], (1 - box.share) * y[i] + box.share * y[j])
    assert CutMixPlan.draw(None, 3, 64, 64, 1.0, np.random.default_rng(0)).inputs(x).shape[0] == 3


def test_the_sampler_draws_a_fresh_partner_window_of_the_same_mouse(stores):
    data = load_sources(stores, mode="ram")
    rows = {m: d.rows("train") for m, d in data.items()}
    sampler = WindowSampler(data, rows, 10, 64, seed=0, batching="mixed", cutmix_prob=0.5)
    groups = sampler.draw_step()
    assert sum(w.n_own for w in groups) == 64 and sorted({w.mouse for w in groups}) == sorted(rows)
    for w in groups:
        has = w.partners >= 0
        assert 0 < has.sum() < w.n_own  # about half of 64 windows
        assert len(w.rows) == w.n_own + has.sum() and sorted(w.partners[has]) == list(range(w.n_own, len(w.rows)))
        assert set(w.rows.tolist()) <= set(rows[w.mouse].tolist())


def test_ema_follows_every_state_entry_from_the_first_step_as_the_reference():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEma(model, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()(torch.rand(4, 3))  # moves the running statistics and the batch counter
    ema.update(model)
    after = ema.module.state_dict()
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(after[name], 0.5 * before[name] + 0.5 * value), name
    assert int(after["1.num_batches_tracked"]) == 0  # 0.5 * 0 + 0.5 * 1 truncated, as the reference
    assert not ema.module[0].weight.requires_grad

    legacy = ModelEma(torch.nn.Linear(3, 2), 0.5, warmup=True)
    start = legacy.module.weight.detach().clone()
    moved = torch.nn.Linear(3, 2)
    legacy.update(moved)  # decay min(0.5, 2 / 11)
    d = 2 / 11
    assert torch.allclose(legacy.module.weight, d * start + (1 - d) * moved.weight)


def test_progress_is_one_plain_line_per_epoch_and_the_csv_has_every_column(stores, tmp_path):
    lines = []
    summary = run(stores, tmp_path, log=lines.append)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == summary["epochs"] == 3
    assert all("loss" in line and "val corr" in line for line in epochs)
    assert all(ch.isprintable() for line in lines for ch in line)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert tuple(metrics.columns) == METRIC_COLUMNS
    assert metrics["step"].tolist() == [3, 6, 9] and metrics["val_correlation"].notna().all()


def test_distillation_trains_the_other_mice_readouts_from_a_first_stage_teacher(stores, tmp_path):
    run(stores, tmp_path / "stage1")
    teacher = Teacher([tmp_path / "stage1" / "model.pt"], torch.device("cpu"))
    data = load_sources(stores, mode="ram")
    batch = data["mouse-a"].window([0, 1], [0, 0], 20)
    student = load_trained(tmp_path / "stage1" / "model.pt").model.train()
    features = student.encode(batch.video, batch.behavior, batch.pupil_center)  # one core pass
    target = teacher.predict(batch.video, batch.behavior, batch.pupil_center, ["mouse-b"])["mouse-b"]
    loss = poisson_loss(student.decode(features, "mouse-b", batch.pupil_center)[:, 4:], target[:, 4:])
    loss.backward()
    grads = {name: p.grad for name, p in student.named_parameters() if "readouts" in name and p.grad is not None}
    keys = {name.split(".")[1] for name, g in grads.items() if g.abs().sum() > 0}
    assert keys == {student._index["mouse-b"]}  # only mouse b's readout learns from the teacher

    for batching in ("per_mouse", "mixed"):
        training = TrainConfig(**{**TRAINING.to_dict(), "batching": batching})
        summary = run(stores, tmp_path / f"stage2-{batching}", training, teachers=[tmp_path / "stage1" / "model.pt"],
                      distillation=DistillConfig(weight=0.5))
        assert summary["stage"] == 2
        one = torch.load(tmp_path / "stage1" / "model.pt", weights_only=True)["state_dict"]
        two = torch.load(tmp_path / f"stage2-{batching}" / "model.pt", weights_only=True)["state_dict"]
        assert any(not torch.equal(one[k], two[k]) for k in one)
    with pytest.raises(ConfigError, match="weight"):
        DistillConfig(weight=1.0)
    with pytest.raises(ConfigError, match="targets"):
        run(stores, tmp_path / "stage2-raw", TrainConfig(**{**TRAINING.to_dict(), "targets": "raw"}),
            teachers=[tmp_path / "stage1" / "model.pt"])


def test_one_model_per_mouse_learns_only_its_mouse(stores, tmp_path):
    run(stores[1:], tmp_path)
    trained = load_trained(tmp_path / "model.pt")
    assert trained.model.mice == ["mouse-b"]
    preds = predict_mouse(tmp_path / "model.pt", stores[1], ["oracle"])
    assert np.isfinite(preds.values).all()


def test_windows_with_a_frame_step_predict_every_frame(stores):
    config = ModelConfig.from_dict({**MODEL.to_dict(), "frame_step": 2})
    data = load_sources(stores, mode="ram")["mouse-b"]
    model = build_model(config, load_trained_metas(data)).eval()
    values = predict_windows(model, data, np.arange(3), window_frames=6, stride=4, batch_size=4,
                             device=torch.device("cpu"))
    assert values.shape == (3, 36, 7) and np.isfinite(values).all()


def load_trained_metas(data):
    from sensorium_pipeline.models import MouseMeta

    return [MouseMeta(name=data.mouse, unit_ids=data.unit_ids, coordinates=data.coordinates, mean_response=None)]
