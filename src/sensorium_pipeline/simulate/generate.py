"""Write one simulated mouse: an archive in the official SENSORIUM 2023 layout plus its solutions.

Trials are generated one stimulus at a time and streamed into the archive writer, so memory
holds one movie, the spooled train statistics (memory-mapped) and the solution rows of the
scored tiers. Everything random derives from ``config.seed`` through keyed generators, so
the same config writes the same bytes whatever the order of work.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..layout import (
    BONUS_TIERS,
    COORDINATES_MEMBER,
    LABELLED_TIERS,
    MAX_FRAMES,
    MODALITIES,
    NO_FILES,
    STATISTICS,
    TIER_VALUES,
    TIERS_MEMBER,
    TRAIN,
    UNIT_IDS_MEMBER,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
)
from ..solutions import write_solutions
from .behavior import BehaviorModel
from .config import BONUS_FAMILIES, REPEATED_TIERS, SimulationConfig
from .population import Population, calibrate, make_population
from .statistics import TrainStatistics
from .stimuli import NATURAL, make_stimulus

TRIAL_IDX_MEMBER = "meta/trials/trial_idx.npy"
#: Evaluation window of the noise ceiling: frames [SKIP_FIRST, min(T, MAX_FRAMES) - SKIP_LAST).
SKIP_FIRST = 50
SKIP_LAST = 1

# Keys of the random streams derived from the seed (never reorder: it would change every mouse).
_POPULATION, _PLAN, _STIMULUS, _TRIAL, _CALIBRATION = range(5)


@dataclass(frozen=True)
class Stimulus:
    """One unique movie; every repeat of it shows the identical array."""

    tier: str
    index: int
    family: str
    n_frames: int

    @property
    def stimulus_id(self) -> str:
        return f"{self.tier}/{self.family}/{self.index}"

    @property
    def stimulus_type(self) -> str:
        return self.family


@dataclass(frozen=True)
class Plan:
    """Which stimulus every trial id shows, and the ids left without files."""

    stimuli: list[Stimulus]
    trial_ids: list[list[int]]  # per stimulus, the ids of its repeats
    n_ids: int
    families: tuple[str, ...]

    @property
    def t_pad(self) -> int:
        return max(s.n_frames for s in self.stimuli)

    def tiers(self) -> np.ndarray:
        tiers = np.full(self.n_ids, NO_FILES, dtype=f"<U{max(map(len, TIER_VALUES))}")
        for stimulus, ids in zip(self.stimuli, self.trial_ids, strict=True):
            tiers[ids] = stimulus.tier
        return tiers


def make_plan(config: SimulationConfig) -> Plan:
    """Draw the trial plan: stimuli per tier, bonus families and lengths, shuffled trial ids."""
    rng = np.random.default_rng([config.seed, _PLAN])
    families = config.bonus_families
    if families is None:
        chosen = rng.choice(len(BONUS_FAMILIES), size=int(rng.integers(1, 3)), replace=False)
        families = tuple(BONUS_FAMILIES[i] for i in sorted(chosen))
    stimuli = [Stimulus(TRAIN, i, NATURAL, config.frames) for i in range(config.n_train)]
    repeats = [1] * config.n_train
    low, high = config.bonus_frames
    for tier in REPEATED_TIERS:
        size = config.tiers[tier]
        for i in range(size.n_stimuli):
            if tier in BONUS_TIERS:
                stimulus = Stimulus(tier, i, families[i % len(families)], int(rng.integers(low, high + 1)))
            else:
                stimulus = Stimulus(tier, i, NATURAL, config.frames)
            stimuli.append(stimulus)
            repeats.append(size.n_repeats)
    n_files = sum(repeats)
    n_ids = n_files + config.n_missing_ids
    order = rng.permutation(n_ids)
    bounds = np.cumsum([0, *repeats])
    trial_ids = [sorted(int(i) for i in order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return Plan(stimuli=stimuli, trial_ids=trial_ids, n_ids=n_ids, families=tuple(families))


class _Ceiling:
    """Streaming per-neuron correlation between rates and responses (the spec's ``corr``)."""

    def __init__(self, n: int) -> None:
        self.sums = np.zeros((5, n))
        self.count = 0

    def add(self, rates: np.ndarray, responses: np.ndarray) -> None:
        stop = min(len(rates), MAX_FRAMES) - SKIP_LAST
        a, b = rates[SKIP_FIRST:stop].astype(np.float64), responses[SKIP_FIRST:stop].astype(np.float64)
        if len(a) == 0:
            return
        self.sums += np.stack([a.sum(0), b.sum(0), (a * a).sum(0), (b * b).sum(0), (a * b).sum(0)])
        self.count += len(a)

    def value(self) -> float | None:
        if self.count == 0:
            return None
        sa, sb, saa, sbb, sab = self.sums / self.count
        std_a = np.sqrt(np.maximum(saa - sa**2, 0.0)) + 1e-8
        std_b = np.sqrt(np.maximum(sbb - sb**2, 0.0)) + 1e-8
        corr = (sab - sa * sb) / (std_a * std_b)
        return round(float(np.mean(np.nan_to_num(corr))), 4)


def _pad(array: np.ndarray, t_pad: int) -> np.ndarray:
    """Time-last array padded with NaN from its valid length up to ``t_pad``."""
    out = np.full((*array.shape[:-1], t_pad), np.nan, dtype=array.dtype)
    out[..., : array.shape[-1]] = array
    return out


def build_population(config: SimulationConfig) -> tuple[Population, BehaviorModel]:
    """The mouse's calibrated population and behaviour model (ground truth, deterministic)."""
    rng = np.random.default_rng([config.seed, _POPULATION])
    population = make_population(rng, config.n_neurons)
    model = BehaviorModel.draw(rng)
    videos, behaviors = [], []
    for i in range(config.n_calibration):
        stream = np.random.default_rng([config.seed, _CALIBRATION, i])
        videos.append(make_stimulus(NATURAL, stream, config.frames).astype(config.dtype))
        behaviors.append(model.sample(stream, config.frames))
    population = calibrate(population, videos, behaviors, model, config.noise, rng, skip_first=SKIP_FIRST)
    return population, model


def _trials(
    config: SimulationConfig, plan: Plan
) -> Iterator[tuple[Stimulus, int, int, np.ndarray, np.random.Generator]]:
    """Yield ``(stimulus, repeat, trial_id, video, rng)``; one video is alive at a time."""
    codes = {tier: k for k, tier in enumerate((TRAIN, *REPEATED_TIERS))}
    for stimulus, ids in zip(plan.stimuli, plan.trial_ids, strict=True):
        stream = np.random.default_rng([config.seed, _STIMULUS, codes[stimulus.tier], stimulus.index])
        video = make_stimulus(stimulus.family, stream, stimulus.n_frames).astype(config.dtype)
        for repeat, trial_id in enumerate(ids):
            yield stimulus, repeat, trial_id, video, np.random.default_rng([config.seed, _TRIAL, trial_id])


def simulate_mouse(config: SimulationConfig, archive_path: str | Path, solutions_path: str | Path) -> dict:
    """Write the archive (official layout) and the solutions table; return a small summary.

    Both files appear only when complete: the archive writer renames its temporary file on
    a clean exit, and the solutions (written just before) are removed if that fails.
    """
    from ..archive import ArchiveWriter  # the format owner; imported late so the model is usable alone

    archive_path, solutions_path = Path(archive_path), Path(solutions_path)
    if archive_path.suffix != ".zip" or archive_path.stem != config.mouse:
        raise ConfigError(
            f"simulation.mouse: the archive {archive_path} must be named {config.mouse}.zip "
            "(the root folder, the zip stem and the submission's mouse name are the same)"
        )
    plan = make_plan(config)
    t_pad = plan.t_pad
    population, model = build_population(config)
    n = population.n_neurons
    dtype = np.dtype(config.dtype)
    compression = zipfile.ZIP_STORED if config.compression == "stored" else zipfile.ZIP_DEFLATED
    shapes = {
        "videos": (VIDEO_HEIGHT, VIDEO_WIDTH, t_pad),
        "responses": (n, t_pad),
        "behavior": (2, t_pad),
        "pupil_center": (2, t_pad),
    }
    ceilings = {"natural": _Ceiling(n), "bonus": _Ceiling(n)}
    rows: list[dict] = []
    counts = {tier: 0 for tier in TIER_VALUES}
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    wrote_solutions = False
    try:
        with (
            tempfile.TemporaryDirectory(dir=archive_path.parent, prefix=f".{archive_path.name}.spool-") as spool,
            ArchiveWriter(archive_path, root=config.mouse, compression=compression, compresslevel=config.compresslevel)
            as writer,
        ):
            statistics = TrainStatistics(spool, shapes, config.n_train, config.dtype)
            padded_video, current = None, None
            for stimulus, _repeat, trial_id, video, rng in _trials(config, plan):
                if current is not stimulus:  # identical bytes for every repeat of a stimulus
                    padded_video, current = _pad(np.moveaxis(video, 0, -1), t_pad), stimulus
                behavior = model.sample(rng, stimulus.n_frames)
                rates = population.rates(video, behavior, model)
                responses = population.sample(rates, rng).astype(dtype)
                arrays = {
                    "videos": padded_video,
                    "responses": _pad(responses.T, t_pad),
                    "behavior": _pad(behavior.behavior_array().astype(dtype), t_pad),
                    "pupil_center": _pad(behavior.center_array().astype(dtype), t_pad),
                }
                if stimulus.tier == TRAIN:
                    for modality in MODALITIES:
                        statistics.add(modality, arrays[modality])
                if stimulus.tier not in LABELLED_TIERS:  # withheld: zeros over the full (N, T_pad)
                    arrays["responses"] = np.zeros((n, t_pad), dtype=dtype)
                writer.add_trial(trial_id, **arrays)
                counts[stimulus.tier] += 1
                if stimulus.tier != TRAIN:
                    ceilings["bonus" if stimulus.tier in BONUS_TIERS else "natural"].add(rates, responses)
                    rows.append(
                        {
                            "mouse": config.mouse,
                            "tier": stimulus.tier,
                            "trial_indices": trial_id,
                            "stimulus_id": stimulus.stimulus_id,
                            "stimulus_type": stimulus.stimulus_type,
                            "neuron_ids": population.unit_ids,
                            "responses": responses.T.astype(np.float32),
                            "rates": rates.T.astype(np.float32),
                        }
                    )
            tiers = plan.tiers()
            counts[NO_FILES] = int(np.sum(tiers == NO_FILES))
            writer.add_array(TIERS_MEMBER, tiers)
            writer.add_array(TRIAL_IDX_MEMBER, np.arange(plan.n_ids, dtype=np.int64))
            writer.add_array(UNIT_IDS_MEMBER, population.unit_ids)
            writer.add_array(COORDINATES_MEMBER, population.coordinates)
            for modality, stats in statistics.compute().items():
                for stat in STATISTICS:
                    writer.add_array(f"meta/statistics/{modality}/all/{stat}.npy", stats[stat])
            statistics.close()
            rows.sort(key=lambda r: r["trial_indices"])
            write_solutions(solutions_path, rows)
            wrote_solutions = True
    except BaseException:
        if wrote_solutions:
            solutions_path.unlink(missing_ok=True)
        raise
    return {
        "mouse": config.mouse,
        "n_neurons": n,
        "t_pad": t_pad,
        "n_ids": plan.n_ids,
        "trials": {tier: c for tier, c in counts.items() if c},
        "bonus_families": list(plan.families),
        "noise_ceiling": ceilings["natural"].value(),
        "noise_ceiling_bonus": ceilings["bonus"].value(),
    }
