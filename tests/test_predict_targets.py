"""Prediction writes the official normalised units whatever the model learnt: a model trained
on raw responses (``training.targets: raw``, the 1st-place recipe) has its outputs multiplied
by the official per-frame precision; the default stride averages every window offset when no
output of a window sees its whole reach."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from factories import make_store

from sensorium_pipeline.data.normalize import response_precision
from sensorium_pipeline.data.store import open_mouse
from sensorium_pipeline.models import MouseMeta, build_model, save_trained
from sensorium_pipeline.scoring.predict import default_stride, predict_mouse
from sensorium_pipeline.training.train import load_model_file

ROOT = Path(__file__).resolve().parents[1]


def test_raw_target_models_are_scaled_by_the_per_frame_precision(tmp_path):
    torch.manual_seed(0)
    store = make_store(tmp_path / "mouse-a", mouse="mouse-a", n_neurons=5, t_pad=40, valid_frames=36)
    mouse = open_mouse(store)
    config, _ = load_model_file(ROOT / "tests/configs/models/tiny.yaml")
    meta = [MouseMeta("mouse-a", mouse.unit_ids, mouse.coordinates)]
    model = build_model(config, meta).eval()
    for targets in ("normalized", "raw"):
        extra = {"fold": 0, "training": {"window_frames": 16, "targets": targets}}
        save_trained(tmp_path / f"{targets}.pt", model, config, meta, extra)
    tiers = ["oracle"]
    normalized = predict_mouse(tmp_path / "normalized.pt", store, tiers, stride=4, device="cpu").values
    raw = predict_mouse(tmp_path / "raw.pt", store, tiers, stride=4, device="cpu").values
    precision = response_precision(mouse.statistic("responses", "std"))[:36]
    assert not np.allclose(precision, 1.0)
    np.testing.assert_allclose(raw[:, :36], normalized[:, :36] * precision[None], rtol=1e-6)
    assert np.isnan(raw[:, 36:]).all()


def test_the_default_stride_is_every_offset_when_no_output_sees_its_whole_reach():
    assert default_stride(16, 1 << 20, 1 << 20) == 1  # DwiseNeuro: every output sees the whole window
    assert default_stride(80, 10, 0) == 40  # a causal model with a short reach: half windows
    assert default_stride(16, 10, 6) == 1
