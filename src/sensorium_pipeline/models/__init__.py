"""Models: composable blocks (cores, readouts, shifters), the model that stacks them, and the
file a trained model is saved in.

``build_model(config, mice)`` is the one way a model is made, from training and from a saved
file alike, so the training loop never branches on the architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_path
from ..errors import PathError
from .config import ModelConfig, MouseMeta
from .model import SensoriumModel

__all__ = ["ModelConfig", "MouseMeta", "SensoriumModel", "TrainedModel", "build_model", "load_trained", "save_trained"]

MODEL_FORMAT = "sensorium-pipeline/model/v1"


class ModelFileError(PathError):
    """A trained-model file is missing, truncated or of an unknown format."""


def build_model(config: ModelConfig, mice: Sequence[MouseMeta]) -> nn.Module:
    """The model of ``config`` for ``mice`` (one readout each, in this order)."""
    return SensoriumModel(config, mice)


@dataclass
class TrainedModel:
    """A model rebuilt from its file, in eval mode, plus what was saved beside the weights."""

    model: nn.Module
    model_config: ModelConfig
    mice: list[MouseMeta]
    extra: dict[str, Any]

    def meta(self, mouse: str) -> MouseMeta:
        for m in self.mice:
            if m.name == mouse:
                return m
        raise KeyError(mouse)


def save_trained(
    path: str | Path, model: nn.Module, config: ModelConfig, mice: Sequence[MouseMeta], extra: dict[str, Any]
) -> None:
    """Write weights + everything ``load_trained`` needs to rebuild the model, atomically.

    ``extra`` holds plain data only (numbers, strings, lists, dicts): the training config,
    the fold, the validation score.
    """
    payload = {
        "format": MODEL_FORMAT,
        "model_config": config.to_dict(),
        "mice": [m.to_dict() for m in mice],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild a model saved by :func:`save_trained` on ``device``, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no trained model here (run the train step)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(path, f"cannot read the model file: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(path, f"not a trained model of format {MODEL_FORMAT!r}")
    config = ModelConfig.from_dict(payload["model_config"])
    mice = [MouseMeta.from_dict(m) for m in payload["mice"]]
    model = build_model(config, mice)
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return TrainedModel(model=model, model_config=config, mice=mice, extra=dict(payload["extra"]))
