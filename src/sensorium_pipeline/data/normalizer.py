"""The per-frame scaling a model's inputs and targets get: the official normalisation
(:mod:`normalize`, docs/data-format.md) or, for ``inputs: raw`` / ``training.targets: raw``,
the identity, so training targets and the scorer's ground truth are in the same units:

- videos ``(x - mean) / std`` per pixel and frame; behaviour ``÷ std``; pupil centre z-scored;
- responses ``× response_precision(std)`` per frame.

A model with ``inputs: raw`` gets the archive's values instead (grey levels 0-255, raw behaviour
and pupil centre), and ``training.targets: raw`` the recorded responses; every source carries
the official per-frame ``precision`` so that raw targets can still be scored in official units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..layout import INPUTS
from .normalize import behavior_scale, response_precision, video_normalizer
from .store import MouseStore

#: What the responses are: ``normalized`` (x the official per-frame precision) or ``raw`` (as
#: recorded; the training loss clips them at 0, validation multiplies by the precision).
TARGETS: tuple[str, ...] = ("normalized", "raw")


def check_options(inputs: str, targets: str) -> None:
    """Refuse an unknown ``inputs`` (:data:`INPUTS`) or ``targets`` (:data:`TARGETS`)."""
    if inputs not in INPUTS:
        raise ConfigError(f"model.inputs: {inputs!r} is not one of {list(INPUTS)}")
    if targets not in TARGETS:
        raise ConfigError(f"training.targets: {targets!r} is not one of {list(TARGETS)}")


@dataclass(frozen=True)
class Normalizer:
    """Per-frame scaling of one mouse, time-major, for the first ``length`` frames: the official
    normalisation, or the identity for raw inputs (``inputs="raw"``) or raw targets
    (``targets="raw"``). ``precision`` is always the official per-frame response precision."""

    video_offset: np.ndarray  # (T, H, W)
    video_scale: np.ndarray
    behavior_scale: np.ndarray  # (T, 2)
    pupil_offset: np.ndarray  # (T, 2)
    pupil_scale: np.ndarray
    response_scale: np.ndarray  # (T, N)
    precision: np.ndarray  # (T, N), float32

    @classmethod
    def of(cls, mouse: MouseStore, length: int, *, inputs: str = "official", targets: str = "normalized") -> Normalizer:
        check_options(inputs, targets)

        def stat(modality: str, name: str) -> np.ndarray:
            # NaN past ``length`` would mean a wrong cut; frames are never read there
            return np.nan_to_num(np.asarray(mouse.statistic(modality, name)[:length], dtype=np.float64))

        precision = np.nan_to_num(response_precision(np.asarray(mouse.statistic("responses", "std"))[:length]))
        precision = precision.astype(np.float32)
        response_scale = precision if targets == "normalized" else np.ones_like(precision)
        if inputs == "raw":
            height, width = mouse.array("videos").shape[2:]
            zeros = np.zeros((length, height, width))
            two = np.zeros((length, 2))
            return cls(zeros, zeros + 1.0, two + 1.0, two, two + 1.0, response_scale, precision)
        v_offset, v_scale = video_normalizer(stat("videos", "mean"), stat("videos", "std"))
        p_offset, p_scale = video_normalizer(stat("pupil_center", "mean"), stat("pupil_center", "std"))
        return cls(v_offset, v_scale, behavior_scale(stat("behavior", "std")), p_offset, p_scale, response_scale,
                   precision)

    def apply(self, modality: str, raw: np.ndarray, frames: slice, out: np.ndarray | None = None) -> np.ndarray:
        """Normalised float32 values of ``raw`` (time-first, leading axes allowed) at ``frames``,
        written into ``out`` when given (no temporaries)."""
        offset, scale = {
            "videos": (self.video_offset, self.video_scale),
            "behavior": (None, self.behavior_scale),
            "pupil_center": (self.pupil_offset, self.pupil_scale),
            "responses": (None, self.response_scale),
        }[modality]
        x = np.asarray(raw, dtype=np.float32)
        if out is None:
            out = np.empty(x.shape, dtype=np.float32)
        if offset is None:
            return np.multiply(x, scale[frames], out=out)
        np.subtract(x, offset[frames], out=out)
        return np.multiply(out, scale[frames], out=out)
