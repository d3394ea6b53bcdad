"""Behaviour of the simulated mouse: running bouts, pupil dilation, eye position.

Each trial (each repeat too) draws its own smooth processes, so a model that ignores
behaviour cannot explain the trial-to-trial differences of repeated stimuli, as in the
real recordings. Units mimic the real archives: running speed in cm/s, pupil dilation and
pupil centre in eye-camera pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layout import FPS
from .stimuli import smooth


@dataclass(frozen=True)
class Behavior:
    """One trial's behaviour, time-first: ``pupil`` (T,), ``running`` (T,), ``center`` (T, 2) as (x, y)."""

    pupil: np.ndarray
    running: np.ndarray
    center: np.ndarray

    def behavior_array(self) -> np.ndarray:
        """(2, T): row 0 pupil dilation, row 1 running speed (archive order)."""
        return np.stack([self.pupil, self.running])

    def center_array(self) -> np.ndarray:
        """(2, T): row 0 x, row 1 y."""
        return self.center.T.copy()


@dataclass(frozen=True)
class BehaviorModel:
    """Per-mouse constants of the behaviour processes (drawn once from the mouse seed)."""

    run_probability: float  # fraction of time spent running
    run_speed: float  # typical speed of a running bout, cm/s
    pupil_baseline: float  # pupil dilation at rest, camera px
    pupil_range: float  # dilation added by arousal, camera px
    eye_rest: tuple[float, float]  # mean pupil centre (x, y), camera px
    eye_drift: float  # std of slow eye drifts, camera px
    saccade_rate: float  # saccades per second
    saccade_size: float  # typical saccade amplitude, camera px

    @classmethod
    def draw(cls, rng: np.random.Generator) -> BehaviorModel:
        return cls(
            run_probability=float(rng.uniform(0.3, 0.5)),
            run_speed=float(rng.uniform(10, 25)),
            pupil_baseline=float(rng.uniform(12, 20)),
            pupil_range=float(rng.uniform(10, 20)),
            eye_rest=(float(rng.uniform(150, 250)), float(rng.uniform(110, 170))),
            eye_drift=float(rng.uniform(1.5, 2.5)),
            saccade_rate=float(rng.uniform(0.2, 0.4)),
            saccade_size=float(rng.uniform(2.5, 4)),
        )

    def sample(self, rng: np.random.Generator, n_frames: int) -> Behavior:
        """Draw one trial: bouts of running (with smooth onsets), arousal-driven pupil, eye drifts and saccades."""
        # Running: a two-state process with bouts of seconds; the speed ramps smoothly.
        state = np.empty(n_frames, dtype=bool)
        running = rng.random() < self.run_probability
        position = 0
        while position < n_frames:
            mean_bout = 4.0 if running else 4.0 * (1 - self.run_probability) / self.run_probability
            length = max(1, int(rng.exponential(mean_bout) * FPS))
            state[position : position + length] = running
            position += length
            running = not running
        fluctuation = 1 + 0.3 * smooth(rng.standard_normal(n_frames), 20.0) * np.sqrt(20.0)
        speed = smooth(state * self.run_speed * rng.uniform(0.6, 1.4) * np.clip(fluctuation, 0.2, None), 8.0)
        speed = speed + 0.3 * np.abs(smooth(rng.standard_normal(n_frames), 3.0))
        # Pupil: arousal follows running with ~1 s lag, plus a slow drift of its own.
        lag = np.concatenate([np.full(FPS, state[0] * 1.0), state[:-FPS] * 1.0]) if n_frames > FPS else state * 1.0
        arousal = smooth(lag.astype(np.float64), 25.0) * 0.7 + rng.uniform(0.0, 0.4)
        arousal = arousal + 0.25 * smooth(rng.standard_normal(n_frames), 30.0) * np.sqrt(30.0)
        pupil = self.pupil_baseline + self.pupil_range * np.clip(arousal, -0.2, None)
        pupil = pupil + 0.2 * rng.standard_normal(n_frames)  # tracking jitter
        # Eye position: a trial offset, slow drifts and rare saccades (steps).
        offset = rng.normal(0, self.eye_drift, 2)
        drift = self.eye_drift * 0.6 * smooth(rng.standard_normal((n_frames, 2)), 40.0) * np.sqrt(40.0)
        steps = np.zeros((n_frames, 2))
        n_saccades = rng.poisson(self.saccade_rate * n_frames / FPS)
        for onset in rng.integers(0, n_frames, n_saccades):
            steps[onset] += rng.normal(0, self.saccade_size, 2)
        saccades = np.cumsum(steps, axis=0)
        saccades -= saccades.mean(axis=0) * 0.5  # the eye tends to return towards rest
        center = np.asarray(self.eye_rest)[None] + offset[None] + drift + saccades
        center = center + 0.1 * rng.standard_normal((n_frames, 2))
        return Behavior(pupil=pupil, running=speed, center=center)

    def normalized(self, behavior: Behavior) -> tuple[np.ndarray, np.ndarray]:
        """Running and arousal on unit scales (0 at rest, ~1 in a typical bout / dilation)."""
        running = np.log1p(np.maximum(behavior.running, 0.0)) / np.log1p(self.run_speed)
        pupil = (behavior.pupil - self.pupil_baseline) / self.pupil_range
        return running, pupil

    def eye_offset(self, behavior: Behavior) -> np.ndarray:
        """(T, 2) eye position relative to rest, camera px, as (x, y)."""
        return behavior.center - np.asarray(self.eye_rest)[None]
