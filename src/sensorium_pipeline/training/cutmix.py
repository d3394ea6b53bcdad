"""CutMix as the 1st-place recipe does it (alpha 1, probability 0.5 per window).

Each training window is mixed, with the probability, with its own partner: a fresh random
window of the same mouse (drawn by the sampler, :class:`sampler.Windows` ``partners``). A box of
the stacked model input, the frame as the core sees it (padded, e.g. to 64 x 64, with the
behaviour and pupil channels), is replaced by the same box of the partner in every frame, so
behaviour is swapped inside the box too. The box side is ``sqrt(lam)`` of the frame's with
``lam ~ Beta(alpha, alpha)``, centred on a uniform random pixel and clipped at the edges; the
targets become ``(1 - a) * own + a * partner``, ``a`` the share of the frame the clipped box
covers. The box's randomness comes from the generator passed in (checkpointed by the training
loop, so a resumed run mixes the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Box:
    """Rows ``top:bottom`` and columns ``left:right`` of a frame; ``share`` of its area."""

    top: int
    bottom: int
    left: int
    right: int
    share: float


def draw_box(height: int, width: int, alpha: float, rng: np.random.Generator) -> Box:
    """A random CutMix box of a ``height x width`` frame (see the module docstring)."""
    ratio = float(np.sqrt(rng.beta(alpha, alpha)))
    cut_w, cut_h = int(width * ratio), int(height * ratio)
    cx, cy = int(rng.integers(width)), int(rng.integers(height))
    left, right = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    top, bottom = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    return Box(top, bottom, left, right, (bottom - top) * (right - left) / (height * width))


@dataclass(frozen=True)
class CutMixPlan:
    """Which own window takes a box from which partner, for one group of windows (one mouse)."""

    n_own: int
    pairs: tuple[tuple[int, int, Box], ...]  # (own window, partner window, box)

    @classmethod
    def draw(
        cls, partners: np.ndarray | None, n_windows: int, height: int, width: int, alpha: float,
        rng: np.random.Generator,
    ) -> CutMixPlan:
        """Boxes for the windows that have a partner (``partners`` as :class:`sampler.Windows`)."""
        if partners is None:
            return cls(n_windows, ())
        pairs = tuple((i, int(j), draw_box(height, width, alpha, rng)) for i, j in enumerate(partners) if j >= 0)
        return cls(len(partners), pairs)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The stacked input ``(B, C, T, h, w)`` of the own windows, boxes pasted from partners."""
        if not self.pairs:
            return x[: self.n_own]
        out = x[: self.n_own].clone()
        for i, j, b in self.pairs:
            out[i, ..., b.top : b.bottom, b.left : b.right] = x[j, ..., b.top : b.bottom, b.left : b.right]
        return out

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """Per-window values (targets; the shifter's pupil centre) mixed by box area."""
        if not self.pairs:
            return y[: self.n_own]
        out = y[: self.n_own].clone()
        for i, j, b in self.pairs:
            out[i] = (1.0 - b.share) * y[i] + b.share * y[j]
        return out
