"""Models: every shipped config builds and keeps the shared interface (the contract in
``sensorium_pipeline.models``); the blocks do what the architecture descriptions say.

Configs are shrunk to tiny widths (same types, depths and kernels, so the same temporal
reach) to keep the tests fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sensorium_pipeline.errors import ConfigError
from sensorium_pipeline.models import ModelConfig, MouseMeta, build_model, load_trained, save_trained
from sensorium_pipeline.models.blocks import (
    DepthwiseSpatialConv,
    DepthwiseTemporalConv,
    DropPath,
    NormedShortcut,
    channel_shuffle,
    cyclic_channels,
)
from sensorium_pipeline.models.config import (
    DwiseNeuroCoreConfig,
    DwiseNeuroReadoutConfig,
    Factorized3dCoreConfig,
    Gru2dCoreConfig,
)
from sensorium_pipeline.models.dwiseneuro import WHOLE_WINDOW, CortexBlock, DwiseNeuroCore, DwiseNeuroReadout
from sensorium_pipeline.models.readouts import FactorizedReadout, translate
from sensorium_pipeline.training.train import load_model_file

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILES = sorted((ROOT / "config/models").glob("*.yaml")) + sorted((ROOT / "tests/configs/models").glob("*.yaml"))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is fastest, and immune to a busy machine's thread contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mice(*sizes: int, mean: bool = False) -> list[MouseMeta]:
    rng = np.random.default_rng(0)
    return [
        MouseMeta(
            f"m{i}",
            np.arange(1, n + 1),
            rng.uniform(0, 500, (n, 3)),
            rng.uniform(0.2, 2.0, n) if mean else None,
        )
        for i, n in enumerate(sizes)
    ]


def tiny(config: ModelConfig) -> ModelConfig:
    """``config`` with tiny widths: same types, depths, kernels and temporal reach."""
    core = config.core
    if isinstance(core, Factorized3dCoreConfig):
        core = dataclasses.replace(core, channels=(3,) * len(core.channels))
    elif isinstance(core, Gru2dCoreConfig):
        core = dataclasses.replace(core, channels=(3,) * len(core.channels), gru_channels=3)
    elif isinstance(core, DwiseNeuroCoreConfig):
        core = dataclasses.replace(
            core, channels=(4,) * len(core.channels), expansion=2, se_reduction=4, cortex_channels=(8, 16)
        )
    return dataclasses.replace(config, core=core)


def inputs(batch: int, frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, frames, 36, 64, generator=gen),
        torch.randn(batch, frames, 2, generator=gen),
        torch.randn(batch, frames, 2, generator=gen),
    )


def model_configs() -> list:
    return [pytest.param(path, id=f"{path.parent.name}/{path.stem}") for path in MODEL_FILES]


@pytest.mark.parametrize("path", model_configs())
def test_every_model_config_parses_and_round_trips(path):
    model_config, _ = load_model_file(path)
    assert ModelConfig.from_dict(model_config.to_dict()) == model_config
    model = build_model(model_config, mice(3))
    assert model.frame_step == model_config.frame_step >= 1
    assert model.causal == (model.lookahead_frames == 0)


@pytest.mark.parametrize("path", model_configs())
def test_every_model_maps_a_window_to_each_mouse_s_neurons_with_a_gradient_for_every_parameter(path):
    torch.manual_seed(0)
    model_config, _ = load_model_file(path)
    model = build_model(tiny(model_config), mice(7, 5, mean=True)).train()
    frames = 12
    video, behavior, pupil = inputs(2, frames)
    loss = torch.zeros(())
    for mouse, n in (("m0", 7), ("m1", 5)):
        out = model(video, behavior, pupil, mouse)
        assert out.shape == (2, frames, n)
        assert torch.isfinite(out).all() and (out > 0).all()
        loss = loss + (out - torch.rand_like(out) * torch.log(out)).mean() + 0.1 * model.readout_l1(mouse)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient reaches {missing}"
    assert all(p.grad.abs().sum() > 0 for name, p in model.named_parameters() if name.startswith("core."))


@pytest.mark.parametrize("path", model_configs())
def test_outputs_depend_on_the_declared_frames_only(path):
    """Perturbing input frame j changes outputs j - lookahead .. j + context and no others
    (causal models: nothing before j); the GRU remembers indefinitely after j."""
    model_config, _ = load_model_file(path)
    # float64: an input's influence through many blocks can be smaller than float32 rounding
    model = build_model(tiny(model_config), mice(4)).double().eval()
    c, a = model.context_frames, model.lookahead_frames
    if c == a == WHOLE_WINDOW:  # DwiseNeuro: squeeze-and-excitation averages the whole window
        video, behavior, pupil = (x.double() for x in inputs(1, 12))
        later = video.clone()
        later[:, 5] += 3.0
        with torch.no_grad():
            changed = (model(video, behavior, pupil, "m0") != model(later, behavior, pupil, "m0")).any(dim=(0, 2))
        assert changed.all()
        return
    frames = a + c + 9
    j = a + 3
    video, behavior, pupil = (x.double() for x in inputs(1, frames))
    later = video.clone()
    later[:, j] += 3.0
    with torch.no_grad():
        changed = (model(video, behavior, pupil, "m0") != model(later, behavior, pupil, "m0")).any(dim=(0, 2))
    assert not changed[: j - a].any()
    assert changed[j]
    if model_config.core.type != "gru2d":
        assert not changed[j + c + 1 :].any()
    if model_config.core.type == "factorized3d":  # (through 9 DwiseNeuro blocks the edge is below rounding)
        assert changed[j + c], "the declared context is larger than the real one"
    if model.causal:
        assert not changed[:j].any()


@pytest.mark.parametrize("path", model_configs())
def test_save_and_load_give_identical_outputs(path, tmp_path):
    model_config, _ = load_model_file(path)
    model = build_model(tiny(model_config), mice(6, 3, mean=True))
    with torch.no_grad():  # move batch-norm statistics off their defaults
        model.train()(*inputs(2, 8), "m1")
    model.eval()
    save_trained(tmp_path / "model.pt", model, tiny(model_config), mice(6, 3, mean=True), {"fold": 0})
    loaded = load_trained(tmp_path / "model.pt")
    video, behavior, pupil = inputs(2, 10, seed=1)
    with torch.no_grad():
        for mouse in ("m0", "m1"):
            assert torch.equal(model(video, behavior, pupil, mouse), loaded.model(video, behavior, pupil, mouse))


def test_eval_mode_is_deterministic_and_turns_off_stochastic_depth():
    config = tiny(load_model_file(ROOT / "config/models/dwiseneuro.yaml")[0])
    config = dataclasses.replace(config, core=dataclasses.replace(config.core, drop_path=0.9, cortex_drop_path=0.9))
    model = build_model(config, mice(5)).eval()
    video, behavior, pupil = inputs(2, 16)
    with torch.no_grad():
        assert torch.equal(model(video, behavior, pupil, "m0"), model(video, behavior, pupil, "m0"))
    drop = DropPath(0.5)
    x = torch.ones(64, 3, 4)
    assert torch.equal(drop.eval()(x), x)
    kept = drop.train()(x)[:, 0, 0]
    assert set(kept.tolist()) == {0.0, 2.0}  # whole samples dropped, survivors scaled by 1 / (1 - p)


def test_mean_response_initialises_the_output():
    """With a zero core signal, the bias alone reproduces each neuron's mean response; the
    Gaussian readout's bias is the mean response itself (the starter kit's rule), so its
    first outputs are ELU(mean) + 1."""
    for name, expected in (("dwiseneuro", lambda m: m), ("baseline_gru", lambda m: m + 1.0)):
        config = tiny(load_model_file(ROOT / f"config/models/{name}.yaml")[0])
        if name == "dwiseneuro":  # the reference starts its readout biases at 0; ours can start at the mean
            config = dataclasses.replace(config, readout=dataclasses.replace(config.readout, bias_init="mean_response"))
        meta = mice(9, mean=True)
        model = build_model(config, meta).eval()
        readout = model.readouts["m0"]
        with torch.no_grad():
            for p in readout.parameters():
                if p is not readout.bias:
                    p.zero_()
            out = model(*inputs(1, 4), "m0")
        np.testing.assert_allclose(out[0, 0].numpy(), expected(meta[0].mean_response), rtol=1e-4)


# --- DwiseNeuro blocks --------------------------------------------------------------------------


def test_channel_shuffle_interleaves_the_groups():
    x = torch.arange(6.0).reshape(1, 6, 1)
    assert channel_shuffle(x, 2)[0, :, 0].tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 3)[0, :, 0].tolist() == [0, 2, 4, 1, 3, 5]
    assert torch.equal(channel_shuffle(x, 1), x)


def test_grouped_cortex_blocks_keep_time_and_groups_apart():
    block = CortexBlock(8, 16, groups=2, drop_path=0.0, momentum=0.1).eval()
    x = torch.randn(3, 8, 5)
    assert block(x).shape == (3, 16, 5)
    # the grouped convolution sees only its own half of the inputs
    assert block.conv.weight.shape == (16, 4, 1)
    # per frame: changing frame 2 changes only output frame 2
    y = x.clone()
    y[:, :, 2] += 1
    with torch.no_grad():
        changed = (block(x) != block(y)).any(dim=(0, 1))
    assert changed.tolist() == [False, False, True, False, False]


def test_shortcuts_repeat_channels_resize_and_batch_norm():
    x = torch.arange(3.0).reshape(1, 3, 1, 1, 1)
    assert cyclic_channels(x, 7)[0, :, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert cyclic_channels(x, 2)[0, :, 0, 0, 0].tolist() == [0, 1]
    maps = torch.randn(2, 4, 3, 8, 8)
    shortcut = NormedShortcut(8).eval()
    with torch.no_grad():
        shortcut.norm.weight.copy_(torch.arange(1.0, 9.0))
        shortcut.norm.running_mean.fill_(0.5)
        out = shortcut(maps, torch.zeros(2, 8, 3, 4, 4))
    assert out.shape == (2, 8, 3, 4, 4)
    expected = (maps[:, :, :, ::2, ::2].repeat(1, 2, 1, 1, 1) - 0.5) / (1 + 1e-5) ** 0.5
    torch.testing.assert_close(out, expected * torch.arange(1.0, 9.0)[None, :, None, None, None])
    assert sum(p.numel() for p in shortcut.parameters()) == 16  # the batch norm only


def test_depthwise_convolutions_equal_depthwise_conv3d():
    x = torch.randn(2, 5, 7, 9, 12)
    spatial = DepthwiseSpatialConv(5, 3, stride=2)
    temporal = DepthwiseTemporalConv(5, 5)
    expected_s = F.conv3d(x, spatial.weight[:, :, None], stride=(1, 2, 2), padding=(0, 1, 1), groups=5)
    expected_t = F.conv3d(x, temporal.weight[..., None], padding=(2, 0, 0), groups=5)
    torch.testing.assert_close(spatial(x), expected_s)
    torch.testing.assert_close(temporal(x), expected_t)


def test_dwiseneuro_core_strides_first_widens_last_and_pools_to_vectors():
    core = DwiseNeuroCore(5, DwiseNeuroCoreConfig(
        channels=(4, 8), depths=(2, 1), expansion=4, se_reduction=4, drop_path=0.3, cortex_channels=(8, 12)
    ))
    assert [b.spatial.stride for b in core.blocks] == [2, 1, 2]
    # a group's last block widens to the next group's width; the last block keeps its width
    assert [(b.expand.in_channels, b.project.out_channels) for b in core.blocks] == [(4, 4), (4, 8), (8, 8)]
    # squeeze-and-excitation width = wide width / se_reduction
    assert [b.excite.reduce.out_channels for b in core.blocks] == [4, 4, 8]
    assert [b.drop_path.p for b in core.blocks] == pytest.approx([0.0, 0.1, 0.2])  # rate x i / n
    out = core.eval()(torch.randn(2, 5, 6, 64, 64))
    assert out.shape == (2, 12, 6)
    assert core.context_frames == core.lookahead_frames == WHOLE_WINDOW


def test_dwiseneuro_readout_pads_an_odd_neuron_count_and_drops_whole_channels():
    readout = DwiseNeuroReadout(8, 7, DwiseNeuroReadoutConfig(groups=2, dropout=0.5))
    assert readout.conv.weight.shape == (8, 4, 1) and readout.bias.shape == (8,)
    assert readout.eval()(torch.randn(3, 8, 5)).shape == (3, 5, 7)
    dropped = readout.dropout.train()(torch.ones(64, 8, 5))
    per_channel = dropped.amax(dim=2) == dropped.amin(dim=2)
    assert per_channel.all() and set(dropped.unique().tolist()) == {0.0, 2.0}


def test_dwiseneuro_input_is_padded_video_plus_four_behaviour_channels():
    config = tiny(load_model_file(ROOT / "config/models/dwiseneuro.yaml")[0])
    model = build_model(config, mice(3))
    video, behavior, pupil = inputs(2, 4)
    x = model.inputs(video, behavior, pupil)
    assert x.shape == (2, 5, 4, 64, 64)
    torch.testing.assert_close(x[:, 0, :, 14:50], video)
    assert not x[:, 0, :, :14].any()
    torch.testing.assert_close(x[:, 3, :, 0, 0], pupil[:, :, 0])


# --- map readouts (baseline) ----------------------------------------------------------------------


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


# --- configuration ------------------------------------------------------------------------------


def test_the_retired_flat_format_is_refused_naming_its_key():
    """The flat first format (``core_channels``, ``shifter_hidden``, ...) is no longer read."""
    for key, value in (("core_channels", [6, 6]), ("shifter_hidden", 0)):
        with pytest.raises(ConfigError, match=key):
            ModelConfig.from_dict({key: value, "downsample": 2})


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ({"core": {"type": "attention"}}, "model.core.type"),
        ({"readout": "attention"}, "model.readout.type"),
        ({"core": {"type": "dwiseneuro"}, "readout": "gaussian", "shifter": None}, "model.readout.type"),
        ({"core": {"type": "factorized3d"}, "readout": "dwiseneuro"}, "model.readout.type"),
        ({"core": {"type": "dwiseneuro"}, "readout": "dwiseneuro"}, "model.shifter"),
        ({"core": {"type": "gru2d", "gru_kernel": 4}}, "model.core.gru_kernel"),
        (
            {"core": {"type": "dwiseneuro", "cortex_channels": [9]}, "readout": "dwiseneuro", "shifter": None},
            "model.core.cortex_channels",
        ),
        ({"core": {"type": "factorized3d", "channels": [4, 4], "spatial_kernels": [3]}}, "model.core"),
        ({"frame_step": 0}, "model.frame_step"),
        ({"pad_to": [64]}, "model.pad_to"),
        ({"output": "relu"}, "model.output"),
        ({"core": {"type": "factorized3d", "width": 3}}, "model.core.width"),
    ],
)
def test_bad_model_configs_name_the_key(model, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ModelConfig.from_dict(model)
