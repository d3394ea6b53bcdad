"""The simulator: the realistic mouse's statistics, the easy preset, bounded memory (solutions streamed as
row groups, memory flat in the number of trials), no output after a failure."""

from __future__ import annotations

import importlib
import threading
import tracemalloc

import numpy as np
import pyarrow.parquet as pq
import pytest
from factories import small_config

from sensorium_pipeline.data.convert import convert_archive
from sensorium_pipeline.data.response_stats import response_statistics
from sensorium_pipeline.data.store import open_mouse
from sensorium_pipeline.scoring.solutions import read_solutions, write_solutions
from sensorium_pipeline.simulate import spool, statistics
from sensorium_pipeline.simulate.config import REPEATED_TIERS
from sensorium_pipeline.simulate.generate import simulate_mouse


def _rows(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i, frames in enumerate([5, 7, 5, 6][:n]):
        rows.append(
            {
                "mouse": "m",
                "tier": "oracle" if i % 2 else "live_test_bonus",
                "trial_indices": 3 * i + 1,
                "stimulus_id": f"s/{i % 2}",
                "stimulus_type": "natural",
                "neuron_ids": np.array([2, 5, 6]),
                "responses": rng.random((3, frames)).astype(np.float32),
                "rates": rng.random((3, frames)).astype(np.float32),
            }
        )
    return rows


def test_solutions_stream_writes_the_table_of_write_solutions(tmp_path, monkeypatch):
    monkeypatch.setattr(spool, "ROW_GROUP_BYTES", 100)  # a row group every row or two
    for n in (4, 0):
        rows = _rows(n)
        stream = spool.SolutionsStream(tmp_path / f"streamed{n}.parquet")
        for row in rows:
            stream.add(row)
        stream.close()
        write_solutions(tmp_path / f"whole{n}.parquet", rows)
        streamed = pq.read_table(tmp_path / f"streamed{n}.parquet")
        assert streamed.equals(pq.read_table(tmp_path / f"whole{n}.parquet"))
        assert streamed.schema.equals(pq.read_table(tmp_path / f"whole{n}.parquet").schema)
        if n:
            assert pq.ParquetFile(tmp_path / f"streamed{n}.parquet").num_row_groups > 1
            frame = read_solutions(tmp_path / f"streamed{n}.parquet")
            assert np.array_equal(frame["rates"].iloc[1], rows[1]["rates"])


def _peak_bytes(folder, n_train: int, n_repeats: int) -> int:
    config = small_config(
        n_neurons=64,
        frames=200,  # long trials, few neurons: trial arrays weigh more than the population
        bonus_frames=[190, 200],
        n_train=n_train,
        tiers={tier: {"n_stimuli": 2, "n_repeats": n_repeats} for tier in REPEATED_TIERS},
    )
    folder.mkdir()
    tracemalloc.start()
    try:
        simulate_mouse(config, folder / f"{config.mouse}.zip", folder / f"{config.mouse}.solutions.parquet")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_trials(tmp_path, monkeypatch):
    """Four times the trials (train and scored), the same peak: trials are streamed, not held.

    Buffers are bounded by constants (a row group of solutions, a slab of the statistics)
    which a full-size mouse fills; here they are shrunk to the size of a few trials.
    """
    monkeypatch.setattr(spool, "ROW_GROUP_BYTES", 2**20)  # a few of these rows per row group
    monkeypatch.setattr(statistics, "_SLAB_BYTES", 2**20)
    small = _peak_bytes(tmp_path / "small", n_train=10, n_repeats=2)  # 30 trials
    large = _peak_bytes(tmp_path / "large", n_train=40, n_repeats=8)  # 120 trials
    # Holding the trials (solution rows, say) would double the peak; threads overlapping at
    # different moments move it by a few percent.
    assert large < 1.25 * small, (small, large)


@pytest.mark.parametrize(
    ("module", "owner", "attribute", "after"),
    [
        ("sensorium_pipeline.simulate.population", "Population", "sample", 20),  # a scored trial (main thread)
        ("sensorium_pipeline.data.archive", "ArchiveWriter", "add_trial", 30),  # a scored trial's members (writer thread)
        ("sensorium_pipeline.simulate.statistics", None, "_nanmedian", 1),  # the statistics (their own thread)
    ],
)
def test_a_failure_leaves_no_output_and_no_thread(tmp_path, monkeypatch, module, owner, attribute, after):
    target = importlib.import_module(module)
    if owner is not None:
        target = getattr(target, owner)
    original = getattr(target, attribute)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise RuntimeError("injected")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, attribute, failing)
    threads = set(threading.enumerate())
    config = small_config()  # 12 train trials, then 30 scored
    with pytest.raises(RuntimeError, match="injected"):
        simulate_mouse(config, tmp_path / f"{config.mouse}.zip", tmp_path / f"{config.mouse}.solutions.parquet")
    assert len(calls) > after
    assert list(tmp_path.iterdir()) == []
    assert set(threading.enumerate()) <= threads


def _realistic_mouse(tmp_path, **overrides):
    """60 neurons, 30 natural train trials and full-size main tiers: per-neuron statistics
    over 9,000 frames and a ceiling over 120 main trials, in a few seconds."""
    settings = {
        "n_neurons": 60,
        "n_train": 30,
        "frames": 300,
        "tiers": {
            "oracle": {"n_stimuli": 1, "n_repeats": 2},
            "live_test_bonus": {"n_stimuli": 1, "n_repeats": 2},
            "final_test_bonus": {"n_stimuli": 1, "n_repeats": 2},
        },
        "bonus_frames": [280, 300],
        **overrides,
    }
    config = small_config(**settings)
    archive = tmp_path / f"{config.mouse}.zip"
    summary = simulate_mouse(config, archive, tmp_path / f"{config.mouse}.solutions.parquet")
    convert_archive(archive, tmp_path / "store", workers=1, verify_trials=1)
    return summary, open_mouse(tmp_path / "store")


def test_the_realistic_mouse_has_the_real_responses_statistics(tmp_path):
    """Ranges of the real SENSORIUM 2023 archives (deconvolved calcium, not normalised)."""
    summary, store = _realistic_mouse(tmp_path)
    stats = response_statistics(store)
    q10, median, q90 = 0, 1, 2
    assert 1.0 <= stats.mean[median] <= 4.0 and stats.mean[q10] >= 0.5 and stats.mean[q90] <= 5.0, stats.mean
    assert 6.0 <= stats.std[median] <= 13.0 and stats.std[q10] >= 4.5 and stats.std[q90] <= 18.0, stats.std
    assert stats.largest >= 500, stats.largest  # up to ~3,000 over a full mouse's 90,000 frames x 300 neurons
    responses = np.concatenate(
        [store.array("responses")[int(r), :300] for r in store.rows("train")]
    ).astype(np.float64)
    # bursts: a neuron's largest frame is tens (over 9,000 frames; ~200 over a full mouse's
    # 90,000) of times its median non-zero frame
    positive_median = np.nanmedian(np.where(responses > 0, responses, np.nan), axis=0)
    assert np.median(responses.max(axis=0) / positive_median) >= 50
    # deconvolution residue: tiny negatives on a few percent of frames, nothing else below 0
    assert 0.005 <= stats.negative_fraction <= 0.1 and -1e-5 < responses.min() < 0
    assert 0.35 <= summary["noise_ceiling"] <= 0.5, summary["noise_ceiling"]
    assert "of values below 0" in stats.describe() and stats.negative_trials == stats.train_trials == 30


def test_the_easy_preset_keeps_the_earlier_forgiving_mouse(tmp_path):
    summary, store = _realistic_mouse(tmp_path, preset="easy")
    stats = response_statistics(store)
    assert stats.mean[1] < 1.0 and stats.std[1] < 2.0 and stats.largest < 100 and stats.negative_fraction == 0
    assert summary["noise_ceiling"] >= 0.55


def test_a_realistic_scan_field_sees_a_fifth_of_the_screen_and_the_easy_one_all_of_it():
    from sensorium_pipeline.layout import VIDEO_HEIGHT, VIDEO_WIDTH
    from sensorium_pipeline.simulate.population import make_population

    for seed in range(5):
        realistic = make_population(np.random.default_rng(seed), 400, realistic=True).rf_center
        easy = make_population(np.random.default_rng(seed), 400, realistic=False).rf_center
        # the middle 90 % of the receptive-field centres, as a fraction of the screen, per axis
        def extent(centres):
            low, high = np.quantile(centres, [0.05, 0.95], axis=0)
            return (high - low) / np.array([VIDEO_HEIGHT, VIDEO_WIDTH])
        assert np.all(extent(realistic) < 0.35) and np.all(extent(realistic) > 0.1)
        assert np.all(extent(easy) > 0.5)
        # every field lies inside the screen, its middle inside the central half
        middle = realistic.mean(axis=0) / np.array([VIDEO_HEIGHT, VIDEO_WIDTH])
        assert np.all((middle > 0.2) & (middle < 0.8))
