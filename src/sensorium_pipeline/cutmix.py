"""CutMix on video windows (the winners used alpha 1, probability 0.5).

A box of the frames of one window is replaced by the same box of another window of the batch
(all frames of the window, so the box moves nothing in time); the targets, behaviour and pupil
centre become the area-weighted mix ``lam * own + (1 - lam) * other``, with ``lam`` the share
of the frame left untouched. Every batch holds one mouse, so the mixed responses are of the
same neurons. All randomness comes from the numpy generator passed in (checkpointed by the
training loop, so a resumed run mixes the same way).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .data import Batch


def cutmix(batch: Batch, rng: np.random.Generator, alpha: float, probability: float) -> Batch:
    """``batch`` with CutMix applied with ``probability`` (the batch is returned unchanged otherwise)."""
    if probability <= 0 or rng.random() >= probability or batch.video.shape[0] < 2:
        return batch
    size, _, height, width = batch.video.shape
    lam = float(rng.beta(alpha, alpha))
    cut_h, cut_w = int(round(height * np.sqrt(1.0 - lam))), int(round(width * np.sqrt(1.0 - lam)))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y1, y2 = max(cy - cut_h // 2, 0), min(cy - cut_h // 2 + cut_h, height)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx - cut_w // 2 + cut_w, width)
    perm = torch.from_numpy(rng.permutation(size)).to(batch.video.device)
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (height * width)
    video = batch.video.clone()
    video[:, :, y1:y2, x1:x2] = batch.video[perm][:, :, y1:y2, x1:x2]

    def mix(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else lam * x + (1.0 - lam) * x[perm]

    return dataclasses.replace(
        batch, video=video, behavior=mix(batch.behavior), pupil_center=mix(batch.pupil_center),
        responses=mix(batch.responses),
    )
