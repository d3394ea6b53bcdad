"""Our ``dwiseneuro`` against the 1st-place reference code (lRomul/sensorium 6849050), through
the fixture it recorded (``tests/data/dwiseneuro/README.md``): imported weights give its
outputs, our predictor its trial averages, our loss its loss; full-size parameter counts and
FLOPs equal its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sensorium_pipeline.data.sources import MouseData
from sensorium_pipeline.models import ModelConfig, MouseMeta, build_model, load_trained
from sensorium_pipeline.training.losses import mice_poisson_loss, poisson_nll
from sensorium_pipeline.models.import_weights import (
    REFERENCE_MICE,
    WeightsError,
    best_checkpoint,
    import_checkpoint,
    read_checkpoint,
    reference_model,
)
from sensorium_pipeline.scoring.predict import default_stride, predict_windows
from sensorium_pipeline.training.train import load_model_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/data/dwiseneuro"
CHECKPOINT_DIR = FIXTURE / "experiments/fixture_001/fold_0"
FIXTURE_MICE = ("mouse-a", "mouse-b")
#: Neuron counts of the ten real mice, in the reference's order (REFERENCE_MICE).
REAL_NEURONS = (7863, 7908, 8202, 7939, 8122, 7440, 7928, 8285, 7671, 7495)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def recorded() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz") as data:
        return {k: data[k] for k in data.files}


def metas(*sizes: int, names: tuple[str, ...] = FIXTURE_MICE) -> list[MouseMeta]:
    return [MouseMeta(name, np.arange(n), np.zeros((n, 3))) for name, n in zip(names, sizes, strict=True)]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "model.pt"
    import_checkpoint(best_checkpoint(CHECKPOINT_DIR), metas(7, 10), out, fold=0, reference_mice=FIXTURE_MICE)
    return load_trained(out)


def time_first(video: np.ndarray, behavior: np.ndarray, pupil: np.ndarray):
    """The reference's file layout ``(..., 36, 64, T)`` / ``(..., 2, T)`` -> our time-first tensors."""
    return (
        torch.from_numpy(np.moveaxis(video, -1, -3).astype(np.float32)),
        torch.from_numpy(np.swapaxes(behavior, -1, -2).copy()),
        torch.from_numpy(np.swapaxes(pupil, -1, -2).copy()),
    )


def test_imported_weights_give_the_reference_outputs(imported, recorded):
    model = imported.model
    assert model.config.inputs == "raw" and model.frame_step == 2
    assert imported.extra["training"]["window_frames"] == 16
    video, behavior, pupil = time_first(
        recorded["window_video"], recorded["window_behavior"], recorded["window_pupil_center"]
    )
    with torch.no_grad():
        for k, mouse in enumerate(FIXTURE_MICE):
            ours = model(video, behavior, pupil, mouse).numpy()  # (B, T, N)
            reference = recorded[f"window_output_{k}"].transpose(0, 2, 1)
            np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_importing_names_an_unmapped_or_a_missing_tensor(tmp_path):
    params, state = read_checkpoint(best_checkpoint(CHECKPOINT_DIR))
    for broken, word in (
        ({**state, "core.blocks.1.extra_gate.weight": torch.zeros(1)}, "core.blocks.1.extra_gate.weight"),
        (
            {k: v for k, v in state.items() if k != "cortex.layers.1.bn_sc.bn.running_var"},
            "core.cortex.1.norm_shortcut",
        ),
        ({**state, "readouts.1.layer.1.bias": torch.zeros(3)}, "readouts.1.layer.1.bias: shape"),
    ):
        path = tmp_path / "model-001-0.5.pth"
        torch.save({"model_name": "MouseModel", "params": params, "nn_state_dict": broken}, path)
        with pytest.raises(WeightsError, match=word.replace(".", r"\.")):
            import_checkpoint(path, metas(7, 10), tmp_path / "model.pt", reference_mice=FIXTURE_MICE)
        assert not (tmp_path / "model.pt").exists()
    with pytest.raises(WeightsError, match="mouse-b: 9 neurons"):
        import_checkpoint(
            best_checkpoint(CHECKPOINT_DIR), metas(7, 9), tmp_path / "model.pt", reference_mice=FIXTURE_MICE
        )


def test_the_best_checkpoint_of_a_fold_is_the_highest_score(tmp_path):
    for name in ("model-003-0.210000.pth", "model-011-0.290000.pth", "model-007-0.280000.pth", "log.txt"):
        (tmp_path / name).write_bytes(b"")
    assert best_checkpoint(tmp_path).name == "model-011-0.290000.pth"
    with pytest.raises(WeightsError, match="no checkpoint"):
        best_checkpoint(tmp_path / "empty")


# --- full size: the reference's own counts, measured with its code at 6849050 ---------------

#: (parameters: total, core, cortex, readouts; core FLOPs of one 16 x 64 x 64 window) per expansion.
REFERENCE_SIZES = {
    7: ((170_656_070, 3_673_404, 5_402_624, 161_580_042), 28_522_471_424),
    6: ((170_058_402, 3_075_736, 5_402_624, 161_580_042), 24_453_677_056),
}


def reference_params(expansion: int) -> dict:
    """The reference's true_batch_001 (expansion 7) / distillation_001 (6) model parameters."""
    return {
        "nn_module": (
            "dwiseneuro",
            {
                "readout_outputs": REAL_NEURONS,
                "in_channels": 5,
                "core_features": (64, 64, 64, 64, 128, 128, 128, 256, 256),
                "spatial_strides": (2, 1, 1, 1, 2, 1, 1, 2, 1),
                "spatial_kernel": 3,
                "temporal_kernel": 5,
                "expansion_ratio": expansion,
                "se_reduce_ratio": 32,
                "cortex_features": (1024, 2048, 4096),
                "groups": 2,
                "softplus_beta": 0.07,
                "drop_rate": 0.4,
                "drop_path_rate": 0.1,
            },
        ),
        "frame_stack": {"size": 16, "step": 2, "position": "last"},
        "inputs_processor": ("stack_inputs", {"size": (64, 64), "pad_fill_value": 0.0}),
        "responses_processor": ("identity", {}),
    }


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("expansion, config_file", [(7, "dwiseneuro.yaml"), (6, "dwiseneuro_distill.yaml")])
def test_full_size_parameters_and_core_flops_equal_the_reference(expansion, config_file):
    (total, core, cortex, readouts), flops = REFERENCE_SIZES[expansion]
    shipped, _ = load_model_file(ROOT / "config/models" / config_file)
    derived = reference_model(reference_params(expansion)).config
    assert shipped.core == derived.core and shipped.readout == derived.readout
    assert (shipped.frame_step, shipped.pad_to, shipped.inputs) == (derived.frame_step, derived.pad_to, "raw")
    with torch.device("meta"):  # 170 M parameters: shapes only
        model = build_model(shipped, metas(*REAL_NEURONS, names=REFERENCE_MICE))
    assert count(model) == total
    assert count(model.core.stem) + count(model.core.blocks) == core
    assert count(model.core.cortex) == cortex
    assert count(model.readouts) == readouts
    small = build_model(dataclasses.replace(shipped), metas(3, 3, names=REFERENCE_MICE[:2])).eval()
    x = torch.zeros(1, 5, 16, 64, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        small.core.blocks(small.core.stem(x))
    assert counter.get_total_flops() == flops


def test_a_checkpoint_of_another_architecture_is_refused():
    params = reference_params(7)
    name, kw = params["nn_module"]
    params["nn_module"] = (name, {**kw, "spatial_strides": (1, 2, 1, 1, 2, 1, 1, 2, 1)})
    with pytest.raises(WeightsError, match="spatial_strides"):
        reference_model(params)
    params["nn_module"] = (name, {**kw, "stem_kernel": 3})
    with pytest.raises(WeightsError, match="stem_kernel"):
        reference_model(params)
    assert isinstance(reference_model(reference_params(6)).config, ModelConfig)


def test_our_loss_equals_the_reference_loss_on_the_recorded_batch(imported, recorded):
    video, behavior, pupil = time_first(
        recorded["window_video"], recorded["window_behavior"], recorded["window_pupil_center"]
    )
    weights = torch.from_numpy(recorded["loss_weights"])  # (samples, mice)
    rates, targets, sample_weights = [], [], []
    with torch.no_grad():
        for k, mouse in enumerate(FIXTURE_MICE):
            keep = weights[:, k] != 0
            rates.append(imported.model(video[keep], behavior[keep], pupil[keep], mouse))
            targets.append(torch.from_numpy(recorded[f"loss_target_{k}"]).transpose(1, 2)[keep])
            sample_weights.append(weights[keep, k])
    loss = mice_poisson_loss(rates, targets, sample_weights)
    assert loss.item() == pytest.approx(float(recorded["loss"]), rel=1e-6)
    # the reduction matters: a plain mean over elements is another number
    assert torch.cat([poisson_nll(r, t).flatten() for r, t in zip(rates, targets)]).mean() != pytest.approx(
        loss.item(), rel=1e-2
    )


def test_the_import_command_writes_a_model_from_our_stores(tmp_path, recorded):
    from factories import make_store

    from sensorium_pipeline.__main__ import main

    stores = [str(make_store(tmp_path / m, mouse=m, n_neurons=n)) for m, n in zip(FIXTURE_MICE, (7, 10))]
    out = tmp_path / "model.pt"
    argv = ["import-weights", str(CHECKPOINT_DIR.parent), "--fold", "0", "--out", str(out), "--mice", *FIXTURE_MICE]
    assert main([*argv, *(a for s in stores for a in ("--store", s))]) == 0
    trained = load_trained(out)
    assert trained.mice[1].n_neurons == 10 and trained.extra["fold"] == 0
    video, behavior, pupil = time_first(
        recorded["window_video"], recorded["window_behavior"], recorded["window_pupil_center"]
    )
    with torch.no_grad():
        ours = trained.model(video, behavior, pupil, "mouse-b").numpy()
    np.testing.assert_allclose(ours, recorded["window_output_1"].transpose(0, 2, 1), rtol=1e-5, atol=1e-5)
    # the stores must hold the checkpoint's neurons: mouse-b with 9 is refused, naming it
    make_store(tmp_path / "short", mouse="mouse-b", n_neurons=9)
    assert main([*argv, "--store", stores[0], "--store", str(tmp_path / "short")]) == 2


def recorded_trial(recorded, n_neurons: int) -> MouseData:
    """The fixture's raw trial as a held mouse (raw inputs, as an ``inputs: raw`` model reads them)."""
    video, behavior, pupil = time_first(
        recorded["trial_video"], recorded["trial_behavior"], recorded["trial_pupil_center"]
    )
    frames = video.shape[0]
    return MouseData(
        mouse="mouse-a",
        path=Path("fixture"),
        trial_ids=np.array([1]),
        tiers=np.array(["oracle"]),
        stimulus_groups=np.array([0]),
        n_frames=np.array([frames]),
        videos=video.numpy()[None].astype(np.float16),
        behavior=behavior.numpy()[None],
        pupil_center=pupil.numpy()[None],
        responses=None,
        unit_ids=np.arange(n_neurons),
        coordinates=np.zeros((n_neurons, 3)),
    )


def test_our_predictor_averages_every_window_offset_as_the_reference(imported, recorded):
    model = imported.model
    window = imported.extra["training"]["window_frames"]
    stride = default_stride(window, model.context_frames, model.lookahead_frames)
    assert stride == 1
    for k, mouse in enumerate(FIXTURE_MICE):
        data = dataclasses.replace(recorded_trial(recorded, model.n_neurons(mouse)), mouse=mouse)
        ours = predict_windows(
            model, data, [0], window_frames=window, stride=stride, batch_size=8, device=torch.device("cpu")
        )[0]
        np.testing.assert_allclose(ours, recorded[f"trial_prediction_{k}"].T, rtol=1e-5, atol=1e-5)
    # the old default (windows every half window) is not the reference's average
    half = predict_windows(model, data, [0], window_frames=window, stride=8, batch_size=8, device=torch.device("cpu"))
    assert not np.allclose(half[0], recorded["trial_prediction_1"].T, rtol=1e-3)
