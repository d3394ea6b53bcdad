"""A simulated full-size mouse for benchmarks: its archive and its converted store, each built once.

A real SENSORIUM 2023 mouse has about 700 trials, 8,000 neurons and 300+ frames per trial
(an archive of about 10 GB). Benchmarks need one of that size, but simulating and converting it
take minutes, so both are cached under ``cache_dir`` in a folder named by the parameters
(the store's folder also by the converter version, so a format change rebuilds it).

    from benchmarks.fullsize import fullsize_archive, fullsize_store
    archive = fullsize_archive()           # benchmarks/.cache/fullsize-700t-8000n/<mouse>.zip
    store = fullsize_store(trials=100)     # a smaller mouse for a quick run
"""

from __future__ import annotations

import sys
from pathlib import Path

from sensorium_pipeline.data.convert import convert_archive
from sensorium_pipeline.data.store_writer import CONVERTER_VERSION
from sensorium_pipeline.simulate import SimulationConfig, simulate_mouse
from sensorium_pipeline.simulate.config import REPEATED_TIERS

MOUSE = "dynamic90001-1-1-Fullsize-0"
CACHE_DIR = Path("benchmarks/.cache")
#: Trials of the official repeated tiers (oracle, live/final main, live/final bonus) at full size.
_FULL_REPEATED = 6 * 10 * 4 + 12 * 10


def fullsize_config(*, trials: int = 700, neurons: int = 8000, zip_compression: str = "stored") -> SimulationConfig:
    """The simulated mouse: official tier sizes (train fills the rest) when ``trials`` allows them,
    otherwise every repeated tier shrunk to a few stimuli so that about a quarter are repeats.
    ``zip_compression``: how the zip holds its members (``stored`` or ``deflated``)."""
    if trials < 2 or neurons < 1:
        raise ValueError(f"a full-size mouse needs trials >= 2 and neurons >= 1, got {trials}, {neurons}")
    if trials >= _FULL_REPEATED + 100:
        tiers = None
        repeated = _FULL_REPEATED
    else:
        repeats = max(1, trials // (4 * 12))
        tiers = {tier: {"n_stimuli": 2, "n_repeats": repeats} for tier in REPEATED_TIERS}
        tiers["final_test_bonus"] = {"n_stimuli": 4, "n_repeats": repeats}
        repeated = 12 * repeats
    settings: dict[str, object] = {
        "mouse": MOUSE,
        "n_neurons": neurons,
        "n_train": max(1, trials - repeated),
        "frames": 300,
        "bonus_frames": [240, 330],
        "compression": zip_compression,
    }
    if tiers is not None:
        settings["tiers"] = tiers
    return SimulationConfig.from_dict(settings)


def _folder(cache_dir: Path, trials: int, neurons: int, zip_compression: str = "stored") -> Path:
    suffix = "" if zip_compression == "stored" else f"-{zip_compression}"
    return Path(cache_dir) / f"fullsize-{trials}t-{neurons}n{suffix}"


def fullsize_archive(
    cache_dir: Path = CACHE_DIR, *, trials: int = 700, neurons: int = 8000, zip_compression: str = "stored"
) -> Path:
    """The simulated archive ``<cache_dir>/fullsize-<trials>t-<neurons>n[-deflated]/<mouse>.zip``
    (simulated once)."""
    folder = _folder(cache_dir, trials, neurons, zip_compression)
    archive = folder / f"{MOUSE}.zip"
    if not archive.exists():  # the simulator writes atomically: an existing zip is complete
        print(f"simulating {archive} (once; this takes a while at full size)", file=sys.stderr, flush=True)
        config = fullsize_config(trials=trials, neurons=neurons, zip_compression=zip_compression)
        simulate_mouse(config, archive, folder / f"{MOUSE}.solutions.parquet")
    return archive


def fullsize_store(
    cache_dir: Path = CACHE_DIR, *, trials: int = 700, neurons: int = 8000, workers: int = 2
) -> Path:
    """The converted store of :func:`fullsize_archive` (converted once per converter version)."""
    archive = fullsize_archive(cache_dir, trials=trials, neurons=neurons)
    store = _folder(cache_dir, trials, neurons) / f"store-v{CONVERTER_VERSION}" / MOUSE
    if not store.exists():  # conversion renames a complete, verified store into place
        print(f"converting {archive} -> {store} (once)", file=sys.stderr, flush=True)
        convert_archive(archive, store, workers=workers)
    return store


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build (once) the simulated full-size mouse and its store.")
    parser.add_argument("--trials", type=int, default=700)
    parser.add_argument("--neurons", type=int, default=8000)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--archive-only", action="store_true")
    args = parser.parse_args()
    if args.archive_only:
        print(fullsize_archive(args.cache_dir, trials=args.trials, neurons=args.neurons))
    else:
        print(fullsize_store(args.cache_dir, trials=args.trials, neurons=args.neurons))
