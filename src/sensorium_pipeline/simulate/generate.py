"""Write one simulated mouse: an archive in the official SENSORIUM 2023 layout plus its solutions.

Trials are generated one at a time and streamed into the archive writer, so memory holds
one movie and one trial's arrays whatever the number of trials; everything that grows with
the trials lives in files beside the output (the train trials for the statistics, which
need every train value for the median; the oracle responses and noise-ceiling sums until
their archive members are written). Three passes:

1. train trials, in plan order: archive members and the statistics spool (reduced as soon
   as the last train trial is in, then deleted);
2. scored trials, in trial-id order: the expensive part (rates and responses), streamed
   into the solutions table, which is sorted by trial id;
3. scored trials, in plan order again: their archive members, from the spooled responses
   (or zeros where withheld) and the regenerated movie and behaviour (cheap, and identical:
   each comes from its own keyed random stream).

Everything random derives from ``config.seed`` through keyed generators, so the same config
writes the same bytes whatever the order of work.
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
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
from .behavior import Behavior, BehaviorModel
from .config import BONUS_FAMILIES, REPEATED_TIERS, SimulationConfig
from .population import Population, calibrate, make_population
from .spool import OrderedWorker, RecordFile, SolutionsStream
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


def _ceiling_window(n_frames: int) -> slice:
    return slice(SKIP_FIRST, min(n_frames, MAX_FRAMES) - SKIP_LAST)


class _Ceiling:
    """Streaming per-neuron correlation between rates and responses (the spec's ``corr``).

    ``terms`` gives one trial's sums, ``add_terms`` adds them: the simulator computes the
    terms of scored trials in trial-id order and adds them in plan order (the order of the
    float sums, hence the exact ceiling, does not depend on how the work is scheduled).
    """

    def __init__(self, n: int) -> None:
        self.sums = np.zeros((5, n))
        self.count = 0

    @staticmethod
    def terms(rates: np.ndarray, responses: np.ndarray) -> np.ndarray | None:
        window = _ceiling_window(len(rates))
        a, b = rates[window].astype(np.float64), responses[window].astype(np.float64)
        if len(a) == 0:
            return None
        return np.stack([a.sum(0), b.sum(0), (a * a).sum(0), (b * b).sum(0), (a * b).sum(0)])

    def add_terms(self, terms: np.ndarray, n_frames: int) -> None:
        self.sums += terms
        self.count += n_frames

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
    population = make_population(rng, config.n_neurons, realistic=config.preset == "realistic")
    model = BehaviorModel.draw(rng)
    videos, behaviors = [], []
    for i in range(config.n_calibration):
        stream = np.random.default_rng([config.seed, _CALIBRATION, i])
        videos.append(make_stimulus(NATURAL, stream, config.frames).astype(config.dtype))
        behaviors.append(model.sample(stream, config.frames))
    population = calibrate(population, videos, behaviors, model, config.noise_ratio, rng, skip_first=SKIP_FIRST)
    return population, model


def _video(config: SimulationConfig, stimulus: Stimulus) -> np.ndarray:
    """The stimulus's movie, time-first, in the archive's dtype (identical on every call)."""
    codes = {tier: k for k, tier in enumerate((TRAIN, *REPEATED_TIERS))}
    stream = np.random.default_rng([config.seed, _STIMULUS, codes[stimulus.tier], stimulus.index])
    return make_stimulus(stimulus.family, stream, stimulus.n_frames).astype(config.dtype)


def _trial_rng(config: SimulationConfig, trial_id: int) -> np.random.Generator:
    """The trial's stream: its behaviour first, then its response noise."""
    return np.random.default_rng([config.seed, _TRIAL, trial_id])


class _Trial:
    """One trial's simulation: behaviour, noise-free rates and noisy responses (time-first)."""

    def __init__(
        self,
        config: SimulationConfig,
        population: Population,
        model: BehaviorModel,
        stimulus: Stimulus,
        video: np.ndarray,
        trial_id: int,
    ) -> None:
        rng = _trial_rng(config, trial_id)
        self.stimulus, self.trial_id = stimulus, trial_id
        self.behavior = model.sample(rng, stimulus.n_frames)
        self.rates = population.rates(video, self.behavior, model)
        self.responses = population.sample(self.rates, rng).astype(config.dtype)


def _behavior_arrays(behavior: Behavior, dtype: np.dtype, t_pad: int) -> dict[str, np.ndarray]:
    return {
        "behavior": _pad(behavior.behavior_array().astype(dtype), t_pad),
        "pupil_center": _pad(behavior.center_array().astype(dtype), t_pad),
    }


def simulate_mouse(config: SimulationConfig, archive_path: str | Path, solutions_path: str | Path) -> dict:
    """Write the archive (official layout) and the solutions table; return a small summary.

    Both files appear only when complete: the archive writer renames its temporary file on
    a clean exit, and the solutions (completed just before) are removed if that fails.
    """
    from ..data.archive import ArchiveWriter  # the format owner; imported late so the model is usable alone

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
    counts = {tier: 0 for tier in TIER_VALUES}
    train = [(s, ids) for s, ids in zip(plan.stimuli, plan.trial_ids, strict=True) if s.tier == TRAIN]
    scored = [(s, ids) for s, ids in zip(plan.stimuli, plan.trial_ids, strict=True) if s.tier != TRAIN]
    if [s for s, _ in train + scored] != plan.stimuli:
        raise AssertionError("make_plan must put the train stimuli first (the archive's member order)")
    # Scored trials by trial id (the solutions' order); slots of the spools, by trial id.
    by_id = sorted((trial_id, k) for k, (_, ids) in enumerate(scored) for trial_id in ids)
    slot = {trial_id: i for i, (trial_id, _) in enumerate(by_id)}
    labelled = sorted(trial_id for s, ids in scored if s.tier in LABELLED_TIERS for trial_id in ids)
    labelled_slot = {trial_id: i for i, trial_id in enumerate(labelled)}

    def write_train(writer: ArchiveWriter, statistics: TrainStatistics, trial: _Trial, videos: np.ndarray) -> None:
        arrays = {
            "videos": videos,
            "responses": _pad(trial.responses.T, t_pad),
            **_behavior_arrays(trial.behavior, dtype, t_pad),
        }
        for modality in MODALITIES:
            statistics.add(modality, arrays[modality])
        writer.add_trial(trial.trial_id, **arrays)

    def keep_scored(
        solutions: SolutionsStream, ceiling_terms: RecordFile, responses: RecordFile, trial: _Trial
    ) -> None:
        terms = _Ceiling.terms(trial.rates, trial.responses)
        if terms is not None:
            ceiling_terms.write(slot[trial.trial_id], terms)
        stimulus = trial.stimulus
        if stimulus.tier in LABELLED_TIERS:
            responses.write(labelled_slot[trial.trial_id], _pad(trial.responses.T, t_pad))
        solutions.add(
            {
                "mouse": config.mouse,
                "tier": stimulus.tier,
                "trial_indices": trial.trial_id,
                "stimulus_id": stimulus.stimulus_id,
                "stimulus_type": stimulus.stimulus_type,
                "neuron_ids": population.unit_ids,
                "responses": trial.responses.T.astype(np.float32),
                "rates": trial.rates.T.astype(np.float32),
            }
        )

    def write_scored(
        writer: ArchiveWriter,
        responses: RecordFile,
        stimulus: Stimulus,
        trial_id: int,
        videos: np.ndarray,
        behavior: Behavior,
    ) -> None:
        if stimulus.tier in LABELLED_TIERS:
            labels = responses.read(labelled_slot[trial_id])
        else:  # withheld: zeros over the full (N, T_pad)
            labels = np.zeros((n, t_pad), dtype=dtype)
        writer.add_trial(trial_id, videos=videos, responses=labels, **_behavior_arrays(behavior, dtype, t_pad))

    archive_path.parent.mkdir(parents=True, exist_ok=True)
    wrote_solutions = False
    try:
        with (
            tempfile.TemporaryDirectory(dir=archive_path.parent, prefix=f".{archive_path.name}.spool-") as spool_dir,
            ArchiveWriter(
                archive_path, root=config.mouse, compression=compression, compresslevel=config.compresslevel
            ) as writer,
            OrderedWorker("simulate-statistics", depth=1) as reducer,
            RecordFile(Path(spool_dir) / "scored-ceiling-terms.spool", (5, n), np.float64) as ceiling_terms,
            RecordFile(Path(spool_dir) / "scored-labelled-responses.spool", (n, t_pad), dtype) as labelled_responses,
        ):
            with atomic_path(solutions_path) as solutions_tmp:
                statistics = TrainStatistics(spool_dir, shapes, config.n_train, config.dtype)
                solutions = SolutionsStream(solutions_tmp)
                try:
                    with OrderedWorker("simulate-writer") as background:
                        # 1. Train trials, in plan order: archive members and the statistics spool.
                        for stimulus, ids in train:
                            video = _video(config, stimulus)
                            padded_video = _pad(np.moveaxis(video, 0, -1), t_pad)  # identical bytes for every repeat
                            for trial_id in ids:
                                trial = _Trial(config, population, model, stimulus, video, trial_id)
                                background.submit(write_train, writer, statistics, trial, padded_video)
                                counts[TRAIN] += 1
                        background.drain()
                        train_statistics: dict = {}
                        reducer.submit(lambda: train_statistics.update(statistics.compute(reducer.stopping.is_set)))
                        reducer.submit(statistics.close)  # frees the spool's disk space at once
                        # 2. Scored trials, in trial-id order: solution rows, spooled responses and sums.
                        current, video = None, None
                        for trial_id, k in by_id:
                            stimulus = scored[k][0]
                            if current is not stimulus:
                                video, current = _video(config, stimulus), stimulus
                            trial = _Trial(config, population, model, stimulus, video, trial_id)
                            background.submit(keep_scored, solutions, ceiling_terms, labelled_responses, trial)
                        background.drain()
                        # 3. Scored trials, in plan order: their archive members.
                        for stimulus, ids in scored:
                            padded_video = _pad(np.moveaxis(_video(config, stimulus), 0, -1), t_pad)
                            window = len(range(stimulus.n_frames)[_ceiling_window(stimulus.n_frames)])
                            for trial_id in ids:
                                behavior = model.sample(_trial_rng(config, trial_id), stimulus.n_frames)
                                background.submit(
                                    write_scored, writer, labelled_responses, stimulus, trial_id, padded_video, behavior
                                )
                                counts[stimulus.tier] += 1
                                if window:
                                    ceiling = ceilings["bonus" if stimulus.tier in BONUS_TIERS else "natural"]
                                    ceiling.add_terms(ceiling_terms.read(slot[trial_id]), window)
                        background.drain()
                    tiers = plan.tiers()
                    counts[NO_FILES] = int(np.sum(tiers == NO_FILES))
                    writer.add_array(TIERS_MEMBER, tiers)
                    writer.add_array(TRIAL_IDX_MEMBER, np.arange(plan.n_ids, dtype=np.int64))
                    writer.add_array(UNIT_IDS_MEMBER, population.unit_ids)
                    writer.add_array(COORDINATES_MEMBER, population.coordinates)
                    reducer.drain()
                    for modality, stats in train_statistics.items():
                        for stat in STATISTICS:
                            writer.add_array(f"meta/statistics/{modality}/all/{stat}.npy", stats[stat])
                    solutions.close()
                except BaseException:
                    solutions.abort()
                    reducer.close(skip=True)  # before the spool folder goes
                    statistics.close()
                    raise
            wrote_solutions = True  # atomic_path renamed it; the archive follows as the writer exits
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
