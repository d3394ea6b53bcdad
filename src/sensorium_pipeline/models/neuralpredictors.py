"""Weights of the starter kit's baselines (neuralpredictors' ``VideoFiringRateEncoder``) in our
models: :func:`convert_state_dict` renames and reshapes a reference ``state_dict`` into one that
``SensoriumModel.load_state_dict`` takes, and :func:`load_reference_weights` loads it.

Supported: the factorised 3D core (``Factorized3dCore``), the 2D core + GRU
(``Stacked2dCore`` without depth-separable layers, ``GRU_Module``), the full Gaussian readout
with a cortex position network (``FullGaussian2d``), the MLP shifter. Build our model from the
matching config first (``config/models/baseline_*.yaml`` at the same sizes); the reference's
data keys are mapped to our mice in the order given.

The reference's ``source_grid`` replaces our normalised coordinates, so positions are exactly
the reference's even if the coordinates it was built from are not at hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError

#: Reference buffers with nothing to carry over (the regularisers' fixed kernels).
_SKIPPED = re.compile(r"^core\._input_weights?_regularizer\.|^core\.temporal_regularizer\.")
_FACTORIZED = re.compile(r"^core\.features\.layer(\d+)\.(conv_spatial|conv_temporal|norm)(?:_\d+)?\.(.+)$")
_STACKED = re.compile(r"^core\.features\.layer(\d+)\.(conv|norm)\.(.+)$")
_GRU = re.compile(r"^gru_module\.gru\.(reset|update|out)_gate_(input|hidden)\.(weight|bias)$")
_READOUT = re.compile(r"^readout\.(.+?)\.(_features|sigma|bias|source_grid|mu_transform\.(\d+)\.(weight|bias))$")
_SHIFTER = re.compile(r"^shifter\.(.+?)\.mlp\.(\d+)\.(weight|bias)$")

_LAYER_PART = {"conv_spatial": "spatial", "conv_temporal": "temporal", "norm": "norm", "conv": "conv"}


def convert_state_dict(reference: Mapping[str, torch.Tensor], data_keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Our ``SensoriumModel`` state dict from a neuralpredictors one; ``data_keys[i]`` is the
    reference's key of our ``i``-th mouse. Raises ``ConfigError`` on a key it cannot place."""
    mice = {key: f"m{i}" for i, key in enumerate(data_keys)}
    out: dict[str, torch.Tensor] = {}
    gru: dict[tuple[str, str, str], torch.Tensor] = {}
    for name, value in reference.items():
        if _SKIPPED.match(name):
            continue
        if m := _FACTORIZED.match(name) or _STACKED.match(name):
            out[f"core.layers.{m.group(1)}.{_LAYER_PART[m.group(2)]}.{m.group(3)}"] = value
        elif m := _GRU.match(name):
            gru[m.groups()] = value
        elif m := _READOUT.match(name):
            mouse = _mouse(mice, m.group(1), name)
            part = m.group(2)
            if part == "_features":  # (1, C, 1, N) -> (C, N)
                out[f"readouts.{mouse}.features"] = value[0, :, 0]
            elif part == "sigma":  # (1, N, 2, 2) -> (N, 2, 2)
                out[f"readouts.{mouse}.sigma"] = value[0]
            elif part == "bias":
                out[f"readouts.{mouse}.bias"] = value
            elif part == "source_grid":
                out[f"readouts.{mouse}.coordinates"] = value
            else:
                out[f"readouts.{mouse}.positions.mlp.{m.group(3)}.{m.group(4)}"] = value
        elif m := _SHIFTER.match(name):
            out[f"shifters.{_mouse(mice, m.group(1), name)}.mlp.{m.group(2)}.{m.group(3)}"] = value
        else:
            raise ConfigError(f"neuralpredictors state dict: no place for {name!r} in our models")
    if gru:
        order = ("update", "reset", "out")
        for kind in ("weight", "bias"):
            out[f"core.gru.input.{kind}"] = torch.cat([gru[(g, "input", kind)] for g in order])
            out[f"core.gru.gates.{kind}"] = torch.cat([gru[(g, "hidden", kind)] for g in order[:2]])
            out[f"core.gru.candidate.{kind}"] = gru[("out", "hidden", kind)]
    return out


def _mouse(mice: Mapping[str, str], key: str, name: str) -> str:
    if key not in mice:
        raise ConfigError(f"neuralpredictors state dict: {name!r} belongs to data key {key!r}, not in {list(mice)}")
    return mice[key]


def load_reference_weights(model: nn.Module, reference: Mapping[str, torch.Tensor], data_keys: Sequence[str]) -> None:
    """Load a neuralpredictors baseline's ``state_dict`` into ``model`` (strict: every tensor of
    ``model`` must be given, with its shape)."""
    model.load_state_dict(convert_state_dict(reference, data_keys), strict=True)
