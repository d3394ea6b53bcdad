"""The training recipes of issues 11 and 12: raw targets, mixed and cycled batches with the
references' loss reductions, restore-best early stopping, labelled tiers, corrupt checkpoints."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from factories import captured_logs, make_store, withhold_responses
from sensorium_pipeline.errors import ConfigError
from sensorium_pipeline.models import ModelConfig, MouseMeta, build_model, load_trained, save_trained
from sensorium_pipeline.training.distill import DistillConfig, Teacher
from sensorium_pipeline.training.placement import load_sources
from sensorium_pipeline.training.sampler import WindowSampler
from sensorium_pipeline.training.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    _micro_batch,
    _shared_pass_loss,
    _StepContext,
    train,
)

MODEL = ModelConfig.from_dict(
    {
        "core": {"type": "factorized3d", "channels": [4, 4], "spatial_kernels": [3, 3], "temporal_kernels": [3, 3]},
        "readout": {"type": "factorized"},
        "shifter": {"hidden": 2, "layers": 2},
        "downsample": 4,
    }
)
BASE = dict(seed=5, threads=1, device="cpu", max_epochs=3, batches_per_epoch=3, batch_size=4, window_frames=20,
            scheduler="cosine", patience=10, val_skip_first=5)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return [make_store(root / "a", mouse="mouse-a", seed=1), make_store(root / "b", mouse="mouse-b", n_neurons=7, seed=2)]


def run(stores, out, log=None, labelled_tiers=("train", "oracle"), **training):
    """Train; ``log`` sees every line the package logs."""
    with captured_logs(log):
        return train(
            stores, MODEL, TrainConfig(**{**BASE, **training}), fold=0, n_folds=2, out_model=out / "model.pt",
            out_metrics_csv=out / "metrics.csv", checkpoint_dir=out / "checkpoints", labelled_tiers=labelled_tiers,
        )


def _model(sources, seed=0):
    torch.manual_seed(seed)
    metas = [MouseMeta(m, s.unit_ids, s.coordinates, None) for m, s in sorted(sources.items())]
    return build_model(MODEL, metas).eval(), metas  # eval: no dropout, batch norm by running statistics


def _ctx(model, sources, cfg, teacher=None, weight=0.36):
    return _StepContext(model=model, cfg=cfg, skip=2, frame_size=model.inputs.output_size(36, 64),
                        rng=np.random.default_rng(0), mice=sorted(sources),
                        trials={m: len(s.rows("train")) for m, s in sources.items()}, teacher=teacher,
                        distill=DistillConfig(weight=weight))


def _regularizer(model, mouse):
    """The model's own penalty for a batch of ``mouse``, where it has one (0 otherwise)."""
    return model.regularizer(mouse) if callable(getattr(model, "regularizer", None)) else 0.0


def _poisson(rates, targets):
    """The reference criterion: ``PoissonNLLLoss(log_input=False, full=False, eps=1e-8)``, no reduction."""
    return torch.nn.PoissonNLLLoss(log_input=False, full=False, eps=1e-8, reduction="none")(rates, targets)


def test_a_mixed_batch_is_one_core_pass_with_the_references_weighted_sum(stores, tmp_path):
    sources = load_sources(stores, mode="ram", targets="raw")
    for s in sources.values():
        s.responses[:, :3] -= 0.5  # negative raw values: clipped before the loss
    cfg = TrainConfig(**{**BASE, "batching": "mixed", "targets": "raw"})
    model, metas = _model(sources)
    sampler = WindowSampler(sources, {m: s.rows("train") for m, s in sources.items()}, 20, 6, 1, batching="mixed")
    groups = next(sampler.steps(1))
    assert len(groups) == 2
    calls = []
    model.core.register_forward_hook(lambda *args: calls.append(1))
    loss = _shared_pass_loss(_ctx(model, sources, cfg), groups)
    assert len(calls) == 1  # the core ran once for both mice

    # the reference: each window's targets weighted 1 / (windows), elementwise loss summed
    windows = sum(len(b) for _, b in groups)
    expected = sum(_poisson(model(b.video, b.behavior, b.pupil_center, w.mouse)[:, 2:],
                            b.responses.clamp_min(0)[:, 2:]).sum() for w, b in groups) / windows
    penalty = sum(len(b) / windows * _regularizer(model, w.mouse) for w, b in groups)
    torch.testing.assert_close(loss, expected + penalty, rtol=1e-5, atol=1e-6)

    # distillation: the reference fills the other mouse of every window with the teacher's
    # prediction at weight ratio / (1 - ratio) * sum(weights) / (distilled pairs), then normalises
    path = tmp_path / "teacher.pt"
    teacher_model, _ = _model(sources, seed=1)
    save_trained(path, teacher_model, MODEL, metas, {"training": cfg.to_dict()})
    teacher = Teacher([path], torch.device("cpu"))
    ratio = 0.36
    calls.clear()
    loss = _shared_pass_loss(_ctx(model, sources, cfg, teacher, ratio), groups)
    assert len(calls) == 1  # still one student core pass: every readout reads the same features
    terms, weights = [], []
    for w, b in groups:
        for other in sorted(sources):
            rates = model(b.video, b.behavior, b.pupil_center, other)[:, 2:]
            if other == w.mouse:
                terms.append(_poisson(rates, b.responses.clamp_min(0)[:, 2:]).sum(dim=(1, 2)))
                weights.append(torch.ones(len(b)))
            else:
                target = teacher_model(b.video, b.behavior, b.pupil_center, other)[:, 2:]
                terms.append(_poisson(rates, target).sum(dim=(1, 2)))
                weights.append(torch.full((len(b),), -1.0))  # filled in below
    weights = torch.cat(weights)
    distilled = weights < 0
    weights[distilled] = ratio / (1 - ratio) * weights[~distilled].sum() / distilled.sum()
    expected = (torch.cat(terms) * weights / weights.sum()).sum()
    torch.testing.assert_close(loss, expected + penalty, rtol=1e-5, atol=1e-6)


def test_a_cycle_step_sums_one_batch_of_every_mouse_with_the_starter_kits_scaling(stores):
    sources = load_sources(stores, mode="ram")
    cfg = TrainConfig(**{**BASE, "batching": "cycle", "readout_l1": 0.5})
    model, _ = _model(sources)
    sampler = WindowSampler(sources, {m: s.rows("train") for m, s in sources.items()}, 20, 3, 1, batching="cycle")
    groups = next(sampler.steps(1))
    ctx = _ctx(model, sources, cfg)
    got = _micro_batch(ctx, groups, torch.device("cpu"))
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    expected = 0.0
    for w, b in groups:  # sqrt(training trials / batch) x summed Poisson loss + the penalty
        rates = model(b.video, b.behavior, b.pupil_center, w.mouse)[:, 2:]
        loss = np.sqrt(ctx.trials[w.mouse] / 3) * _poisson(rates, b.responses[:, 2:]).sum()
        loss = loss + 0.5 * model.readout_l1(w.mouse) + _regularizer(model, w.mouse)
        loss.backward()
        expected += float(loss.detach())
    assert got == pytest.approx(expected, rel=1e-5)
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6)


def test_mixed_raw_training_resumes_bit_identically_and_records_its_targets(stores, tmp_path):
    recipe = dict(batching="mixed", targets="raw", cutmix_prob=0.5, ema_decay=0.9, grad_accumulation=2)
    full = run(stores, tmp_path / "full", **recipe)

    class Interrupt(Exception):
        pass

    def stop(line):  # an epoch's line is logged once its checkpoint is written
        if line.startswith("epoch 2/"):
            raise Interrupt

    with pytest.raises(Interrupt), captured_logs(stop):
        train(stores, MODEL, TrainConfig(**{**BASE, **recipe}), fold=0, n_folds=2,
              out_model=tmp_path / "resumed" / "model.pt", out_metrics_csv=tmp_path / "resumed" / "metrics.csv",
              checkpoint_dir=tmp_path / "resumed" / "checkpoints")
    assert run(stores, tmp_path / "resumed", **recipe) == full
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_trained(tmp_path / "full" / "model.pt").extra["training"]["targets"] == "raw"
    assert np.isfinite(full["best_val_correlation"])
    cycled = run(stores, tmp_path / "cycle", batching="cycle", cutmix_prob=0.5)
    assert cycled["epochs"] == 3


def test_patience_running_out_restores_the_best_weights_until_the_decay_steps_are_spent(stores, tmp_path):
    states = []
    lines: list[str] = []

    def keep(line):  # an epoch's line is logged once its checkpoint is written
        lines.append(line)
        if line.startswith("epoch "):
            saved = torch.load(tmp_path / "checkpoints" / CHECKPOINT_NAME, weights_only=True)
            states.append((saved["model"], saved["best_state"]))

    # nothing beats the first epoch by 1.0: every later epoch runs out of patience (1)
    training = dict(max_epochs=10, patience=1, lr_decay_steps=3, restore_best=True, improvement_threshold=1.0,
                    scheduler="plateau", plateau_patience=0, lr=0.01)
    with captured_logs(keep):
        summary = train(stores, MODEL, TrainConfig(**{**BASE, **training}), fold=0, n_folds=2,
                        out_model=tmp_path / "model.pt", out_metrics_csv=tmp_path / "metrics.csv",
                        checkpoint_dir=tmp_path / "checkpoints")
    assert summary["epochs"] == 4 and summary["best_epoch"] == 0
    assert sum("best weights restored" in line for line in lines) == 2
    assert "stopping early" in [line for line in lines if line.startswith("epoch ")][-1]
    for model, best in states[1:3]:  # after epochs 2 and 3 the weights went back to epoch 1's
        assert all(torch.equal(model[k], best[k]) for k in best)
    assert not all(torch.equal(states[3][0][k], states[3][1][k]) for k in states[3][1])  # the last is not restored
    lrs = [float(line.split(" lr ")[1].split()[0]) for line in lines if line.startswith("epoch ")]
    assert lrs[0] == 0.01 and lrs[-1] < 0.01  # the plateau scheduler lowered the rate on the way


def _trial_counts(lines):
    out = {}
    for line in lines:
        match = re.match(r"(mouse-\w): (\d+) training trials, (\d+) validation trials", line)
        if match:
            out[match.group(1)] = int(match.group(2)) + int(match.group(3))
    return out


def test_labelled_tiers_add_the_released_test_tiers_and_skip_withheld_ones(tmp_path):
    a = make_store(tmp_path / "a", mouse="mouse-a", seed=1)
    b = make_store(tmp_path / "b", mouse="mouse-b", n_neurons=7, seed=2)
    withhold_responses(b, ["live_test_main", "final_test_main", "live_test_bonus", "final_test_bonus"])
    lines: list[str] = []
    run([a, b], tmp_path / "default", log=lines.append, max_epochs=1)
    assert _trial_counts(lines) == {"mouse-a": 12, "mouse-b": 12}  # train + oracle
    lines.clear()
    tiers = ["train", "oracle", "live_test_main", "final_test_main"]
    summary = run([a, b], tmp_path / "all", log=lines.append, max_epochs=1, labelled_tiers=tiers)
    assert _trial_counts(lines) == {"mouse-a": 16, "mouse-b": 12}
    assert sum("withheld" in line for line in lines) == 2  # mouse b's two test tiers
    assert any("not held out" in line for line in lines)
    assert load_trained(tmp_path / "all" / "model.pt").extra["labelled_tiers"] == tiers
    assert summary["epochs"] == 1


def test_a_corrupt_checkpoint_is_moved_aside_and_the_fold_starts_afresh(stores, tmp_path):
    fresh = run(stores, tmp_path / "fresh")
    checkpoints = tmp_path / "broken" / "checkpoints"
    checkpoints.mkdir(parents=True)
    whole = (tmp_path / "fresh" / "checkpoints" / CHECKPOINT_NAME).read_bytes()
    (checkpoints / CHECKPOINT_NAME).write_bytes(whole[: len(whole) // 2])  # a real checkpoint, cut short
    lines: list[str] = []
    assert run(stores, tmp_path / "broken", log=lines.append) == fresh
    notes = [line for line in lines if "corrupt checkpoint" in line]
    assert len(notes) == 1 and str(checkpoints / CHECKPOINT_NAME) in notes[0] and "afresh" in notes[0]
    aside = list(checkpoints.glob(f"{CHECKPOINT_NAME}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == whole[: len(whole) // 2]
    a = torch.load(tmp_path / "fresh" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "broken" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # bytes that are no checkpoint at all, and a file that loads but lacks the training state
    for content in (b"PK\x03\x04 not a checkpoint" * 10, None):
        if content is None:
            torch.save({"model": {}}, checkpoints / CHECKPOINT_NAME)
        else:
            (checkpoints / CHECKPOINT_NAME).write_bytes(content)
        lines.clear()
        assert run(stores, tmp_path / "broken", log=lines.append) == fresh
        assert sum("corrupt checkpoint" in line for line in lines) == 1
    assert "lacks" in next(line for line in lines if "corrupt checkpoint" in line)
    assert len(list(checkpoints.glob(f"{CHECKPOINT_NAME}.corrupt-*"))) == 3


def test_target_clip_lowers_each_neurons_bursts_to_its_multiple_of_the_mean_and_nothing_else(stores, tmp_path):
    from sensorium_pipeline.training.cutmix import CutMixPlan
    from sensorium_pipeline.training.train import _targets

    sources = load_sources(stores, mode="ram", targets="raw")
    source = sources["mouse-a"]
    mean = source.mean_response(source.rows("train"))
    batch = source.window(source.rows("train")[:3], np.zeros(3, dtype=int), 20)
    batch.responses[0, 5, 0] = 1000.0 * mean[0]  # one burst
    plan = CutMixPlan.draw(None, 3, 36, 64, 1.0, np.random.default_rng(0))
    ceiling = torch.as_tensor(4.0 * mean, dtype=torch.float32)
    clipped, kept = _targets(plan, batch, 0, ceiling), _targets(plan, batch, 0, None)
    assert float(clipped[0, 5, 0]) == pytest.approx(4.0 * mean[0], rel=1e-6)
    assert float(kept[0, 5, 0]) == pytest.approx(1000.0 * mean[0], rel=1e-6)
    below = kept <= ceiling
    assert torch.equal(clipped[below], kept[below])  # only the values above the ceiling change
    assert torch.all(clipped <= ceiling)

    # training with it runs, and an invalid value is a config error naming the key
    summary = run(stores, tmp_path, targets="raw", batching="mixed", target_clip=4.0)
    assert summary["epochs"] == BASE["max_epochs"]
    for bad in (0, -1.0, True, "x"):
        with pytest.raises(ConfigError, match="target_clip"):
            TrainConfig(target_clip=bad)


def test_the_gaussian_position_networks_learn_at_their_own_rate(stores):
    from sensorium_pipeline.training.train import _optimizer

    config = ModelConfig.from_dict({**MODEL.to_dict(), "readout": {"type": "gaussian", "init_sigma": 0.1}})
    sources = load_sources(stores, mode="ram")
    metas = [MouseMeta(m, s.unit_ids, s.coordinates, None) for m, s in sorted(sources.items())]
    model = build_model(config, metas)
    optimizer, _ = _optimizer(model, TrainConfig(**{**BASE, "lr": 0.01, "position_lr_scale": 5.0}))
    rates = sorted((g["lr"], len(g["params"])) for g in optimizer.param_groups)
    n_position = sum(p.numel() > 0 for n, p in model.named_parameters() if ".positions." in n)
    assert rates[0][0] == pytest.approx(0.01) and rates[1] == (pytest.approx(0.05), n_position)
    assert sum(n for _, n in rates) == len(list(model.parameters()))
    with pytest.raises(ConfigError, match="position_lr_scale"):
        TrainConfig(position_lr_scale=0)


def test_prepare_model_sees_the_built_model_before_its_optimiser(stores, tmp_path):
    """A diagnostic can pin weights (here every readout bias) once, on the built model, before
    training starts: the trained model keeps them as set."""
    seen = []

    def pin_biases(model):
        for readout in model.readouts.values():
            readout.bias.data.fill_(0.25)
            readout.bias.requires_grad_(False)
        seen.append(model)

    with captured_logs():
        train(stores, MODEL, TrainConfig(**BASE), fold=0, n_folds=2, out_model=tmp_path / "model.pt",
              out_metrics_csv=tmp_path / "metrics.csv", checkpoint_dir=tmp_path / "checkpoints",
              labelled_tiers=("train", "oracle"), prepare_model=pin_biases)
    assert len(seen) == 1
    trained = load_trained(tmp_path / "model.pt").model
    for readout in trained.readouts.values():
        assert torch.all(readout.bias == 0.25)
