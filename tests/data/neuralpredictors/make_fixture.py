"""Record small reference models of the SENSORIUM 2023 starter kit, built with neuralpredictors.

Run in a separate environment that has the starter kit's ``sensorium`` package and
neuralpredictors importable (see README.md beside this file for the exact setup):

    python make_fixture.py OUT_DIR

It writes ``factorized3d.pt`` and ``gru.pt`` (small models with random weights, their inputs,
outputs, intermediate tensors and regulariser values) and ``full_size.json`` (parameter
counts, output shape and core FLOPs of the full-size baselines for the ten real mice).
Nothing here re-implements the reference: every number comes from calling its code.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch


def _import_nn_helpers() -> None:
    """Import nnfabrik's ``nn_helpers`` without ``nnfabrik.utility/__init__`` (which needs
    datajoint and a Python < 3.10 ``collections``); the starter kit only uses its seed setter."""
    import nnfabrik

    path = Path(nnfabrik.__file__).parent / "utility" / "nn_helpers.py"
    utility = types.ModuleType("nnfabrik.utility")
    utility.__path__ = [str(path.parent)]
    sys.modules["nnfabrik.utility"] = utility
    spec = importlib.util.spec_from_file_location("nnfabrik.utility.nn_helpers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nnfabrik.utility.nn_helpers"] = module
    spec.loader.exec_module(module)
    utility.nn_helpers = module


_import_nn_helpers()

from sensorium.models.make_model import make_video_model  # noqa: E402

Batch = namedtuple("Batch", ["videos", "responses", "behavior", "pupil_center"])


class Neurons:
    def __init__(self, coordinates: np.ndarray) -> None:
        self.cell_motor_coordinates = coordinates


class FakeVideoSet(torch.utils.data.Dataset):
    """Random trials with the starter kit loader's item layout and ``neurons`` attribute."""

    def __init__(self, n_neurons: int, frames: int, height: int, width: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        self.neurons = Neurons(rng.uniform(0, 600, (n_neurons, 3)).round().astype(np.int64))
        self.n = 4
        self.videos = torch.randn(self.n, 3, frames, height, width, generator=gen)
        self.responses = torch.rand(self.n, n_neurons, frames, generator=gen) * 2
        self.behavior = torch.randn(self.n, 2, frames, generator=gen)
        self.pupil = torch.randn(self.n, 2, frames, generator=gen)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Batch:
        return Batch(self.videos[i], self.responses[i], self.behavior[i], self.pupil[i])


def loaders(neurons: dict[str, int], frames: int, height: int, width: int) -> dict[str, dict]:
    out = {}
    for i, (key, n) in enumerate(neurons.items()):
        data = FakeVideoSet(n, frames, height, width, seed=100 + i)
        out[key] = torch.utils.data.DataLoader(data, batch_size=2, shuffle=False, collate_fn=_collate)
    return {"train": out}


def _collate(items: list[Batch]) -> Batch:
    return Batch(*(torch.stack(x) for x in zip(*items)))


READOUT = dict(
    bias=True,
    init_mu_range=0.2,
    init_sigma=1.0,
    gamma_readout=0.0,
    gauss_type="full",
    grid_mean_predictor={
        "type": "cortex",
        "input_dimensions": 2,
        "hidden_layers": 1,
        "hidden_features": 30,
        "final_tanh": True,
    },
    share_features=False,
    share_grid=False,
    shared_match_ids=None,
    gamma_grid_dispersion=0.0,
)
SHIFTER = dict(gamma_shifter=0, shift_layers=3, input_channels_shifter=2, hidden_channels_shifter=5)


def factorized_core(channels, spatial, temporal, momentum=0.7):
    return dict(
        input_channels=3,
        hidden_channels=list(channels),
        spatial_input_kernel=(spatial[0], spatial[0]),
        temporal_input_kernel=temporal[0],
        spatial_hidden_kernel=(spatial[1], spatial[1]),
        temporal_hidden_kernel=temporal[1],
        stride=1,
        layers=len(channels),
        gamma_input_spatial=10,
        gamma_input_temporal=0.01,
        bias=True,
        hidden_nonlinearities="elu",
        x_shift=0,
        y_shift=0,
        batch_norm=True,
        laplace_padding=None,
        input_regularizer="LaplaceL2norm",
        padding=False,
        final_nonlin=True,
        momentum=momentum,
    )


def stacked2d_core(channels, layers, input_kern, hidden_kern):
    return dict(
        input_channels=3,
        hidden_channels=channels,
        input_kern=input_kern,
        hidden_kern=hidden_kern,
        layers=layers,
        gamma_input=500,
        skip=0,
        pad_input=False,
        final_nonlinearity=False,
        bias=True,
        momentum=0.9,
        batch_norm=True,
        hidden_dilation=1,
        laplace_padding=None,
        input_regularizer="LaplaceL2norm",
        stack=-1,
        depth_separable=False,
        linear=False,
        attention_conv=False,
        hidden_padding=None,
        use_avg_reg=False,
        final_batchnorm_scale=True,
        gamma_hidden=500_000,
    )


def build(kind: str, data: dict, small: bool, readout: dict) -> torch.nn.Module:
    if kind == "factorized3d":
        core = factorized_core((4, 6, 8), (5, 3), (5, 3)) if small else factorized_core((32, 64, 128), (11, 5), (11, 5))
        return make_video_model(
            data, 42, core_dict=core, core_type="3D_factorised", readout_dict=dict(readout),
            readout_type="gaussian", use_gru=False, gru_dict=None, use_shifter=True,
            shifter_dict=dict(SHIFTER), shifter_type="MLP", deeplake_ds=False,
        )
    channels, gru_kern = (5, 3) if small else (64, 7)
    core = stacked2d_core(channels, 4 if not small else 3, 5 if small else 9, 3 if small else 7)
    gru = dict(input_channels=channels, rec_channels=channels, input_kern=gru_kern, rec_kern=gru_kern, gamma_rec=0)
    return make_video_model(
        data, 42, core_dict=core, core_type="2D", readout_dict=dict(readout), readout_type="gaussian",
        use_gru=True, gru_dict=gru, use_shifter=True, shifter_dict=dict(SHIFTER), shifter_type="MLP",
        deeplake_ds=False,
    )


def randomise(model: torch.nn.Module, data: dict, seed: int) -> None:
    """Move every parameter off its initial value, and the batch-norm statistics off theirs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            spread = float(p.std()) if p.numel() > 1 else 0.0
            p.add_(0.3 * max(spread, 0.1) * torch.randn(p.shape, generator=gen))
        model.train()
        for key, loader in data["train"].items():
            for batch in loader:
                model(batch.videos * 1.5 + 0.2, data_key=key, pupil_center=batch.pupil_center)
    model.eval()


def record(kind: str, path: Path) -> None:
    torch.manual_seed(0)
    neurons = {"mouse_a": 7, "mouse_b": 5}
    frames, height, width = (12, 14, 18)
    data = loaders(neurons, frames, height, width)
    readout = dict(READOUT, gamma_readout=0.5)
    readout["grid_mean_predictor"] = dict(READOUT["grid_mean_predictor"], hidden_features=6)
    model = build(kind, data, small=True, readout=readout)
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    randomise(model, data, seed=1)
    gen = torch.Generator().manual_seed(7)
    video = torch.randn(2, 3, frames, height, width, generator=gen)
    pupil = torch.randn(2, 2, frames, generator=gen)
    out: dict = {
        "kind": kind,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        # the readouts' and shifters' initial values (their initialisation rules are tested)
        "init_state_dict": {k: v for k, v in init_state.items() if not k.startswith(("core.", "gru_module."))},
        "input": video,
        "pupil_center": pupil,
        "mice": {},
    }
    with torch.no_grad():
        features = model.core(video) if kind == "factorized3d" else None
        if kind == "gru":
            b, c, t, h, w = video.shape
            frames2d = model.core(video.transpose(1, 2).reshape(b * t, c, h, w))
            out["core_2d_output"] = frames2d.clone()
            features = model.gru_module(frames2d.reshape(b, t, *frames2d.shape[1:]).transpose(1, 2))
        out["core_output"] = features.clone()
        time_points = features.shape[2]
        for key in neurons:
            ds = data["train"][key].dataset
            shift = model.shifter[key](pupil[:, :, -time_points:].transpose(1, 2).reshape(-1, 2))
            out["mice"][key] = {
                "coordinates": torch.as_tensor(ds.neurons.cell_motor_coordinates),
                "mean_activity": next(iter(data["train"][key]))[1].mean(0).mean(-1),
                "shift": shift.clone(),
                "output": model(video, data_key=key, pupil_center=pupil).clone(),
                "readout_regularizer": model.readout.regularizer(key).detach().clone(),
            }
    reg = model.core.regularizer()
    if isinstance(reg, tuple):
        out["core_regularizer"] = torch.stack([r.detach() for r in reg])
    else:
        out["core_regularizer"] = reg.detach().reshape(1)
        out["core_laplace"] = model.core.laplace().detach()
        out["core_group_sparsity"] = model.core.group_sparsity().detach()
    torch.save(out, path)
    print(f"{path}: {path.stat().st_size} bytes")


REAL_NEURONS = [7440, 7928, 8285, 7671, 7495, 7863, 7908, 8202, 7939, 8122]


def full_size() -> dict:
    """Counts, output shapes and core FLOPs of the full-size baselines (ten mice, 36 x 64)."""
    from torch.utils.flop_counter import FlopCounterMode

    result = {"neurons": REAL_NEURONS}
    neurons = {f"m{i}": n for i, n in enumerate(REAL_NEURONS)}
    for kind in ("factorized3d", "gru"):
        data = {"train": {}}
        for i, (key, n) in enumerate(neurons.items()):
            ds = FakeVideoSet.__new__(FakeVideoSet)
            ds.neurons = Neurons(np.random.default_rng(i).uniform(0, 600, (n, 3)))
            ds.n = 1
            ds.videos = torch.zeros(1, 3, 80, 36, 64)
            ds.responses = torch.rand(1, n, 80)
            ds.behavior = torch.zeros(1, 2, 80)
            ds.pupil = torch.zeros(1, 2, 80)
            data["train"][key] = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=_collate)
        model = build(kind, data, small=False, readout=READOUT).eval()
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        x = torch.zeros(1, 3, 80, 36, 64)
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            if kind == "factorized3d":
                y = model.core(x)
            else:
                maps = model.core(x.transpose(1, 2).reshape(80, 3, 36, 64))
                y = model.gru_module(maps.reshape(1, 80, *maps.shape[1:]).transpose(1, 2))
        entry = {
            "core_parameters": count(model.core),
            "readout_parameters": count(model.readout),
            "shifter_parameters": count(model.shifter),
            "core_output_shape_80_frames": list(y.shape[1:]),
            "core_flops_80_frames": flops.get_total_flops(),
        }
        if kind == "gru":
            entry["gru_parameters"] = count(model.gru_module)
        result[kind] = entry
        print(kind, entry)
    return result


def main() -> None:
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    record("factorized3d", out_dir / "factorized3d.pt")
    record("gru", out_dir / "gru.pt")
    (out_dir / "full_size.json").write_text(json.dumps(full_size(), indent=1) + "\n")


if __name__ == "__main__":
    main()
