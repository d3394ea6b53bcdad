"""Window sources (RAM, device, lazy Zarr), the sampler and the DataLoader path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from factories import captured_logs, make_store, withhold_responses
from sensorium_pipeline.data.normalize import behavior_scale, response_precision, video_normalizer
from sensorium_pipeline.data.sources import DeviceMouse, MouseData, ZarrMouse, iter_trials, load_mouse, open_lazy, span
from sensorium_pipeline.data.store import ZARR_NAME, open_mouse
from sensorium_pipeline.errors import ConfigError, StoreError
from sensorium_pipeline.training.placement import load_sources
from sensorium_pipeline.training.sampler import WindowSampler, Windows, window_loader

LABELLED = ("train", "oracle")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("stores")
    a = make_store(root / "a", mouse="mouse-a", valid_frames=[36] * 6 + [30, 33] + [36] * 8, seed=1)
    b = make_store(root / "b", mouse="mouse-b", tiers=["train"] * 3 + ["oracle"] * 2, n_neurons=7, seed=2)
    return [a, b]


def _official(store: Path, row: int, frames: slice) -> dict[str, np.ndarray]:
    """The normalisation of one store row, written out from the spec's formulas."""
    mouse = open_mouse(store)
    stat = lambda m, s: np.asarray(mouse.statistic(m, s))[frames]  # noqa: E731
    raw = {m: np.asarray(mouse.array(m)[row, frames], dtype=np.float64) for m in ("videos", "behavior", "pupil_center", "responses")}
    v_off, v_scale = video_normalizer(stat("videos", "mean"), stat("videos", "std"))
    p_off, p_scale = video_normalizer(stat("pupil_center", "mean"), stat("pupil_center", "std"))
    full_precision = response_precision(np.asarray(mouse.statistic("responses", "std")))
    return {
        "videos": (raw["videos"] - v_off) * v_scale,
        "behavior": raw["behavior"] * behavior_scale(stat("behavior", "std")),
        "pupil_center": (raw["pupil_center"] - p_off) * p_scale,
        "responses": raw["responses"] * full_precision[frames],
    }


def _arrays(batch) -> dict[str, np.ndarray]:
    return {
        "videos": batch.video.cpu().numpy(),
        "behavior": batch.behavior.cpu().numpy(),
        "pupil_center": batch.pupil_center.cpu().numpy(),
        "responses": batch.responses.cpu().numpy(),
    }


def _assert_close(a, b, video_atol: float = 0.0) -> None:
    for name in ("videos", "behavior", "pupil_center", "responses"):
        atol = video_atol if name == "videos" else 1e-5
        np.testing.assert_allclose(_arrays(a)[name], _arrays(b)[name], rtol=1e-5 if atol else 0, atol=atol, err_msg=name)


def test_ram_window_is_the_official_normalisation_with_frame_step(stores: list[Path]) -> None:
    data = load_mouse(stores[0], LABELLED)
    assert data.videos.dtype == np.float16 and data.responses.dtype == np.float32
    rows, starts = np.array([0, 7, 3]), np.array([2, 0, 5])
    batch = data.window(rows, starts, 8, step=3)
    assert batch.video.shape == (3, 8, 36, 64) and batch.responses.shape == (3, 8, 12) and len(batch) == 3
    assert batch.video.dtype == torch.float32
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        store_row = int(np.flatnonzero(open_mouse(stores[0]).trials["trial_id"] == data.trial_ids[row])[0])
        expected = _official(stores[0], store_row, slice(start, start + span(8, 3), 3))
        got = _arrays(batch)
        np.testing.assert_allclose(got["videos"][i], expected["videos"], rtol=2e-3, atol=2e-3)  # float16
        for name in ("behavior", "pupil_center", "responses"):
            np.testing.assert_allclose(got[name][i], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_windows_past_the_usable_frames_are_refused(stores: list[Path]) -> None:
    data = load_mouse(stores[0], LABELLED)
    row = int(np.flatnonzero(data.n_frames == 30)[0])
    data.window([row], [0], 30)
    with pytest.raises(ValueError, match="runs past"):
        data.window([row], [0], 16, step=2)  # spans 31 frames
    with pytest.raises(ValueError, match="runs past"):
        data.window([row], [-1], 5)


def test_lazy_and_device_sources_cut_the_same_windows(stores: list[Path]) -> None:
    ram = load_mouse(stores[0], LABELLED)
    lazy = open_lazy(stores[0], LABELLED)
    on_cpu_device = ram.to_device("cpu")
    assert isinstance(on_cpu_device, DeviceMouse) and on_cpu_device.videos.dtype == torch.float16
    rows, starts = np.array([1, 9, 9, 4]), np.array([0, 3, 10, 7])
    for step in (1, 2):
        reference = ram.window(rows, starts, 10, step)
        _assert_close(on_cpu_device.window(rows, starts, 10, step), reference)
        _assert_close(lazy.window(rows, starts, 10, step), reference, video_atol=5e-3)  # RAM videos are float16
    for source in (lazy, on_cpu_device):
        np.testing.assert_array_equal(source.trial_ids, ram.trial_ids)
        np.testing.assert_array_equal(source.n_frames, ram.n_frames)
        np.testing.assert_allclose(source.mean_response([0, 5]), ram.mean_response([0, 5]), rtol=1e-6)


def test_lazy_mouse_pickles_without_its_store_handles(stores: list[Path]) -> None:
    lazy = open_lazy(stores[0], LABELLED)
    lazy.window([0], [0], 4)
    assert lazy._arrays is not None
    copy = pickle.loads(pickle.dumps(lazy))
    assert copy._arrays is None
    _assert_close(copy.window([0], [0], 4), lazy.window([0], [0], 4))


def test_float16_responses_are_close_and_overflow_is_an_error(stores: list[Path], tmp_path: Path) -> None:
    full = load_mouse(stores[0], LABELLED)
    half = load_mouse(stores[0], LABELLED, response_dtype="float16")
    assert half.responses.dtype == np.float16 and half.responses.nbytes * 2 == full.responses.nbytes
    np.testing.assert_allclose(half.responses, full.responses, rtol=1e-3, atol=1e-3)
    with pytest.raises(ConfigError, match="response_dtype"):
        load_mouse(stores[0], LABELLED, response_dtype="int8")

    loud = make_store(tmp_path / "loud", seed=3)
    responses = zarr.open_group(str(loud / ZARR_NAME), mode="r+")["responses"]
    row = responses[0]
    row[:5] *= 1e7
    responses[0] = row
    load_mouse(loud, LABELLED)  # float32 holds it
    with pytest.raises(StoreError, match="float16"):
        load_mouse(loud, LABELLED, response_dtype="float16")


def test_sampler_draws_as_before_weights_existed(stores: list[Path]) -> None:
    """Uniform sampling keeps the original draw order, so old checkpoints resume identically."""
    data = load_sources(stores, mode="ram")
    rows = {m: d.rows("train") for m, d in data.items()}
    sampler = WindowSampler(data, rows, 20, 4, seed=5)
    rng = np.random.default_rng(5)
    for _ in range(5):
        w = sampler.draw()
        mouse = sorted(rows)[int(rng.integers(2))]
        chosen = rows[mouse][rng.integers(len(rows[mouse]), size=4)]
        starts = np.floor(rng.random(4) * (data[mouse].n_frames[chosen] - 20 + 1)).astype(np.int64)
        assert w.mouse == mouse
        np.testing.assert_array_equal(w.rows, chosen)
        np.testing.assert_array_equal(w.starts, starts)


def test_sampler_weights_and_frame_step(stores: list[Path]) -> None:
    data = load_sources(stores, mode="ram")
    rows = {m: d.rows("train", "oracle") for m, d in data.items()}  # mouse-a 12 trials, mouse-b 5
    only_b = WindowSampler(data, rows, 10, 2, seed=0, mouse_weights={"mouse-a": 0, "mouse-b": 2.5})
    assert {only_b.draw().mouse for _ in range(30)} == {"mouse-b"}
    by_trials = WindowSampler(data, rows, 10, 2, seed=0, mouse_weights="trials")
    share_a = np.mean([by_trials.draw().mouse == "mouse-a" for _ in range(3000)])
    assert abs(share_a - 12 / 17) < 0.03
    with pytest.raises(ValueError, match="mouse_weights"):
        WindowSampler(data, rows, 10, 2, seed=0, mouse_weights={"mouse-c": 1})
    with pytest.raises(ValueError, match="mouse_weights"):
        WindowSampler(data, rows, 10, 2, seed=0, mouse_weights={"mouse-a": 0})

    stepped = WindowSampler(data, rows, 10, 3, seed=1, frame_step=3)
    for _ in range(50):
        w = stepped.draw()
        assert w.step == 3 and np.all(w.starts + span(10, 3) <= data[w.mouse].n_frames[w.rows])
    batch = stepped.sample()
    assert batch.video.shape[:2] == (3, 10)
    with pytest.raises(ValueError, match="spans 33 frames, more than the shortest training trial \\(30\\)"):
        WindowSampler(data, rows, 17, 3, seed=1, frame_step=2)


def test_sampler_state_resumes_the_same_windows(stores: list[Path]) -> None:
    data = load_sources(stores, mode="ram")
    rows = {m: d.rows("train") for m, d in data.items()}
    first = WindowSampler(data, rows, 8, 2, seed=3, mouse_weights="trials", frame_step=2)
    first.draw()
    saved = first.state()
    expected = [first.draw() for _ in range(4)]
    second = WindowSampler(data, rows, 8, 2, seed=99, mouse_weights="trials", frame_step=2)
    second.set_state(saved)
    for a, b in zip(expected, [second.draw() for _ in range(4)], strict=True):
        assert a.mouse == b.mouse
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.starts, b.starts)


def test_dataloader_workers_read_lazily_and_match_the_ram_path(stores: list[Path]) -> None:
    ram = load_sources(stores, mode="ram")
    lazy = load_sources(stores, mode="lazy")
    assert all(isinstance(s, ZarrMouse) for s in lazy.values())
    rows = {m: d.rows("train") for m, d in ram.items()}
    in_ram = WindowSampler(ram, rows, 9, 3, seed=11, frame_step=2)
    from_zarr = WindowSampler(lazy, rows, 9, 3, seed=11, frame_step=2)
    expected = list(in_ram.batches(6))
    got = list(from_zarr.batches(6, workers=2))
    assert [b.mouse for b in got] == [b.mouse for b in expected]
    for a, b in zip(got, expected, strict=True):
        _assert_close(a, b, video_atol=5e-3)
    assert from_zarr.state() == in_ram.state()  # draws happen in the main process only


def test_window_loader_batches_come_in_order(stores: list[Path]) -> None:
    data = load_sources(stores, mode="ram")
    windows = [Windows("mouse-b", np.array([i % 5]), np.array([i]), 4) for i in range(6)]
    batches = list(window_loader(data, windows, workers=1))
    for i, batch in enumerate(batches):
        _assert_close(batch, data["mouse-b"].window([i % 5], [i], 4))


def test_load_sources_modes(stores: list[Path]) -> None:
    assert all(isinstance(s, MouseData) for s in load_sources(stores, mode="ram").values())
    on_device = load_sources(stores, mode="device", device="cpu")
    assert all(isinstance(s, DeviceMouse) for s in on_device.values())
    with captured_logs() as notes:
        auto = load_sources(stores, mode="auto", memory_fraction=0.5)
    assert all(isinstance(s, MouseData) for s in auto.values()) and len(notes) == 2
    starved = load_sources(stores, mode="auto", memory_fraction=1e-12)
    assert all(isinstance(s, ZarrMouse) for s in starved.values())
    with pytest.raises(ConfigError, match="data mode"):
        load_sources(stores, mode="gpu")
    with pytest.raises(StoreError, match="given twice"):
        load_sources([stores[0], stores[0]], mode="lazy")


def test_iter_trials_covers_whole_trials_with_step(stores: list[Path]) -> None:
    data = load_mouse(stores[0], LABELLED)
    rows = data.rows("train", "oracle")
    seen = {}
    for chunk, batch in iter_trials(data, rows, batch_size=5, step=2):
        for row, values in zip(chunk, batch.responses.numpy(), strict=True):
            seen[int(row)] = values
    assert sorted(seen) == sorted(rows.tolist())
    for row, values in seen.items():
        n = int(data.n_frames[row])
        np.testing.assert_array_equal(values, data.responses[row, :n:2])


def test_device_mice_are_cut_in_the_main_process_beside_lazy_mice_in_workers(stores: list[Path]) -> None:
    ram = load_sources(stores, mode="ram")
    mixed = {"mouse-a": ram["mouse-a"].to_device("cpu"), "mouse-b": open_lazy(stores[1], LABELLED)}
    rows = {m: d.rows("train") for m, d in ram.items()}
    expected = list(WindowSampler(ram, rows, 6, 2, seed=4).batches(8))
    got = list(WindowSampler(mixed, rows, 6, 2, seed=4).batches(8, workers=1))
    assert [b.mouse for b in got] == [b.mouse for b in expected] and len({b.mouse for b in got}) == 2
    for a, b in zip(got, expected, strict=True):
        _assert_close(a, b, video_atol=5e-3)


def test_raw_inputs_and_targets_are_the_archive_values_in_every_source(stores: list[Path], tmp_path: Path) -> None:
    """``inputs="raw"`` / ``targets="raw"``: windows hold the store's values as recorded (videos
    at float16's resolution in RAM); the official precision rides along for scoring."""
    mouse = open_mouse(stores[0])
    frames = slice(2, 2 + span(5, 2), 2)
    raw = {m: np.asarray(mouse.array(m)[3, frames], dtype=np.float64) for m in ("videos", "behavior", "pupil_center", "responses")}
    precision = response_precision(np.asarray(mouse.statistic("responses", "std")))
    ram = load_mouse(stores[0], LABELLED, inputs="raw", targets="raw")
    lazy = open_lazy(stores[0], LABELLED, inputs="raw", targets="raw")
    for source, video_atol in ((ram, 0.07), (ram.to_device("cpu"), 0.07), (lazy, 1e-3)):
        got = _arrays(source.window([int(np.flatnonzero(source.trial_ids == mouse.trials["trial_id"][3])[0])], [2], 5, 2))
        np.testing.assert_allclose(got["videos"][0], raw["videos"], atol=video_atol)  # grey levels 0-255
        for name in ("behavior", "pupil_center", "responses"):
            np.testing.assert_allclose(got[name][0], raw[name], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(source.precision, precision[: source.precision.shape[0]], rtol=1e-6)
    # raw inputs with official targets, and the other way round, are independent choices
    mixed = load_mouse(stores[0], LABELLED, inputs="raw")
    official = _official(stores[0], 3, frames)
    row = int(np.flatnonzero(mixed.trial_ids == mouse.trials["trial_id"][3])[0])
    np.testing.assert_allclose(_arrays(mixed.window([row], [2], 5, 2))["responses"][0], official["responses"], rtol=1e-5)
    with pytest.raises(ConfigError, match="training.targets"):
        load_mouse(stores[0], LABELLED, targets="scaled")
    with pytest.raises(ConfigError, match="model.inputs"):
        load_sources(stores, inputs="normalised")


def test_withheld_tiers_are_left_out_of_the_labelled_tiers(tmp_path: Path) -> None:
    from sensorium_pipeline.training.placement import released_tiers

    path = make_store(tmp_path / "m", seed=4)
    withhold_responses(path, ["final_test_main"])  # all zero, as the new mice's test tiers
    tiers = ["train", "oracle", "live_test_main", "final_test_main"]
    with captured_logs() as notes:
        assert released_tiers(open_mouse(path), tiers) == tiers[:3]
    assert len(notes) == 1 and "final_test_main" in notes[0] and "withheld" in notes[0]
    sources = load_sources([path], lambda store: released_tiers(store, tiers), mode="ram")
    assert sorted(set(sources["mouse-a"].tiers)) == ["live_test_main", "oracle", "train"]


def test_mixed_and_cycle_steps_group_windows_by_mouse(stores: list[Path]) -> None:
    data = load_sources(stores, mode="ram")
    rows = {m: d.rows("train") for m, d in data.items()}
    mixed = WindowSampler(data, rows, 8, 400, seed=2, batching="mixed")
    step = mixed.draw_step()
    assert [w.mouse for w in step] == sorted(rows) and sum(len(w.rows) for w in step) == 400
    assert abs(len(step[0].rows) / 400 - 0.5) < 0.1  # each window's mouse drawn uniformly
    assert all(w.partners is None for w in step)
    cycle = WindowSampler(data, rows, 8, 3, seed=2, batching="cycle")
    assert [(w.mouse, len(w.rows)) for w in cycle.draw_step()] == [("mouse-a", 3), ("mouse-b", 3)]
    groups = next(cycle.steps(1))
    assert [(w.mouse, len(b)) for w, b in groups] == [("mouse-a", 3), ("mouse-b", 3)]
    with pytest.raises(ValueError, match="batching"):
        WindowSampler(data, rows, 8, 3, seed=2, batching="shuffled")
