"""Make the DwiseNeuro reference fixture (run once, outside the project; see README.md).

Runs only the reference code (lRomul/sensorium at commit 6849050, on ``sys.path`` via
``REFERENCE``) and numpy/torch: it builds small reference models with random weights and
batch-norm statistics, saves them as the reference's trainer saves its checkpoints, and
records what the reference's model, predictor and loss give for recorded inputs.

    REFERENCE=/path/to/sensorium python make_fixture.py OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.environ["REFERENCE"])

from src import constants  # noqa: E402
from src.argus_models import MouseModel  # noqa: E402
from src.losses import MicePoissonLoss  # noqa: E402
from src.predictors import Predictor  # noqa: E402
from src.utils import init_weights  # noqa: E402

WINDOW = 16
STEP = 2


def params(readout_outputs: list[int]) -> dict:
    """The reference's model parameters (its config layout), shrunk: 4 blocks of 8/16 channels."""
    return {
        "nn_module": (
            "dwiseneuro",
            {
                "readout_outputs": tuple(readout_outputs),
                "in_channels": 5,
                "core_features": (8, 8, 16, 16),
                "spatial_strides": (2, 1, 2, 1),
                "spatial_kernel": 3,
                "temporal_kernel": 5,
                "expansion_ratio": 4,
                "se_reduce_ratio": 8,
                "cortex_features": (32, 64),
                "groups": 2,
                "softplus_beta": 0.07,
                "drop_rate": 0.4,
                "drop_path_rate": 0.1,
            },
        ),
        "loss": ("mice_poisson", {"log_input": False, "full": False, "eps": 1e-8}),
        "optimizer": ("AdamW", {"lr": 2.4e-3, "weight_decay": 0.05}),
        "device": "cpu",
        "frame_stack": {"size": WINDOW, "step": STEP, "position": "last"},
        "inputs_processor": ("stack_inputs", {"size": (64, 64), "pad_fill_value": 0.0}),
        "responses_processor": ("identity", {}),
        "amp": False,
        "iter_size": 1,
    }


def raw_inputs(rng: np.random.Generator, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A raw window or trial in the reference's file layout: video (36, 64, T) grey levels,
    behaviour (2, T) (pupil dilation, running speed), pupil centre (2, T) in camera pixels."""
    video = rng.integers(0, 256, (36, 64, frames)).astype(np.uint8)
    behavior = np.stack([rng.uniform(5, 40, frames), rng.uniform(-2, 20, frames)]).astype(np.float32)
    pupil = np.stack([rng.uniform(150, 350, frames), rng.uniform(100, 250, frames)]).astype(np.float32)
    return video, behavior, pupil


def random_model(readout_outputs: list[int], seed: int) -> MouseModel:
    """The reference model with its own initialisation, then random batch-norm affine
    parameters, readout biases and running statistics (train-mode forwards)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MouseModel(params(readout_outputs))
    init_weights(model.nn_module)
    net = model.nn_module
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
            if isinstance(m, torch.nn.Conv1d) and m.bias is not None:
                m.bias.normal_(0.0, 0.5)
        net.train()
        processor = model_processor(model)
        for _ in range(3):
            batch = torch.stack([processor(*raw_inputs(rng, WINDOW)) for _ in range(4)])
            net(batch)
    net.eval()
    return model


def model_processor(model: MouseModel):
    from src.inputs import get_inputs_processor

    return get_inputs_processor(*model.params["inputs_processor"])


def save_checkpoint(model: MouseModel, path: Path) -> None:
    """As the reference's EMA checkpoint callback writes a fold's best model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model_name": "MouseModel", "params": model.params, "nn_state_dict": model.nn_module.state_dict()},
        path,
    )


def main(out: Path) -> None:
    rng = np.random.default_rng(2023)
    neurons = [7, 10]
    model = random_model(neurons, seed=1)
    checkpoint = out / "experiments" / "fixture_001" / "fold_0" / "model-017-0.123456.pth"
    save_checkpoint(model, checkpoint)
    processor = model_processor(model)

    # a batch of recorded windows, the outputs of every readout, and the loss of a batch
    windows = [raw_inputs(rng, WINDOW) for _ in range(3)]
    batch = torch.stack([processor(*w) for w in windows])
    with torch.no_grad():
        outputs = model.nn_module(batch)
    targets = [torch.relu(torch.from_numpy(rng.normal(5.0, 6.0, o.shape).astype(np.float32))) for o in outputs]
    # sample 0 and 2 belong to mouse 0, sample 1 to mouse 1; two entries carry distillation weights
    weights = torch.tensor([[1.0, 0.3], [0.0, 1.0], [1.0, 0.25]], dtype=torch.float32)
    loss = MicePoissonLoss(log_input=False, full=False, eps=1e-8)(outputs, (targets, weights.clone()))

    # a recorded trial and the reference predictor's average over every window offset
    constants.num_neurons = neurons  # the predictor sizes its sums by the constants
    predictor = Predictor(checkpoint, device="cpu", blend_weights="ones")
    trial = raw_inputs(rng, 45)
    predicted = {f"trial_prediction_{k}": predictor.predict_trial(*trial, mouse_index=k) for k in range(len(neurons))}

    np.savez_compressed(
        out / "reference.npz",
        window_video=np.stack([w[0] for w in windows]),
        window_behavior=np.stack([w[1] for w in windows]),
        window_pupil_center=np.stack([w[2] for w in windows]),
        **{f"window_output_{k}": o.numpy() for k, o in enumerate(outputs)},
        **{f"loss_target_{k}": t.numpy() for k, t in enumerate(targets)},
        loss_weights=weights.numpy(),
        loss=np.float32(loss.item()),
        trial_video=trial[0],
        trial_behavior=trial[1],
        trial_pupil_center=trial[2],
        **predicted,
    )

    # checkpoints shaped for the tests' tiny DAG: two simulated mice of 24 neurons, two folds
    for fold in range(2):
        tiny = random_model([24, 24], seed=10 + fold)
        save_checkpoint(tiny, out / "experiments" / "tiny_001" / f"fold_{fold}" / f"model-020-0.{fold + 1}00000.pth")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
