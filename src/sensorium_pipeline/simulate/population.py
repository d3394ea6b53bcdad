"""The simulated V1 population: retinotopic Gabor receptive fields, behavioural gain, trial noise.

Model of neuron ``n`` at frame ``t`` (everything vectorised over neurons):

1. The retina sees the movie shifted by the eye position (pupil centre x a gain), bilinearly.
2. Spatial filtering: even and odd Gabors (a quadrature pair) centred where the neuron's
   cortical position maps in the visual field (retinotopy), computed as one matrix product
   over flattened frames.
3. Temporal filtering: a biphasic kernel ``h1`` (latency 1-3 frames, under 10 frames long);
   direction-selective cells add the odd Gabor filtered by ``h2`` (a kernel in temporal
   quadrature), i.e. a space-time oriented receptive field.
4. Simple cells take the linear drive, complex cells the quadrature energy; the drive is
   standardised with calibration statistics.
5. Rate = amplitude x exp(running and pupil gain) x saturating softplus(slope (drive - threshold)
   + running shift).
6. Response = compound Poisson-gamma noise around the rate: non-negative, sparse, with
   variance proportional to the rate (like deconvolved calcium activity).

That is the ``easy`` preset (a fast, forgiving mouse). The ``realistic`` preset (the default)
has the statistics of the real SENSORIUM 2023 responses (see :class:`Realism`):

* adaptation: the rectified drive is divided by ``1 + strength x`` its own causal low-pass,
  so a sustained stimulus fades (part of the rates: a model can learn it from the video);
* a shared gain no one observes: log-normal, one level per trial plus a slow fluctuation
  within the trial, the same for all neurons up to a per-neuron coupling, mean 1 (so the
  rates stay the expected responses; the gain is noise to any model);
* heavy-tailed events: Poisson event counts x log-normal amplitudes, so single frames reach
  hundreds of times the median event;
* deconvolution residue: a few frames without events hold tiny negatives (about -3e-7);
* a scan field's retinotopy: its receptive fields lie within about a fifth of the screen
  (:data:`RETINOTOPY_REALISTIC`), not across all of it;
* calibrated per neuron to a mean response of about 1-4, a std of about 6-13 and a
  single-trial ceiling ``1/sqrt(1 + noise x factor)`` (the threshold of the nonlinearity
  sets how sparse, hence how variable, the rates are; the event size sets the rest).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..layout import VIDEO_HEIGHT, VIDEO_WIDTH
from .behavior import Behavior, BehaviorModel
from .stimuli import smooth

KERNEL_FRAMES = 10
#: Screen pixels (y, x) that the 600 µm scan field spans. The easy preset's map covers nearly
#: the whole screen. The realistic one follows the recordings: the monitor spans about 124° x
#: 93° (64 x 36 pixels), mouse V1 magnifies about 25 µm of cortex per degree, so a 600 µm field
#: sees about 24° (a fifth of the width), and its middle lies anywhere in the screen's centre
#: half (``travel``: the easy preset's jitter of the middle, scaled up).
RETINOTOPY_EASY = np.array([22.0, 40.0])
RETINOTOPY_REALISTIC = np.array([24.0 * 36 / 93, 24.0 * 64 / 124])

#: Gamma shape of one event's amplitude: variance = scale x rate x (1 + 1/EVENT_SHAPE).
EVENT_SHAPE = 2.0
#: Frames at the start of a trial left out of calibration statistics (filter warm-up).
_WARMUP = 10
#: Time constant (frames) of the low-pass that drives adaptation.
ADAPTATION_TAU = 20.0
#: Shared-gain log-std across trials and within a trial, and the within-trial time scale (frames).
GAIN_TRIAL_STD = 0.3
GAIN_FRAME_STD = 0.3
GAIN_WIDTH = 15.0
#: Fraction of event-free frames that hold a tiny negative (deconvolution residue), and its size.
RESIDUE_FRACTION = 0.05
RESIDUE_SIZE = 3e-7
#: Per-neuron targets of the realistic preset: mean and std of a neuron's responses.
MEAN_RANGE = (1.2, 3.6)
STD_RANGE = (6.5, 12.0)
#: Range of the log-std of one event's amplitude (an event's median is exp(-sigma^2/2) of its mean).
EVENT_SIGMA_RANGE = (1.3, 1.6)
#: The amplitude's normal deviate is clipped here: events reach exp(4.5 sigma), 350-1,300x the median, no more.
EVENT_CLIP = 4.5
#: Largest threshold of the realistic preset's nonlinearity, in stds of the drive.
MAX_THRESHOLD = 2.5


@dataclass(frozen=True)
class Realism:
    """Per-neuron parameters of the realistic preset (absent in the easy one)."""

    adaptation: np.ndarray  # (N,) strength of the divisive adaptation
    gain_coupling: np.ndarray  # (N,) exponent of the shared gain
    event_sigma: np.ndarray  # (N,) log-std of one event's amplitude
    target_mean: np.ndarray  # (N,) calibration targets
    target_std: np.ndarray  # (N,)

    def gain_variance(self) -> np.ndarray:
        """Variance of each neuron's shared gain (its mean is 1)."""
        return np.exp(self.gain_coupling**2 * (GAIN_TRIAL_STD**2 + GAIN_FRAME_STD**2)) - 1.0


@dataclass(frozen=True)
class Population:
    """Ground-truth parameters of one simulated population (rows in ``unit_ids`` order)."""

    unit_ids: np.ndarray  # (N,) int64, 1-based, increasing, with gaps
    coordinates: np.ndarray  # (N, 3) int64 motor coordinates in µm; z on 25 µm planes
    rf_center: np.ndarray  # (N, 2) (y, x) in pixels
    spatial: np.ndarray  # (H*W, 2N) float32: even Gabors, then odd Gabors, unit L2 norm
    temporal: np.ndarray  # (2, K, N): kernels h1 and h2, unit L2 norm
    complex_cell: np.ndarray  # (N,) bool
    direction_selective: np.ndarray  # (N,) bool
    amplitude: np.ndarray  # (N,)
    slope: np.ndarray  # (N,)
    threshold: np.ndarray  # (N,)
    saturation: np.ndarray  # (N,) half-saturation of the rectified drive (response saturation)
    running_gain: np.ndarray  # (N,) log-gain per unit of normalised running
    pupil_gain: np.ndarray  # (N,) log-gain per unit of normalised dilation
    running_shift: np.ndarray  # (N,) additive drive per unit of normalised running
    eye_gain: np.ndarray  # (2,) stimulus px per camera px, for (x, y)
    drive_mean: np.ndarray  # (N,) calibration statistics of the raw drive
    drive_std: np.ndarray  # (N,)
    noise_scale: np.ndarray  # (N,) event size (realistic: mean event amplitude) of the compound Poisson noise
    realism: Realism | None = None  # None: the easy preset

    @property
    def n_neurons(self) -> int:
        return len(self.unit_ids)

    def drive(self, video: np.ndarray, eye_shift: np.ndarray) -> np.ndarray:
        """Raw (unstandardised) drive (T, N) of a time-first video (T, H, W) in grey levels.

        ``eye_shift`` (T, 2) is the retinal image shift in stimulus pixels as (x, y).
        """
        retina = shift_frames((np.asarray(video, dtype=np.float32) - 128.0) / 64.0, eye_shift)
        projection = retina.reshape(len(retina), -1) @ self.spatial  # (T, 2N) float32
        return combine_drive(projection, self.temporal, self.complex_cell, self.direction_selective)

    def rates(self, video: np.ndarray, behavior: Behavior, model: BehaviorModel) -> np.ndarray:
        """Noise-free expected responses (T, N) given the stimulus and the behaviour."""
        eye_shift = model.eye_offset(behavior) * self.eye_gain[None]
        z = (self.drive(video, eye_shift) - self.drive_mean) / self.drive_std
        return self.rates_from_drive(z, behavior, model)

    def rates_from_drive(self, z: np.ndarray, behavior: Behavior, model: BehaviorModel) -> np.ndarray:
        running, pupil = model.normalized(behavior)
        gain = np.exp(running[:, None] * self.running_gain + pupil[:, None] * self.pupil_gain)
        argument = self.slope * (z - self.threshold) + running[:, None] * self.running_shift
        drive = np.logaddexp(0.0, argument)
        if self.realism is not None:
            drive = drive / (1.0 + self.realism.adaptation * low_pass(drive, ADAPTATION_TAU))
        return self.amplitude * gain * drive * self.saturation / (drive + self.saturation)

    def sample(self, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noisy single-trial responses around ``rates`` (their expectation).

        Easy: Poisson event counts x gamma amplitudes. Realistic: the rates times a shared
        gain, Poisson counts of log-normal events, residue on some event-free frames.
        """
        if self.realism is None:
            counts = rng.poisson(rates / self.noise_scale)
            return rng.gamma(EVENT_SHAPE * counts, self.noise_scale / EVENT_SHAPE)
        return _sample_realistic(self, rates, rng)


def low_pass(x: np.ndarray, tau: float) -> np.ndarray:
    """Causal exponential average along axis 0 of the frames before each frame (0 at the start)."""
    decay = np.exp(-1.0 / tau)
    out = np.empty_like(x, dtype=np.float64)
    state = np.zeros(x.shape[1:])
    for t in range(len(x)):
        out[t] = state
        state = decay * state + (1 - decay) * x[t]
    return out


def shared_gain(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """One trial's log-gain (T,): a trial level plus a slow fluctuation, each with its set std."""
    level = rng.normal(0.0, GAIN_TRIAL_STD)
    wiggle = smooth(rng.standard_normal(n_frames), GAIN_WIDTH)
    wiggle *= GAIN_FRAME_STD / max(float(np.sqrt(np.sum(_gauss(GAIN_WIDTH) ** 2))), 1e-12)
    return level + wiggle


def _gauss(width: float) -> np.ndarray:
    half = int(np.ceil(3 * width))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / width) ** 2)
    return kernel / kernel.sum()


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * np.vectorize(math.erfc)(-np.asarray(x, dtype=np.float64) / math.sqrt(2.0))


def event_moments(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``E[exp(sigma Z)]`` and ``E[exp(2 sigma Z)]`` for ``Z`` standard normal clipped at ``EVENT_CLIP``."""
    sigma = np.asarray(sigma, dtype=np.float64)
    unique, inverse = np.unique(sigma, return_inverse=True)  # one erfc per distinct sigma
    tail = 1.0 - _normal_cdf(np.array(EVENT_CLIP))
    first = np.exp(unique**2 / 2) * _normal_cdf(EVENT_CLIP - unique) + np.exp(unique * EVENT_CLIP) * tail
    second = np.exp(2 * unique**2) * _normal_cdf(EVENT_CLIP - 2 * unique) + np.exp(2 * unique * EVENT_CLIP) * tail
    return first[inverse].reshape(sigma.shape), second[inverse].reshape(sigma.shape)


def _sample_realistic(population: Population, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    realism = population.realism
    assert realism is not None
    beta = realism.gain_coupling
    log_gain = shared_gain(rng, len(rates))[:, None] * beta
    log_gain -= 0.5 * beta**2 * (GAIN_TRIAL_STD**2 + GAIN_FRAME_STD**2)  # mean gain 1
    mean_event = population.noise_scale
    counts = rng.poisson(rates * np.exp(log_gain) / mean_event)
    flat = counts.ravel()
    sigma = np.broadcast_to(realism.event_sigma, counts.shape).ravel()
    scale = np.broadcast_to(mean_event / event_moments(realism.event_sigma)[0], counts.shape).ravel()
    cells = np.repeat(np.arange(flat.size), flat)
    z = np.minimum(rng.standard_normal(cells.size), EVENT_CLIP)
    amplitudes = scale[cells] * np.exp(sigma[cells] * z)
    out = np.bincount(cells, weights=amplitudes, minlength=flat.size).reshape(counts.shape)
    residue = (counts == 0) & (rng.random(counts.shape) < RESIDUE_FRACTION)
    out[residue] = -RESIDUE_SIZE * np.exp(0.3 * rng.standard_normal(int(residue.sum())))
    return out


def causal_filter(x: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Per-column causal convolution: ``out[t, j] = sum_k kernels[k, j] x[t - k, j]`` (zeros before 0).

    The sum runs over ``k = 0, 1, ...`` in that order, each product rounded on its own (no
    fused multiply-add), so the result does not depend on how the columns are blocked.
    """
    out = np.zeros_like(x)
    if len(x) == 0:
        return out
    scratch = np.empty_like(x)
    for k in range(min(len(kernels), len(x))):
        product = np.multiply(x[: len(x) - k], kernels[k], out=scratch[: len(x) - k])
        np.add(out[k:], product, out=out[k:])
    return out


#: Neurons per block of the temporal stage: its (T, block) float64 arrays stay in the CPU cache.
_DRIVE_BLOCK = 256


def combine_drive(
    projection: np.ndarray, temporal: np.ndarray, complex_cell: np.ndarray, direction_selective: np.ndarray
) -> np.ndarray:
    """Temporal stage of the drive (T, N) from the spatial projection (T, 2N): even, then odd Gabors.

    ``even1``/``odd1`` are the projections filtered by ``h1``, ``even2``/``odd2`` by ``h2``;
    ``linear = even1 + ds odd2``, ``quadrature = odd1 - ds even2``; complex cells take the
    energy ``sqrt(linear**2 + quadrature**2)``, simple cells ``linear``. Computed block by
    block of neurons, and each filtered signal only for the cells that use it (``odd1`` for
    complex cells, ``odd2`` for direction-selective ones, ``even2`` for both), which gives
    exactly the values of the full formulas (a term with ``ds = 0`` adds an exact zero).
    """
    n_frames, n = projection.shape[0], complex_cell.shape[0]
    out = np.empty((n_frames, n))
    for a in range(0, n, _DRIVE_BLOCK):
        b = min(a + _DRIVE_BLOCK, n)
        cc, ds = complex_cell[a:b], direction_selective[a:b]
        both = cc & ds
        even, odd = projection[:, a:b], projection[:, n + a : n + b]
        h1, h2 = temporal[0][:, a:b], temporal[1][:, a:b]
        # One filter pass per kernel: h1 on [even | odd of complex cells], h2 on [odd of ds | even of both].
        by_h1 = causal_filter(
            np.concatenate([even, odd[:, cc]], axis=1).astype(np.float64), np.concatenate([h1, h1[:, cc]], axis=1)
        )
        by_h2 = causal_filter(
            np.concatenate([odd[:, ds], even[:, both]], axis=1).astype(np.float64),
            np.concatenate([h2[:, ds], h2[:, both]], axis=1),
        )
        n_ds = int(ds.sum())
        linear = by_h1[:, : b - a]  # even1
        linear[:, ds] += by_h2[:, :n_ds]  # + odd2
        block = out[:, a:b]
        block[...] = linear
        if cc.any():
            quadrature = by_h1[:, b - a :]  # odd1
            quadrature[:, both[cc]] -= by_h2[:, n_ds:]  # - even2
            block[:, cc] = np.sqrt(linear[:, cc] ** 2 + quadrature**2)
    return out


def shift_frames(frames: np.ndarray, shift_xy: np.ndarray) -> np.ndarray:
    """Frames seen through an eye displaced by ``shift_xy`` (T, 2) pixels: ``out(p) = frames(p + shift)``.

    Bilinear interpolation on edge-padded frames; frames are grouped by their integer
    offset (eye movements are smooth, so a trial has few groups) to work on whole slices.
    """
    n_frames, height, width = frames.shape
    whole = np.floor(shift_xy).astype(np.int64)  # (T, 2) as (x, y)
    fraction = (shift_xy - whole).astype(frames.dtype)
    margin = int(np.abs(whole).max(initial=0)) + 1
    padded = np.pad(frames, ((0, 0), (margin, margin), (margin, margin)), mode="edge")
    out = np.empty_like(frames)
    offsets, group = np.unique(whole, axis=0, return_inverse=True)
    for g, (ox, oy) in enumerate(offsets):
        idx = np.flatnonzero(group.ravel() == g)
        y0, x0 = margin + oy, margin + ox
        block = padded[idx, y0 : y0 + height + 1, x0 : x0 + width + 1]
        wx = fraction[idx, 0, None, None]
        wy = fraction[idx, 1, None, None]
        top = block[:, :height, :width] + wx * (block[:, :height, 1:] - block[:, :height, :width])
        bottom = block[:, 1:, :width] + wx * (block[:, 1:, 1:] - block[:, 1:, :width])
        out[idx] = top + wy * (bottom - top)
    return out


def _unit_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    gaps = rng.geometric(0.6, n) + (rng.random(n) < 0.05) * rng.integers(1, 20, n)  # each >= 1
    ids = np.cumsum(gaps)
    if n > 1 and np.all(np.diff(ids) == 1):  # guarantee at least one gap
        ids[n // 2 :] += 1
    return ids.astype(np.int64)


def _temporal_kernels(rng: np.random.Generator, n: int) -> np.ndarray:
    tau = np.arange(KERNEL_FRAMES, dtype=np.float64)[:, None]

    def bump(peak: np.ndarray) -> np.ndarray:
        ratio = tau / peak[None]
        return ratio**4 * np.exp(-4 * (ratio - 1))

    peak = rng.uniform(1.7, 2.8, n)
    late = peak * rng.uniform(1.7, 2.1, n)
    weight = rng.uniform(0.2, 0.6, n)
    taper = np.ones((KERNEL_FRAMES, 1))
    taper[-3:, 0] = np.cos(np.linspace(0.25, 0.75, 3) * np.pi / 1.5) ** 2
    h1 = (bump(peak) - weight * bump(late)) * taper
    h2 = (bump(peak * 1.4) - weight * bump(late * 1.3)) * taper
    h1 /= np.linalg.norm(h1, axis=0)
    h2 -= h1 * np.sum(h1 * h2, axis=0)  # quadrature partner: orthogonal to h1
    h2 /= np.linalg.norm(h2, axis=0)
    return np.stack([h1, h2])


#: Neurons per block when drawing Gabors: the (block, H, W) float64 temporaries stay small.
_GABOR_BLOCK = 256


def _gabors(rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    n = len(centers)
    orientation = rng.uniform(0, np.pi, n)
    period = np.exp(rng.uniform(np.log(8), np.log(20), n))
    sigma = np.clip(period * rng.uniform(0.35, 0.55, n), 2.5, 7.0)
    aspect = rng.uniform(1.0, 1.6, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    y, x = np.mgrid[0:VIDEO_HEIGHT, 0:VIDEO_WIDTH].astype(np.float64)
    filters = np.empty((2 * n, VIDEO_HEIGHT * VIDEO_WIDTH), dtype=np.float32)  # even Gabors, then odd
    for a in range(0, n, _GABOR_BLOCK):  # per neuron, so blocks give the values of one pass over all
        b = min(a + _GABOR_BLOCK, n)
        dy = y[None] - centers[a:b, 0, None, None]
        dx = x[None] - centers[a:b, 1, None, None]
        cos, sin = np.cos(orientation[a:b])[:, None, None], np.sin(orientation[a:b])[:, None, None]
        across = dx * cos + dy * sin
        along = -dx * sin + dy * cos
        s = sigma[a:b, None, None]
        envelope = np.exp(-(across**2) / (2 * s**2) - along**2 / (2 * (aspect[a:b, None, None] * s) ** 2))
        argument = 2 * np.pi * across / period[a:b, None, None] + phase[a:b, None, None]
        for half, carrier in enumerate((np.cos(argument), np.sin(argument))):
            g = envelope * carrier
            g -= envelope * (g.sum(axis=(1, 2), keepdims=True) / envelope.sum(axis=(1, 2), keepdims=True))
            g /= np.linalg.norm(g, axis=(1, 2), keepdims=True)
            filters[half * n + a : half * n + b] = g.reshape(b - a, -1)
    return filters.T  # (H*W, 2N), Fortran-ordered: each filter contiguous


def make_population(rng: np.random.Generator, n_neurons: int, realistic: bool = False) -> Population:
    """Draw an uncalibrated population (drive statistics 0/1, unit noise scale; see ``calibrate``).

    The realistic preset draws its extra parameters after all of the easy preset's, so an
    easy mouse is the same whatever the realistic code does.
    """
    n = n_neurons
    field = rng.uniform(0, 600, (n, 2))  # cortical x, y within the scan field, µm
    offset = rng.integers(-800, 800, 2)
    z = 200 + 25 * rng.integers(0, 10, n)
    coordinates = np.column_stack([np.round(field + offset), z]).astype(np.int64)
    # Retinotopy: a rotated, scaled map of the scan field onto the screen, plus scatter.
    angle = rng.uniform(-np.pi / 6, np.pi / 6)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    flips = rng.choice([-1.0, 1.0], 2)
    unit = (field - 300.0) / 600.0 @ rotation.T * flips  # (x, y) in [-0.7, 0.7]
    jitter = np.array([rng.uniform(-2, 2), rng.uniform(-4, 4)])
    extent, travel = (RETINOTOPY_REALISTIC, np.array([4.5, 4.0])) if realistic else (RETINOTOPY_EASY, 1.0)
    middle = np.array([VIDEO_HEIGHT / 2, VIDEO_WIDTH / 2]) + jitter * travel
    centers = middle + unit[:, ::-1] * extent + rng.normal(0, 1.5, (n, 2))
    centers = np.clip(centers, [2, 2], [VIDEO_HEIGHT - 3, VIDEO_WIDTH - 3])
    complex_cell = rng.random(n) < 0.45
    population = Population(
        unit_ids=_unit_ids(rng, n),
        coordinates=coordinates,
        rf_center=centers,
        spatial=_gabors(rng, centers),
        temporal=_temporal_kernels(rng, n),
        complex_cell=complex_cell,
        direction_selective=rng.random(n) < 0.3,
        amplitude=np.exp(rng.normal(np.log(0.5), 0.4, n)),
        slope=rng.uniform(1.5, 2.5, n),
        threshold=rng.uniform(0.3, 1.2, n),
        saturation=rng.uniform(4.0, 10.0, n),
        running_gain=rng.normal(0.35, 0.2, n),
        pupil_gain=rng.normal(0.15, 0.15, n),
        running_shift=rng.normal(0.3, 0.3, n),
        eye_gain=np.array([0.35, 0.3]) * rng.choice([-1.0, 1.0], 2),
        drive_mean=np.zeros(n),
        drive_std=np.ones(n),
        noise_scale=np.ones(n),
    )
    if not realistic:
        return population
    realism = Realism(
        adaptation=rng.uniform(0.3, 1.2, n),
        gain_coupling=rng.uniform(0.6, 1.3, n),
        event_sigma=rng.uniform(*EVENT_SIGMA_RANGE, n),
        target_mean=np.exp(rng.uniform(*np.log(MEAN_RANGE), n)),
        target_std=np.exp(rng.uniform(*np.log(STD_RANGE), n)),
    )
    return dataclasses.replace(population, realism=realism)


def calibrate(
    population: Population,
    videos: list[np.ndarray],
    behaviors: list[Behavior],
    model: BehaviorModel,
    noise: float,
    rng: np.random.Generator,
    skip_first: int = 50,
) -> Population:
    """Fix drive statistics and noise scales on calibration trials (never written).

    Standardising the drive makes the output nonlinearity comparable across neurons; the
    event size is chosen per neuron so that noise variance / rate variance is ``noise``
    times a log-normal factor, i.e. a single-trial ceiling around ``1/sqrt(1 + noise)``.
    """
    drives = [
        population.drive(v, model.eye_offset(b) * population.eye_gain[None]) for v, b in zip(videos, behaviors, strict=True)
    ]
    warm = np.concatenate([d[_WARMUP:] for d in drives])
    mean = warm.mean(axis=0)
    std = np.maximum(warm.std(axis=0), 1e-6)
    population = dataclasses.replace(population, drive_mean=mean, drive_std=std)
    if population.realism is not None:
        return _calibrate_realistic(population, drives, behaviors, model, noise, rng, skip_first)
    rates = np.concatenate(
        [
            population.rates_from_drive((d - mean) / std, b, model)[min(skip_first, len(d) // 2) :]
            for d, b in zip(drives, behaviors, strict=True)
        ]
    )
    ratio = noise * np.exp(rng.normal(-0.08, 0.4, population.n_neurons))
    scale = ratio * rates.var(axis=0) / ((1 + 1 / EVENT_SHAPE) * np.maximum(rates.mean(axis=0), 1e-9))
    return dataclasses.replace(population, noise_scale=np.maximum(scale, 1e-6))


def _calibrate_realistic(
    population: Population,
    drives: list[np.ndarray],
    behaviors: list[Behavior],
    model: BehaviorModel,
    noise: float,
    rng: np.random.Generator,
    skip_first: int,
) -> Population:
    """Thresholds, amplitudes and event sizes that give each neuron its target mean, std and ceiling.

    With rates ``r`` (mean ``M``), a gain ``g`` (mean 1, variance ``v``) and events of mean
    size ``a``, the response variance is ``var(r)(1 + v) + v M^2 + M a exp(sigma^2)`` and its
    correlation with ``r`` is ``std(r) / std(response)``: the threshold is searched (bisection)
    so that the coefficient of variation of ``r`` is ``ceiling x S / M``; the event size fills
    the rest of the target variance ``S^2``.
    """
    realism = population.realism
    assert realism is not None
    n = population.n_neurons
    ceiling = 1.0 / np.sqrt(1.0 + noise * np.exp(rng.normal(-0.08, 0.4, n)))
    target_mean, target_std = realism.target_mean, realism.target_std
    target_cv = ceiling * target_std / target_mean
    z = [(d - population.drive_mean) / population.drive_std for d in drives]

    def rates_at(threshold: np.ndarray) -> np.ndarray:
        shifted = dataclasses.replace(population, threshold=threshold, amplitude=np.ones(n))
        return np.concatenate(
            [
                shifted.rates_from_drive(zi, b, model)[min(skip_first, len(zi) // 2) :]
                for zi, b in zip(z, behaviors, strict=True)
            ]
        )

    # Thresholds stay within a few stds of the drive: a rarer event would need an amplitude
    # that new stimuli turn into absurd rates (such a neuron gets a lower ceiling instead).
    low, high = population.threshold - 2.0, np.full(n, MAX_THRESHOLD)
    for _ in range(20):
        middle = 0.5 * (low + high)
        r = rates_at(middle)
        cv = r.std(axis=0) / np.maximum(r.mean(axis=0), 1e-12)
        too_sparse = cv > target_cv
        high = np.where(too_sparse, middle, high)
        low = np.where(too_sparse, low, middle)
    threshold = 0.5 * (low + high)
    r = rates_at(threshold)
    amplitude = target_mean / np.maximum(r.mean(axis=0), 1e-12)
    r = r * amplitude
    variance_gain = realism.gain_variance()
    rest = target_std**2 - r.var(axis=0) * (1 + variance_gain) - variance_gain * target_mean**2
    kappa = np.maximum(rest, 0.05 * target_std**2) / target_mean
    first, second = event_moments(realism.event_sigma)
    mean_event = kappa / (second / first**2)  # E[A^2] / E[A] = mean event x second / first^2
    return dataclasses.replace(population, threshold=threshold, amplitude=amplitude, noise_scale=mean_event)
