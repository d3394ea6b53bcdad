"""Optional speed-ups for GPUs, applied from outside the model so its code and its saved
state stay the same with or without them."""

from __future__ import annotations

import torch
from torch import nn


def channels_last(model: nn.Module) -> nn.Module:
    """Store 4D weights channels-last and 5D weights channels-last-3d, in place; convolutions
    then pick the channels-last kernels (cuDNN's fastest for depth-wise / 1x1 convolutions
    with mixed precision). Returns ``model``."""
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
        elif param.dim() == 5:
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
    return model


def compile_core(model: nn.Module, **options) -> nn.Module:
    """``torch.compile`` the model's input stack and core in place (``Module.compile``: the
    state-dict keys do not change). Readouts stay eager: they differ per mouse, and compiling
    them would recompile for each mouse. Returns ``model``."""
    for name in ("inputs", "core"):
        part = getattr(model, name, None)
        if isinstance(part, nn.Module):
            part.compile(**options)
    return model
