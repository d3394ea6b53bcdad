"""Knowledge distillation (the winners' second stage): first-stage models fill in the other mice.

Every training batch shows one mouse's video windows, so normally only that mouse's readout
learns from it. In the second stage a frozen first-stage model of the same fold (the teacher)
predicts, for the same windows, the responses of every other mouse; the student's readouts of
those mice are trained towards these predictions too. The loss is the convex mix
``(1 - weight) * loss(own responses) + weight * mean over other mice of loss(teacher's)``
(the write-up calls the distilled share 0.36 %, its public config 36 %: ``weight`` is a parameter).

The teacher of fold ``k`` never saw fold ``k``'s validation trials, so the student's
validation score stays honest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Batch
from .errors import ConfigError
from .models import load_trained


@dataclass(frozen=True)
class DistillConfig:
    """The workflow's ``training.distillation`` section (less ``enabled``)."""

    #: Share of the distilled part in the loss.
    weight: float = 0.36
    #: Other mice distilled per batch, drawn at random; ``None`` = all of them (the winners' way).
    mice_per_batch: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float) or not 0 <= self.weight < 1:
            raise ConfigError(f"training.distillation.weight: expected a number in [0, 1), got {self.weight!r}")
        if self.mice_per_batch is not None and (
            isinstance(self.mice_per_batch, bool) or not isinstance(self.mice_per_batch, int) or self.mice_per_batch < 1
        ):
            raise ConfigError(
                f"training.distillation.mice_per_batch: expected an integer >= 1 or null, got {self.mice_per_batch!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Teacher:
    """Frozen first-stage model(s) of one fold; several files are averaged (e.g. several seeds)."""

    def __init__(self, paths: Sequence[str | Path], device: torch.device) -> None:
        if not paths:
            raise ConfigError("distillation: no teacher model given")
        self.paths = [str(p) for p in paths]
        self.models = []
        for path in paths:
            trained = load_trained(path, device)
            for p in trained.model.parameters():
                p.requires_grad_(False)
            self.models.append(trained.model.eval())
        self.mice = sorted(set.intersection(*(set(m.mice) for m in self.models)))

    @torch.no_grad()
    def predict(self, batch: Batch, mouse: str) -> torch.Tensor:
        """Mean prediction of the teachers for ``mouse``'s neurons on ``batch``'s windows."""
        outs = [m(batch.video, batch.behavior, batch.pupil_center, mouse).float() for m in self.models]
        return torch.stack(outs).mean(0)


def other_mice(teacher: Teacher, student_mice: Sequence[str], mouse: str, config: DistillConfig,
               rng: np.random.Generator) -> list[str]:
    """The mice distilled on a batch of ``mouse``: those both models know, at most ``mice_per_batch``."""
    candidates = [m for m in student_mice if m != mouse and m in teacher.mice]
    if config.mice_per_batch is not None and len(candidates) > config.mice_per_batch:
        picked = rng.choice(len(candidates), size=config.mice_per_batch, replace=False)
        candidates = [candidates[i] for i in sorted(picked.tolist())]
    return candidates


def distillation_loss(
    student: torch.nn.Module,
    teacher: Teacher,
    batch: Batch,
    mice: Sequence[str],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    skip: int,
) -> torch.Tensor:
    """Mean over ``mice`` of the loss of the student's readout against the teacher's prediction."""
    losses = []
    for other in mice:
        target = teacher.predict(batch, other)
        output = student(batch.video, batch.behavior, batch.pupil_center, other).float()
        losses.append(loss_fn(output[:, skip:], target[:, skip:]))
    return torch.stack(losses).mean()
