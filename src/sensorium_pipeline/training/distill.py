"""Knowledge distillation (the winners' second stage): first-stage models fill in the other mice.

A training window shows one mouse, so normally only that mouse's readout learns from it. In the
second stage a frozen first-stage model of the same fold (the teacher) predicts, for the same
windows (CutMix applied alike), the responses of every other mouse, and the student's readouts
of those mice are trained towards these predictions too. Student and teacher each run their core
once per step; every readout reads the same features (:meth:`SensoriumModel.encode` /
``decode``).

How the distilled part enters the loss follows the batching (:mod:`train`):

- ``mixed`` (the winners' way): every (window, other mouse) pair is a target of weight
  ``weight / pairs``, every window's own responses one of weight ``(1 - weight) / windows``;
  each target's Poisson loss is summed over neurons and frames (the reference's weighted sum).
- otherwise (one mouse per batch): ``(1 - weight) * loss(own) + weight * mean over the other
  mice of loss(teacher's)``.

``weight`` is the distilled share (the public config's ratio 0.36). The teacher of fold ``k``
never saw fold ``k``'s validation trials, so the student's validation score stays honest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..models import load_trained


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
        self.targets = set()
        for path in paths:
            trained = load_trained(path, device)
            for p in trained.model.parameters():
                p.requires_grad_(False)
            self.models.append(trained.model.eval())
            self.targets.add(str(dict(trained.extra.get("training") or {}).get("targets", "normalized")))
        if len(self.targets) > 1:
            raise ConfigError(f"distillation: the teachers {self.paths} were trained on different targets {self.targets}")
        self.mice = sorted(set.intersection(*(set(m.mice) for m in self.models)))

    @property
    def target_kind(self) -> str:
        """``training.targets`` of the teachers (their predictions are in those units)."""
        return next(iter(self.targets))

    @torch.no_grad()
    def predict(
        self,
        video: torch.Tensor,
        behavior: torch.Tensor,
        pupil_center: torch.Tensor,
        mice: Sequence[str],
        mix: Callable[[torch.Tensor], torch.Tensor] | None = None,
        shift_pupil: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mean prediction of the teachers for each of ``mice`` on the same windows: one core pass
        per teacher (``mix`` and ``shift_pupil`` as the student's, see :func:`train`)."""
        pupil = pupil_center if shift_pupil is None else shift_pupil
        sums: dict[str, torch.Tensor] = {}
        for model in self.models:
            features = model.encode(video, behavior, pupil_center, mix)
            for mouse in mice:
                out = model.decode(features, mouse, pupil).float()
                sums[mouse] = out if mouse not in sums else sums[mouse] + out
        return {m: v / len(self.models) for m, v in sums.items()}


def other_mice(teacher: Teacher, student_mice: Sequence[str], mouse: str | None, config: DistillConfig,
               rng: np.random.Generator) -> list[str]:
    """The mice distilled on a batch: those both models know (except ``mouse``, the batch's own
    when it has one), at most ``mice_per_batch`` drawn at random."""
    candidates = [m for m in student_mice if m != mouse and m in teacher.mice]
    if config.mice_per_batch is not None and len(candidates) > config.mice_per_batch:
        picked = rng.choice(len(candidates), size=config.mice_per_batch, replace=False)
        candidates = [candidates[i] for i in sorted(picked.tolist())]
    return candidates
