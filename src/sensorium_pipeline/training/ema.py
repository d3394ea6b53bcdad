"""Exponential moving average of a model's weights (the 1st-place recipe's EMA, decay 0.999).

The averaged copy is what is validated and saved when EMA is on. As the winners' EMA does, every
entry of the state dict follows ``decay * ema + (1 - decay) * model`` after each optimiser step,
from the first step on (no warm-up): parameters and buffers alike (batch-norm running
statistics are averaged; an integer buffer such as the batch counter gets the average truncated
to an integer). ``warmup=True`` keeps this package's earlier variant for short CPU runs: the
decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates and buffers are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """A frozen copy of ``model`` whose state follows the model's by an EMA."""

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = False) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ModelEma: decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._parameters = {name for name, _ in self.module.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        ema_state = self.module.state_dict()
        if not self.warmup:
            d = self.decay
            for name, value in model.state_dict().items():
                target = ema_state[name]
                target.copy_(d * target + (1.0 - d) * value.detach())
            return
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if name in self._parameters:
                target.mul_(d).add_(value.detach(), alpha=1.0 - d)
            else:
                target.copy_(value)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["module"])
