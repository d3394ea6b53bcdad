"""Models: every shipped config builds and keeps the shared interface; readout mechanics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sensorium_pipeline.errors import ConfigError
from sensorium_pipeline.models import ModelConfig, MouseMeta, build_model
from sensorium_pipeline.models.readouts import FactorizedReadout, translate
from sensorium_pipeline.train import load_model_file

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILES = sorted((ROOT / "config/models").glob("*.yaml")) + sorted((ROOT / "tests/configs/models").glob("*.yaml"))


def mice(*sizes: int) -> list[MouseMeta]:
    rng = np.random.default_rng(0)
    return [MouseMeta(f"m{i}", np.arange(1, n + 1), rng.uniform(0, 500, (n, 3))) for i, n in enumerate(sizes)]


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_every_model_config_maps_a_window_to_each_mouse_s_neurons(path):
    model_config, _ = load_model_file(path)
    model = build_model(model_config, mice(7, 5)).eval()
    frames = 2 * model.context_frames + 3
    video, behavior, pupil = torch.randn(2, frames, 36, 64), torch.randn(2, frames, 2), torch.randn(2, frames, 2)
    with torch.no_grad():
        for mouse, n in (("m0", 7), ("m1", 5)):
            out = model(video, behavior, pupil, mouse)
            assert out.shape == (2, frames, n)
            assert torch.isfinite(out).all() and (out > 0).all()
        # causal: changing the last frame changes no earlier output
        later = video.clone()
        later[:, -1] += 5
        assert torch.equal(model(video, behavior, pupil, "m0")[:, :-1], model(later, behavior, pupil, "m0")[:, :-1])


def test_translate_moves_feature_maps_by_whole_pixels():
    features = torch.randn(1, 3, 2, 6, 9)
    one_pixel_right = torch.tensor([[[2.0 / 8, 0.0], [0.0, 2.0 / 5]]])  # frame 0: +1 px in x; frame 1: +1 px in y
    moved = translate(features, one_pixel_right)
    torch.testing.assert_close(moved[:, :, 0, :, :-1], features[:, :, 0, :, 1:])
    torch.testing.assert_close(moved[:, :, 1, :-1, :], features[:, :, 1, 1:, :])


def test_factorized_readout_reads_each_neuron_s_mask():
    readout = FactorizedReadout(in_channels=2, n_neurons=2, height=3, width=4)
    with torch.no_grad():
        readout.mask.zero_()
        readout.mask[0, 1, 2] = 1.0
        readout.mask[1, 0, 0] = 0.5
        readout.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        readout.bias.zero_()
    features = torch.randn(1, 2, 4, 3, 4)
    out = readout(features)
    torch.testing.assert_close(out[0, :, 0], features[0, 0, :, 1, 2])
    torch.testing.assert_close(out[0, :, 1], features[0, 1, :, 0, 0])


def test_unknown_readout_is_a_config_error():
    with pytest.raises(ConfigError, match="model.readout"):
        ModelConfig(readout="attention")
