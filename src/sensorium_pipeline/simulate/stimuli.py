"""Stimulus movies: naturalistic clips for train/oracle/main tiers, OOD families for bonus tiers.

Every generator returns a time-FIRST float64 array ``(T, 36, 64)`` of grey levels in
[0, 255]; the writer transposes to the archive's time-last layout. A generator draws
everything from the ``rng`` it is given, so one stimulus seed always yields the identical
movie (repeats are byte-identical).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..layout import FPS, VIDEO_HEIGHT, VIDEO_WIDTH

GREY = 128.0
SHAPE = (VIDEO_HEIGHT, VIDEO_WIDTH)


def _frequencies(shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Vertical and horizontal frequencies (cycles/pixel) of an ``rfft2`` grid."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    return ky, kx


def pink_spectrum(
    rng: np.random.Generator,
    alpha: float = 1.0,
    orientation: float | None = None,
    bandwidth: float = 0.6,
    shape: tuple[int, int] = SHAPE,
) -> np.ndarray:
    """Random ``rfft2`` coefficients of a 1/f^alpha field with unit pixel std.

    ``orientation`` (radians, direction of the spatial-frequency vector) concentrates the
    power around one orientation, as in oriented natural textures or directional noise.
    """
    ky, kx = _frequencies(shape)
    f = np.hypot(ky, kx)
    f[0, 0] = 1.0
    amplitude = f**-alpha * np.exp(-((f / 0.33) ** 2))  # anti-aliasing roll-off of a downsampled movie
    amplitude[0, 0] = 0.0
    if orientation is not None:
        angle = np.arctan2(ky, kx)
        amplitude = amplitude * np.exp((np.cos(2 * (angle - orientation)) - 1) / bandwidth**2)
    coefficients = amplitude * (rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape))
    std = np.fft.irfft2(coefficients, s=shape).std()
    return coefficients / max(std, 1e-12)


def render_fourier(
    base: np.ndarray,
    second: np.ndarray | None,
    phase: np.ndarray,
    displacement: np.ndarray,
    shape: tuple[int, int] = SHAPE,
) -> np.ndarray:
    """Frames ``cos(phase) base + sin(phase) second`` translated by ``displacement`` (T, 2) = (dy, dx).

    Mixing two independent fields along a circle keeps the spectrum (and the contrast)
    constant while the content evolves; translation is a phase ramp, so a pan never shows
    a seam (the field is periodic, far larger shifts than a clip uses would be needed to
    see it repeat).
    """
    ky, kx = _frequencies(shape)
    ramp_y = np.exp(-2j * np.pi * displacement[:, 0, None] * ky[:, 0])[:, :, None]  # separable phase ramp
    ramp_x = np.exp(-2j * np.pi * displacement[:, 1, None] * kx[0])[:, None, :]
    coefficients = np.cos(phase)[:, None, None] * base
    if second is not None:
        coefficients += np.sin(phase)[:, None, None] * second
    coefficients *= ramp_y
    coefficients *= ramp_x
    return np.fft.irfft2(coefficients, s=shape)


def smooth(x: np.ndarray, width: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (width in frames), edges handled by reflection."""
    if width <= 0:
        return x
    half = int(np.ceil(3 * width))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / width) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x, [(half, half)] + [(0, 0)] * (x.ndim - 1), mode="reflect" if len(x) > half else "edge")
    out = np.empty_like(x, dtype=np.float64)
    flat_in = padded.reshape(len(padded), -1)
    flat_out = out.reshape(len(x), -1)
    for j in range(flat_in.shape[1]):
        flat_out[:, j] = np.convolve(flat_in[:, j], kernel, mode="valid")
    return out


def _segments(rng: np.random.Generator, n_frames: int, low: int, high: int) -> list[tuple[int, int]]:
    """Split ``n_frames`` into consecutive (start, stop) blocks of ``low``..``high`` frames."""
    bounds = [0]
    while bounds[-1] < n_frames:
        bounds.append(bounds[-1] + int(rng.integers(low, high + 1)))
    bounds[-1] = n_frames
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < low // 2:  # no tiny last block
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _finish(frames: np.ndarray) -> np.ndarray:
    return np.clip(frames, 0.0, 255.0)


# -- naturalistic movies --------------------------------------------------------------------


def natural_movie(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Cinematic-like trial: clips of 1.5–5 s, each a 1/f scene that pans and slowly evolves.

    Scenes differ in luminance, contrast, spectral slope and orientation content; cuts are
    abrupt, as between the movie clips of the real experiment.
    """
    frames = np.empty((n_frames, *SHAPE))
    for start, stop in _segments(rng, n_frames, 45, 150):
        n = stop - start
        orientation = rng.uniform(0, np.pi) if rng.random() < 0.5 else None
        alpha = rng.uniform(0.9, 1.3)
        base = pink_spectrum(rng, alpha, orientation, bandwidth=rng.uniform(0.5, 1.0))
        second = pink_spectrum(rng, alpha, orientation, bandwidth=rng.uniform(0.5, 1.0))
        phase = rng.uniform(0, 2 * np.pi) + rng.uniform(0.0, 0.03) * np.arange(n)
        speed = rng.uniform(0.0, 0.5) if rng.random() < 0.7 else 0.0  # px/frame; some clips are still
        heading = rng.uniform(0, 2 * np.pi)
        velocity = speed * np.array([np.sin(heading), np.cos(heading)]) + 0.15 * smooth(
            rng.standard_normal((n, 2)), 12.0
        ) * np.sqrt(12.0)
        displacement = np.cumsum(velocity, axis=0)
        field = render_fourier(base, second, phase, displacement)
        mean = rng.uniform(70, 150)
        contrast = rng.uniform(22, 55)
        frames[start:stop] = mean + contrast * field
    return _finish(frames)


# -- out-of-distribution families -------------------------------------------------------------


def _grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float64)
    return y, x


def drifting_gabor(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Blocks of drifting Gabor patches (sometimes full-field gratings) in 8 directions, grey gaps."""
    frames = np.full((n_frames, *SHAPE), GREY)
    y, x = _grid()
    for start, stop in _segments(rng, n_frames, 40, 60):
        on = stop - int(rng.integers(0, 12))  # a short grey gap closes most blocks
        n = on - start
        if n <= 0:
            continue
        direction = rng.integers(0, 8) * np.pi / 4
        period = rng.uniform(8, 20)
        temporal = rng.uniform(1.0, 4.0) / FPS  # cycles per frame
        cy, cx = rng.uniform(6, SHAPE[0] - 6), rng.uniform(8, SHAPE[1] - 8)
        projection = (x - cx) * np.cos(direction) + (y - cy) * np.sin(direction)
        if rng.random() < 0.3:
            envelope = np.ones(SHAPE)
        else:
            sigma = rng.uniform(5, 10)
            envelope = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
        spatial = 2 * np.pi * projection / period + rng.uniform(0, 2 * np.pi)
        drift = 2 * np.pi * temporal * np.arange(n)
        carrier = np.cos(spatial)[None] * np.cos(drift)[:, None, None] + np.sin(spatial)[None] * np.sin(drift)[
            :, None, None
        ]
        frames[start:on] = GREY + rng.uniform(60, 110) * envelope[None] * carrier
    return _finish(frames)


def directional_pink_noise(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Oriented 1/f noise translating coherently in one of 8 directions per 2–3 s block."""
    frames = np.empty((n_frames, *SHAPE))
    for start, stop in _segments(rng, n_frames, 60, 90):
        n = stop - start
        direction = rng.integers(0, 8) * np.pi / 4
        base = pink_spectrum(rng, 1.0, orientation=direction, bandwidth=0.5)  # bars orthogonal to motion
        speed = rng.uniform(0.3, 1.0)
        velocity = speed * np.array([np.sin(direction), np.cos(direction)])
        displacement = np.arange(n)[:, None] * velocity[None]
        frames[start:stop] = GREY + rng.uniform(35, 55) * render_fourier(base, None, np.zeros(n), displacement)
    return _finish(frames)


def _render_dots(
    positions: np.ndarray, signs: np.ndarray, sigma: float | np.ndarray, amplitude: float
) -> np.ndarray:
    """Gaussian dots on grey; ``positions`` (T, D, 2) as (y, x), periodic at the frame edges."""
    y = np.arange(SHAPE[0], dtype=np.float64)
    x = np.arange(SHAPE[1], dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), signs.shape)
    dy = (y[None, None, :] - positions[..., 0, None] + SHAPE[0] / 2) % SHAPE[0] - SHAPE[0] / 2
    dx = (x[None, None, :] - positions[..., 1, None] + SHAPE[1] / 2) % SHAPE[1] - SHAPE[1] / 2
    gy = np.exp(-0.5 * (dy / sigma[..., None]) ** 2) * signs[..., None]  # (T, D, H)
    gx = np.exp(-0.5 * (dx / sigma[..., None]) ** 2)  # (T, D, W)
    return GREY + amplitude * np.matmul(gy.transpose(0, 2, 1), gx)


def random_dot_kinematogram(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Small black and white dots, a coherent fraction moving in one direction per block."""
    frames = np.empty((n_frames, *SHAPE))
    for start, stop in _segments(rng, n_frames, 60, 90):
        n = stop - start
        n_dots = int(rng.integers(60, 120))
        coherence = rng.choice([0.5, 0.75, 1.0])
        direction = rng.integers(0, 8) * np.pi / 4
        speed = rng.uniform(0.5, 1.5)
        headings = np.where(rng.random(n_dots) < coherence, direction, rng.uniform(0, 2 * np.pi, n_dots))
        velocity = speed * np.stack([np.sin(headings), np.cos(headings)], axis=1)
        start_positions = rng.uniform(0, 1, (n_dots, 2)) * SHAPE
        positions = start_positions[None] + np.arange(n)[:, None, None] * velocity[None]
        signs = np.broadcast_to(rng.choice([-1.0, 1.0], n_dots), (n, n_dots))
        frames[start:stop] = _render_dots(positions, signs, rng.uniform(0.8, 1.2), 110.0)
    return _finish(frames)


def gaussian_dots(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Sparse noise: one to three large Gaussian dots flashed for 0.3–0.5 s at random places."""
    frames = np.empty((n_frames, *SHAPE))
    for start, stop in _segments(rng, n_frames, 9, 15):
        n = stop - start
        n_dots = int(rng.integers(1, 4))
        positions = np.broadcast_to(rng.uniform(0, 1, (n_dots, 2)) * SHAPE, (n, n_dots, 2))
        signs = np.broadcast_to(rng.choice([-1.0, 1.0], n_dots), (n, n_dots))
        sigma = np.broadcast_to(rng.uniform(2.0, 4.0, n_dots), (n, n_dots))
        frames[start:stop] = _render_dots(positions, signs, sigma, 115.0)
    return _finish(frames)


def static_natural_images(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """A sequence of still 1/f scenes, each flashed for 0.5 s (15 frames)."""
    frames = np.empty((n_frames, *SHAPE))
    for start in range(0, n_frames, 15):
        stop = min(start + 15, n_frames)
        orientation = rng.uniform(0, np.pi) if rng.random() < 0.5 else None
        base = pink_spectrum(rng, rng.uniform(0.9, 1.3), orientation)
        image = np.fft.irfft2(base, s=SHAPE)
        frames[start:stop] = rng.uniform(70, 150) + rng.uniform(22, 55) * image
    return _finish(frames)


FAMILIES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "directional_pink_noise": directional_pink_noise,
    "drifting_gabor": drifting_gabor,
    "random_dot_kinematogram": random_dot_kinematogram,
    "gaussian_dots": gaussian_dots,
    "static_natural_images": static_natural_images,
}
NATURAL = "natural"


def make_stimulus(family: str, rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Movie of ``family`` (``natural`` or an OOD family), time-first (T, 36, 64), grey levels."""
    if family == NATURAL:
        return natural_movie(rng, n_frames)
    return FAMILIES[family](rng, n_frames)
