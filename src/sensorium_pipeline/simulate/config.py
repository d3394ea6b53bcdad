"""Settings of one simulated mouse: sizes of every tier, trial lengths, noise, output format.

Every size is a setting so that a unit test can simulate a mouse in a second and a demo in
seconds, while the defaults keep the official structure (6 stimuli x 10 repeats per main
test tier, 12 x 10 in the final bonus tier, 300-frame natural trials).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..layout import FINAL_BONUS, FINAL_MAIN, LIVE_BONUS, LIVE_MAIN, ORACLE
from .stimuli import FAMILIES

#: Out-of-distribution stimulus families of the bonus tiers (docs/data-format.md, Tiers).
BONUS_FAMILIES: tuple[str, ...] = tuple(FAMILIES)
#: Tiers whose stimuli are shown with repeats, in the order they are simulated.
REPEATED_TIERS: tuple[str, ...] = (ORACLE, LIVE_MAIN, FINAL_MAIN, LIVE_BONUS, FINAL_BONUS)
COMPRESSIONS: tuple[str, ...] = ("stored", "deflated")
DTYPES: tuple[str, ...] = ("float32", "float64")
#: Presets of the response model and their default trial-noise ratio.
PRESETS: dict[str, float] = {"realistic": 4.5, "easy": 1.7}

_MOUSE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class TierSize:
    """Unique stimuli of a repeated tier and how often each is shown."""

    n_stimuli: int
    n_repeats: int


def _default_tiers() -> dict[str, TierSize]:
    return {
        ORACLE: TierSize(6, 10),
        LIVE_MAIN: TierSize(6, 10),
        FINAL_MAIN: TierSize(6, 10),
        LIVE_BONUS: TierSize(6, 10),
        FINAL_BONUS: TierSize(12, 10),
    }


@dataclass(frozen=True)
class SimulationConfig:
    """One simulated mouse. ``from_dict`` is the way in from YAML (unknown keys are errors)."""

    mouse: str = "dynamic90001-1-1-Simulated-5e1a0c3d"
    seed: int = 0
    n_neurons: int = 200
    n_train: int = 300
    #: Repeated tiers: oracle, live/final main (natural videos), live/final bonus (OOD families).
    tiers: dict[str, TierSize] = field(default_factory=_default_tiers)
    #: Valid frames of a natural-video trial (train, oracle, main tiers).
    frames: int = 300
    #: Inclusive range of bonus-trial lengths; T_pad is the longest trial of the mouse.
    bonus_frames: tuple[int, int] = (240, 330)
    #: Trial ids with tier ``none`` and no files (as in the older mice).
    n_missing_ids: int = 4
    dtype: str = "float32"
    #: ``realistic``: the real responses' statistics (heavy-tailed events, an unobserved
    #: shared gain, adaptation, deconvolution residue); ``easy``: the earlier, forgiving
    #: mouse (light-tailed noise, single-trial ceiling about 0.65), fast to learn for tests.
    preset: str = "realistic"
    #: Trial-noise variance over stimulus-driven variance, per neuron on average; the
    #: single-trial noise ceiling is about ``1/sqrt(1 + noise)``. ``None``: the preset's
    #: (easy 1.7, realistic 4.5: a ceiling about 0.42).
    noise: float | None = None
    compression: str = "stored"
    compresslevel: int | None = None
    #: OOD families of the bonus tiers; ``None`` draws one or two from the seed.
    bonus_families: tuple[str, ...] | None = None
    #: Natural trials simulated only to calibrate drive scales and noise (never written).
    n_calibration: int = 8

    def __post_init__(self) -> None:
        self._validate()

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> SimulationConfig:
        """Build from plain data; ``tiers`` may give only some tiers or fields (the rest keep defaults)."""
        if not isinstance(settings, Mapping):
            raise ConfigError(f"simulation: expected a mapping, got {type(settings).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"simulation: unknown key(s) {unknown}; known keys are {sorted(known)}")
        values = dict(settings)
        if "tiers" in values:
            values["tiers"] = _merge_tiers(values["tiers"])
        if values.get("bonus_families") is not None:
            families = values["bonus_families"]
            if isinstance(families, str) or not isinstance(families, (list, tuple)):
                raise ConfigError(f"simulation.bonus_families: expected a list of names, got {families!r}")
            values["bonus_families"] = tuple(families)
        if "bonus_frames" in values:
            bonus = values["bonus_frames"]
            if isinstance(bonus, int) and not isinstance(bonus, bool):
                bonus = (bonus, bonus)
            if not isinstance(bonus, (list, tuple)) or len(bonus) != 2:
                raise ConfigError(f"simulation.bonus_frames: expected [min, max], got {bonus!r}")
            values["bonus_frames"] = tuple(bonus)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain data that ``from_dict`` accepts (for logs and summaries)."""
        out = dataclasses.asdict(self)
        out["tiers"] = {k: dataclasses.asdict(v) for k, v in self.tiers.items()}
        out["bonus_frames"] = list(self.bonus_frames)
        out["bonus_families"] = None if self.bonus_families is None else list(self.bonus_families)
        return out

    @property
    def noise_ratio(self) -> float:
        """The trial-noise ratio in use: ``noise`` or the preset's default."""
        return float(self.noise) if self.noise is not None else PRESETS[self.preset]

    @property
    def t_pad_bound(self) -> int:
        """Largest T_pad this config can produce (the actual one is the longest trial)."""
        if self.tiers[LIVE_BONUS].n_stimuli or self.tiers[FINAL_BONUS].n_stimuli:
            return max(self.frames, self.bonus_frames[1])
        return self.frames

    def _validate(self) -> None:
        if not isinstance(self.mouse, str) or not _MOUSE_PATTERN.match(self.mouse):
            raise ConfigError(f"simulation.mouse: {self.mouse!r} is not a valid folder name")
        _check_int("seed", self.seed, 0)
        _check_int("n_neurons", self.n_neurons, 1)
        _check_int("n_train", self.n_train, 1)
        _check_int("frames", self.frames, 20)
        _check_int("n_missing_ids", self.n_missing_ids, 0)
        _check_int("n_calibration", self.n_calibration, 1)
        if set(self.tiers) != set(REPEATED_TIERS):
            raise ConfigError(f"simulation.tiers: expected exactly the tiers {list(REPEATED_TIERS)}")
        for name, size in self.tiers.items():
            if not isinstance(size, TierSize):
                raise ConfigError(f"simulation.tiers.{name}: expected n_stimuli and n_repeats")
            _check_int(f"tiers.{name}.n_stimuli", size.n_stimuli, 0)
            _check_int(f"tiers.{name}.n_repeats", size.n_repeats, 1)
        low, high = self.bonus_frames
        _check_int("bonus_frames[0]", low, 20)
        _check_int("bonus_frames[1]", high, low)
        if self.dtype not in DTYPES:
            raise ConfigError(f"simulation.dtype: {self.dtype!r} is not one of {list(DTYPES)}")
        if self.preset not in PRESETS:
            raise ConfigError(f"simulation.preset: {self.preset!r} is not one of {list(PRESETS)}")
        if self.noise is not None and (
            isinstance(self.noise, bool) or not isinstance(self.noise, (int, float)) or not self.noise > 0
        ):
            raise ConfigError(f"simulation.noise: expected a positive number, got {self.noise!r}")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(f"simulation.compression: {self.compression!r} is not one of {list(COMPRESSIONS)}")
        if self.compresslevel is not None:
            _check_int("compresslevel", self.compresslevel, 0)
            if self.compresslevel > 9:
                raise ConfigError(f"simulation.compresslevel: expected 0..9, got {self.compresslevel}")
        if self.bonus_families is not None:
            unknown = [f for f in self.bonus_families if f not in BONUS_FAMILIES]
            if unknown or not self.bonus_families or len(set(self.bonus_families)) != len(self.bonus_families):
                raise ConfigError(
                    f"simulation.bonus_families: {list(self.bonus_families)} must be distinct names "
                    f"among {list(BONUS_FAMILIES)}"
                )


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"simulation.{key}: expected an integer >= {minimum}, got {value!r}")


def _merge_tiers(given: Any) -> dict[str, TierSize]:
    if not isinstance(given, Mapping):
        raise ConfigError(f"simulation.tiers: expected a mapping of tier -> sizes, got {given!r}")
    tiers = _default_tiers()
    for name, sizes in given.items():
        if name not in tiers:
            raise ConfigError(f"simulation.tiers: unknown tier {name!r}; expected some of {list(REPEATED_TIERS)}")
        if isinstance(sizes, TierSize):
            tiers[name] = sizes
            continue
        if not isinstance(sizes, Mapping):
            raise ConfigError(f"simulation.tiers.{name}: expected a mapping with n_stimuli/n_repeats")
        unknown = sorted(set(sizes) - {"n_stimuli", "n_repeats"})
        if unknown:
            raise ConfigError(f"simulation.tiers.{name}: unknown key(s) {unknown}")
        tiers[name] = dataclasses.replace(tiers[name], **dict(sizes))
    return tiers
