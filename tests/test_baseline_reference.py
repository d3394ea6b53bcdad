"""Our official baselines against the starter kit's, built with neuralpredictors.

The fixtures (``tests/data/neuralpredictors``, see its README) hold small reference models with
random weights, their inputs, outputs and regulariser values. Imported into our models, the
weights must reproduce the outputs within 1e-5 and the penalties exactly (float32 rounding).
At full size, parameter counts, core output shape and core FLOPs must equal the reference's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sensorium_pipeline.errors import ConfigError
from sensorium_pipeline.models import ModelConfig, MouseMeta, build_model
from sensorium_pipeline.models.config import (
    Factorized3dCoreConfig,
    GaussianReadoutConfig,
    Gru2dCoreConfig,
    ShifterConfig,
)
from sensorium_pipeline.models.model import build_core
from sensorium_pipeline.models.neuralpredictors import convert_state_dict, load_reference_weights
from sensorium_pipeline.models.readouts import centre_and_scale
from sensorium_pipeline.training.train import load_model_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests/data/neuralpredictors"
KEYS = ("mouse_a", "mouse_b")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fixture(kind: str) -> dict:
    return torch.load(FIXTURES / f"{kind}.pt", weights_only=True)


READOUT = GaussianReadoutConfig(position_hidden=6, position_layers=1, position_dims=2, init_sigma=1.0, l1=0.5)
SMALL = {
    # the fixture's sizes (make_fixture.py): everything else is the baseline YAMLs' setting
    "factorized3d": ModelConfig(
        core=Factorized3dCoreConfig(
            channels=(4, 6, 8),
            spatial_kernels=(5, 3, 3),
            temporal_kernels=(5, 3, 3),
            padding=False,
            batch_norm_momentum=0.7,
            spatial_laplace=10.0,
            temporal_laplace=0.01,
        ),
        readout=READOUT,
        shifter=ShifterConfig(hidden=5, layers=3),
    ),
    "gru": ModelConfig(
        core=Gru2dCoreConfig(
            channels=(5, 5, 5),
            input_kernel=5,
            hidden_kernel=3,
            gru_channels=5,
            gru_input_kernel=3,
            gru_kernel=3,
            batch_norm_momentum=0.9,
            input_laplace=500.0,
            hidden_group_sparsity=500_000.0,
        ),
        readout=READOUT,
        shifter=ShifterConfig(hidden=5, layers=3),
    ),
}


def metas(data: dict) -> list[MouseMeta]:
    return [
        MouseMeta(
            key,
            np.arange(1, len(data["mice"][key]["coordinates"]) + 1),
            data["mice"][key]["coordinates"].numpy(),
            data["mice"][key]["mean_activity"].numpy(),
        )
        for key in KEYS
    ]


def ours(kind: str) -> tuple[torch.nn.Module, dict]:
    data = fixture(kind)
    model = build_model(SMALL[kind], metas(data))
    load_reference_weights(model, data["state_dict"], KEYS)
    return model.eval(), data


def model_inputs(data: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixture's ``(B, 3, T, H, W)`` input as our ``video``, ``behavior``, ``pupil_center``."""
    x = data["input"]
    return x[:, 0], x[:, 1:3, :, 0, 0].transpose(1, 2), data["pupil_center"].transpose(1, 2)


@pytest.mark.parametrize("kind", ["factorized3d", "gru"])
def test_imported_weights_reproduce_the_reference_outputs(kind):
    model, data = ours(kind)
    video, behavior, pupil = model_inputs(data)
    c = model.context_frames if kind == "factorized3d" else 0  # the GRU core does not shrink time
    with torch.no_grad():
        features = model.core(data["input"])
        torch.testing.assert_close(features[:, :, c:], data["core_output"], rtol=1e-5, atol=1e-5)
        for i, key in enumerate(KEYS):
            ref = data["mice"][key]
            shift = model.shifters[f"m{i}"](pupil[:, c:])
            torch.testing.assert_close(shift.reshape(-1, 2), ref["shift"], rtol=1e-5, atol=1e-6)
            out = model(video, behavior, pupil, key)
            assert out.shape == (2, data["input"].shape[2], len(ref["mean_activity"]))
            torch.testing.assert_close(out[:, c:], ref["output"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["factorized3d", "gru"])
def test_regularizers_equal_the_reference(kind):
    model, data = ours(kind)
    core = data["core_regularizer"].sum()
    torch.testing.assert_close(model.core.regularizer(), core, rtol=1e-6, atol=0)
    for key in KEYS:
        readout = data["mice"][key]["readout_regularizer"]
        torch.testing.assert_close(model.regularizer(key), core + readout, rtol=1e-6, atol=0)
    if kind == "gru":  # the two terms separately: strengths 500 and 500,000
        from sensorium_pipeline.models import regularizers

        first = model.core.layers[0].conv.weight
        hidden = [layer.conv.weight for layer in model.core.layers[1:]]
        torch.testing.assert_close(regularizers.spatial_laplace(first), data["core_laplace"], rtol=1e-6, atol=0)
        torch.testing.assert_close(regularizers.group_sparsity(hidden), data["core_group_sparsity"], rtol=1e-6, atol=0)


def test_regularizer_gradients_flow_and_zero_strengths_cost_nothing():
    model, _ = ours("factorized3d")
    model.regularizer("mouse_a").backward()
    assert model.core.layers[0].spatial.weight.grad.abs().sum() > 0
    assert model.core.layers[0].temporal.weight.grad.abs().sum() > 0
    assert model.readouts["m0"].features.grad.abs().sum() > 0
    plain = build_model(ModelConfig(readout=GaussianReadoutConfig()), metas(fixture("factorized3d")))
    assert plain.regularizer("mouse_a").item() == 0.0


@pytest.mark.parametrize("kind", ["factorized3d", "gru"])
def test_readout_and_shifter_start_as_the_reference_does(kind):
    """Initial values: channel weights 1/C, bias = mean response, coordinates centred and
    divided by one global maximum, sigma uniform in [-1, 1], PyTorch's default Linear init."""
    data = fixture(kind)
    init = data["init_state_dict"]
    torch.manual_seed(3)
    model = build_model(SMALL[kind], metas(data))
    state = model.state_dict()
    converted = convert_state_dict(init, KEYS)
    for name, value in converted.items():
        assert state[name].shape == value.shape, name
        if name.split(".", 2)[0] == "readouts" and name.split(".", 2)[2] in ("features", "bias", "coordinates"):
            torch.testing.assert_close(state[name], value, rtol=1e-6, atol=1e-7)
        elif name.endswith(".sigma"):
            assert state[name].abs().max() <= 1.0 and value.abs().max() <= 1.0
            assert state[name].std() > 0.3  # spread over [-1, 1], not a constant
        else:  # PyTorch's default Linear init: |w| <= 1 / sqrt(fan_in), the same for bias
            fan_in = state[name.replace(".bias", ".weight")].shape[1]
            bound = 1.0 / np.sqrt(fan_in) + 1e-6
            assert state[name].abs().max() <= bound and value.abs().max() <= bound, name
    coords = data["mice"]["mouse_a"]["coordinates"].numpy()[:, :2]
    np.testing.assert_allclose(centre_and_scale(coords), init["readout.mouse_a.source_grid"].numpy(), rtol=1e-6)


def test_gaussian_readout_samples_per_frame_within_sigma_in_training():
    model, data = ours("factorized3d")
    readout = model.readouts["m0"]
    features = torch.randn(2, 8, 3, 6, 10)
    with torch.no_grad():
        readout.sigma.zero_()  # no noise: training reads the mean, like evaluation
        torch.testing.assert_close(readout.train()(features), readout.eval()(features))
        readout.sigma.copy_(torch.eye(2).expand_as(readout.sigma))
        a = readout.train()(features)
    assert not torch.allclose(a[:, 0], a[:, 1])  # each frame draws its own positions


def test_convert_state_dict_rejects_what_it_cannot_place():
    _, data = ours("factorized3d")
    with pytest.raises(ConfigError, match="mouse_b"):
        convert_state_dict(data["state_dict"], ["mouse_a"])
    with pytest.raises(ConfigError, match="modulator"):
        convert_state_dict({"modulator.mouse_a.weight": torch.zeros(1)}, KEYS)


# --- full size ------------------------------------------------------------------------------------


def full_size_mice(counts: list[int]) -> list[MouseMeta]:
    rng = np.random.default_rng(0)
    return [MouseMeta(f"m{i}", np.arange(1, n + 1), rng.uniform(0, 600, (n, 3))) for i, n in enumerate(counts)]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("kind", ["factorized3d", "gru"])
def test_full_size_baselines_have_the_reference_s_parameters_output_and_flops(kind):
    reference = json.loads((FIXTURES / "full_size.json").read_text())
    expected = reference[kind]
    name = "baseline_factorized3d" if kind == "factorized3d" else "baseline_gru"
    config, _ = load_model_file(ROOT / f"config/models/{name}.yaml")
    with torch.device("meta"):  # shapes and FLOPs only: no memory, no arithmetic
        model = build_model(config, full_size_mice(reference["neurons"]))
        x = torch.empty(1, 3, 80, 36, 64)
        with FlopCounterMode(display=False) as flops:
            y = model.core.layers(x) if kind == "factorized3d" else model.core(x)
    core = expected["core_parameters"] + expected.get("gru_parameters", 0)
    assert count(model.core) == core
    assert count(model.readouts) == expected["readout_parameters"]
    assert count(model.shifters) == expected["shifter_parameters"]
    assert list(y.shape[1:]) == expected["core_output_shape_80_frames"]
    assert flops.get_total_flops() == expected["core_flops_80_frames"]
    if kind == "factorized3d":  # the numbers
        assert (core, expected["readout_parameters"], expected["shifter_parameters"]) == (382_176, 10_488_969, 570)
        assert round(flops.get_total_flops() / 1e9, 1) == 46.5
        assert model.core.output_size(36, 64) == (18, 46) and model.context_frames == 18
