"""Training-window throughput of the loader against per-trial ``.npy`` files, on one simulated full-size mouse.

In one run, on the same mouse and the same windows (one sampler seed), it measures windows per second of:

- ``ram``: :class:`~sensorium_pipeline.data.sources.MouseData` (whole mouse in RAM, compact), cut in the main process;
- ``lazy``: :class:`~sensorium_pipeline.data.sources.ZarrMouse` read from the converted store by ``--workers``
  ``DataLoader`` workers (each opens its own store handle);
- ``device``: :class:`~sensorium_pipeline.data.sources.DeviceMouse` on the GPU (only where CUDA is available);
- ``npy``: a per-trial file reader as the official loader (neuralpredictors' file-tree dataset) works:
  per window, ``np.load`` the trial's ``videos/i.npy``, ``responses/i.npy``, ``behavior/i.npy`` and
  ``pupil_center/i.npy`` from the archive's member tree (extracted once, cached beside the archive),
  normalise the whole usable trial, then cut the window; in the main process and with ``--workers``
  workers. ``npy-window`` normalises only the window (a lower bound on any per-trial reader's cost);
- ``train``: the windows per second the largest model config in ``config/models`` (most core parameters)
  consumes: forward + Poisson loss + backward + AdamW step on batches from the loader, on the CPU with
  ``--threads`` threads, on its own windows.

Loaders are measured on two window geometries: the largest config's (DwiseNeuro: 16 frames every 2nd,
batches of 32) and the official baseline's (80 frames, batches of 8). It prints the medians over ``--repeats`` runs and the ratios (median of the per-run ratios). The page
cache is warmed for the ``.npy`` files first, so the per-trial reader is measured at its best.

    .venv/bin/python -m benchmarks.loader_speed --repeats 3
    .venv/bin/python benchmarks/loader_speed.py --trials 60 --repeats 1 --train-steps 1   # a quick look

neuralpredictors' own dataset is not run: its only PyPI release (0.3.0) does not import on Python >= 3.10
(see ``NEURALPREDICTORS``), so the plain reader above reproduces what its ``FileTreeDataset`` does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sensorium_pipeline.atomic import atomic_path, write_text_atomic
from sensorium_pipeline.data.normalize import behavior_scale, response_precision, video_normalizer
from sensorium_pipeline.data.normalizer import Normalizer
from sensorium_pipeline.data.sources import Batch, MouseData, ZarrMouse, load_mouse, open_lazy, span
from sensorium_pipeline.training.sampler import WindowSampler

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))
from benchmarks.fullsize import CACHE_DIR, fullsize_archive, fullsize_store  # noqa: E402

TREE_NAME = "npy-tree"
NEURALPREDICTORS = (
    "neuralpredictors==0.3.0 (its only PyPI release) installs with --no-deps next to torch 2.13.0 but does not "
    "import on Python 3.11: neuralpredictors/data/transforms.py does 'from collections import Iterable' "
    "(removed in Python 3.10), and the package also needs h5py, scipy and scikit-image; its FileTreeDataset "
    "does np.load of every data key per item, then its transforms, which the 'npy' reader reproduces"
)


# --- the per-trial .npy reader -------------------------------------------------------------


def extract_tree(archive: Path, target: Path) -> Path:
    """The archive's member tree under ``target`` (extracted once, atomically); returns the mouse folder."""
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.startswith("__MACOSX/")]
        root = names[0].split("/")[0]
        if not (target / root).is_dir():
            print(f"extracting {archive} -> {target} (once)", file=sys.stderr, flush=True)
            with atomic_path(target) as tmp:
                tmp.mkdir()
                zf.extractall(tmp, members=names)
    return target / root


@dataclass
class NpyTrialReader:
    """Windows read from per-trial ``.npy`` files (time LAST), the way the official file-tree loader does.

    ``whole_trial``: normalise the usable part of the trial, then cut the window (the official
    transform order: normaliser, then subsequence); otherwise normalise only the window.
    """

    mouse: str
    folder: Path
    trial_ids: np.ndarray
    n_frames: np.ndarray
    normalizer: Normalizer
    whole_trial: bool = True

    @classmethod
    def of(cls, folder: Path, like: ZarrMouse, whole_trial: bool = True) -> NpyTrialReader:
        """A reader of the same trials as ``like``, normalised from the tree's own statistics."""
        length = int(like.n_frames.max())

        def stat(modality: str, name: str) -> np.ndarray:
            raw = np.load(folder / "meta" / "statistics" / modality / "all" / f"{name}.npy")
            return np.moveaxis(raw, -1, 0)[:length].astype(np.float64)  # time-major, as the store

        v_offset, v_scale = video_normalizer(np.nan_to_num(stat("videos", "mean")), np.nan_to_num(stat("videos", "std")))
        p_offset, p_scale = video_normalizer(
            np.nan_to_num(stat("pupil_center", "mean")), np.nan_to_num(stat("pupil_center", "std"))
        )
        full_std = np.moveaxis(np.load(folder / "meta" / "statistics" / "responses" / "all" / "std.npy"), -1, 0)
        normalizer = Normalizer(
            v_offset,
            v_scale,
            behavior_scale(np.nan_to_num(stat("behavior", "std"))),
            p_offset,
            p_scale,
            np.nan_to_num(response_precision(full_std)[:length]),
        )
        return cls(like.mouse, folder, like.trial_ids, like.n_frames, normalizer, whole_trial)

    def _load(self, modality: str, trial_id: int) -> np.ndarray:
        return np.load(self.folder / "data" / modality / f"{trial_id}.npy")

    def window(self, rows: Any, starts: Any, length: int, step: int = 1, **_: Any) -> Batch:
        out: dict[str, list[np.ndarray]] = {m: [] for m in ("videos", "behavior", "pupil_center", "responses")}
        for row, start in zip(np.asarray(rows), np.asarray(starts), strict=True):
            usable = int(self.n_frames[row])
            frames = slice(int(start), int(start) + span(length, step), step)
            for modality, values in out.items():
                raw = np.moveaxis(self._load(modality, int(self.trial_ids[row])), -1, 0)  # time first
                if self.whole_trial:
                    trial = self.normalizer.apply(modality, raw[:usable], slice(0, usable))
                    values.append(trial[frames])
                else:
                    values.append(self.normalizer.apply(modality, raw[frames], frames))
        stack = {m: torch.from_numpy(np.stack(v).astype(np.float32, copy=False)) for m, v in out.items()}
        return Batch(self.mouse, stack["videos"], stack["behavior"], stack["pupil_center"], stack["responses"])


def warm_page_cache(reader: NpyTrialReader, rows: np.ndarray) -> None:
    """Read every training trial's files once, so the per-trial reader is timed from the page cache."""
    for row in np.unique(rows):
        for modality in ("videos", "behavior", "pupil_center", "responses"):
            (reader.folder / "data" / modality / f"{int(reader.trial_ids[row])}.npy").read_bytes()


# --- measurements -----------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    window: int
    step: int
    batch: int


def loader_rate(source: Any, rows: np.ndarray, geometry: Geometry, batches: int, workers: int, seed: int) -> float:
    """Windows per second of ``batches`` batches of ``source`` (float32 tensors, as the model takes them)."""
    sampler = WindowSampler({source.mouse: source}, {source.mouse: rows}, geometry.window, geometry.batch, seed,
                            frame_step=geometry.step)
    device = getattr(source, "device", torch.device("cpu"))
    start = time.perf_counter()
    windows = 0
    for batch in sampler.batches(batches, device=device, workers=workers):
        windows += len(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return windows / (time.perf_counter() - start)


def largest_config(mouse: MouseData) -> tuple[Path, Any, Any]:
    """The config in ``config/models`` whose core has the most parameters (the slowest to train)."""
    from sensorium_pipeline.models import MouseMeta, build_model
    from sensorium_pipeline.training.train import load_model_file

    meta = [MouseMeta(mouse.mouse, mouse.unit_ids, mouse.coordinates)]
    best: tuple[int, Path, Any, Any] | None = None
    for path in sorted((ROOT / "config" / "models").glob("*.yaml")):
        model_config, train_config = load_model_file(path)
        model = build_model(model_config, meta)
        core = getattr(model, "core", model)
        size = sum(p.numel() for p in core.parameters())
        if best is None or size > best[0]:
            best = (size, path, model_config, train_config)
    assert best is not None, "config/models holds no model config"
    return best[1], best[2], best[3]


def train_rates(model: torch.nn.Module, mouse: MouseData, rows: np.ndarray, geometry: Geometry, steps: int,
                seed: int) -> list[float]:
    """Windows per second consumed by each of ``steps`` steps of forward + Poisson loss + backward + AdamW.

    No untimed warm-up step: on a CPU a step of the baseline takes minutes, and its one-off
    allocations are small beside that (the per-step figures are printed, so a slow first one shows).
    """
    sampler = WindowSampler({mouse.mouse: mouse}, {mouse.mouse: rows}, geometry.window, geometry.batch, seed,
                            frame_step=geometry.step)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    rates = []
    for batch in sampler.batches(steps):
        start = time.perf_counter()
        out = model(batch.video, batch.behavior, batch.pupil_center, batch.mouse)
        loss = (out - batch.responses * torch.log(out + 1e-8)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rates.append(len(batch) / (time.perf_counter() - start))
    return rates


def _median_ratio(runs: list[dict[str, float]], a: str, b: str) -> float:
    return statistics.median(r[a] / r[b] for r in runs)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("--trials", type=int, default=700, help="trials of the simulated mouse")
    parser.add_argument("--neurons", type=int, default=8000, help="neurons of the simulated mouse")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--archive", type=Path, help="use this archive instead of the simulated one (with --store)")
    parser.add_argument("--store", type=Path, help="its converted store")
    parser.add_argument("--windows", type=int, default=640, help="windows per measurement of the in-RAM/GPU loaders")
    parser.add_argument("--npy-windows", type=int, default=96,
                        help="windows per measurement of the slower readers (lazy Zarr, .npy)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the lazy and npy modes")
    parser.add_argument("--response-dtype", default="float32", choices=("float32", "float16"))
    parser.add_argument("--train-steps", type=int, default=2,
                        help="timed training steps, once after the loader runs (0: skip); their median is reported")
    parser.add_argument("--train-batch", type=int, default=2,
                        help="windows per training step (0: the config's batch_size). On a CPU DwiseNeuro needs "
                        "about 2 GiB per window (4.2 GiB peak at 2, 8.3 GiB at 4), so its batch of 32 does not fit")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of the training step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if (args.archive is None) != (args.store is None):
        parser.error("--archive and --store go together")
    return args


#: The official baseline's windows (docs/models.md): 80 frames, batches of 8; always measured beside the
#: largest config's own windows, whose length may differ (DwiseNeuro: 16 frames every 2nd).
BASELINE_GEOMETRY = Geometry(window=80, step=1, batch=8)


def measure_geometry(
    sources: dict[str, Any], rows: np.ndarray, geometry: Geometry, args: argparse.Namespace
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per-run windows/s of every reader for one window geometry, and the median of each."""
    fast = max(1, -(-args.windows // geometry.batch))
    slow = max(1, -(-args.npy_windows // geometry.batch))
    modes: dict[str, Callable[[int], float]] = {
        "ram": lambda s: loader_rate(sources["ram"], rows, geometry, fast, 0, s),
        "lazy": lambda s: loader_rate(sources["lazy"], rows, geometry, slow, args.workers, s),
        "npy": lambda s: loader_rate(sources["npy"], rows, geometry, slow, 0, s),
        "npy-workers": lambda s: loader_rate(sources["npy"], rows, geometry, slow, args.workers, s),
        "npy-window": lambda s: loader_rate(sources["npy-window"], rows, geometry, slow, 0, s),
    }
    if "device" in sources:
        modes["device"] = lambda s: loader_rate(sources["device"], rows, geometry, fast, 0, s)
    runs: list[dict[str, float]] = []
    for repeat in range(args.repeats):
        run = {}
        for name, measure in modes.items():
            run[name] = measure(args.seed + repeat)
            print(f"{geometry}: run {repeat + 1}/{args.repeats}: {name:12s} {run[name]:10.1f} windows/s",
                  file=sys.stderr, flush=True)
        runs.append(run)
    return runs, {name: statistics.median(r[name] for r in runs) for name in modes}


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    torch.set_num_threads(args.threads)
    if args.archive is None:
        archive = fullsize_archive(args.cache_dir, trials=args.trials, neurons=args.neurons)
        store = fullsize_store(args.cache_dir, trials=args.trials, neurons=args.neurons)
    else:
        archive, store = args.archive, args.store
    tree = extract_tree(archive, archive.parent / TREE_NAME)

    started = time.perf_counter()
    ram = load_mouse(store, ("train",), response_dtype=args.response_dtype)
    load_s = time.perf_counter() - started
    lazy = open_lazy(store, ("train",))
    rows = np.arange(ram.n_trials)
    config_path, model_config, train_config = largest_config(ram)
    from sensorium_pipeline.models import MouseMeta, build_model

    torch.manual_seed(args.seed)
    model = build_model(model_config, [MouseMeta(ram.mouse, ram.unit_ids, ram.coordinates, ram.mean_response(rows))])
    largest = Geometry(train_config.window_frames, int(getattr(model, "frame_step", 1)), train_config.batch_size)
    geometries = [largest] + ([BASELINE_GEOMETRY] if BASELINE_GEOMETRY != largest else [])

    sources: dict[str, Any] = {
        "ram": ram,
        "lazy": lazy,
        "npy": NpyTrialReader.of(tree, lazy, whole_trial=True),
        "npy-window": NpyTrialReader.of(tree, lazy, whole_trial=False),
    }
    if torch.cuda.is_available():
        sources["device"] = ram.to_device("cuda")
    for geometry in geometries:
        _check_same_windows(ram, [sources[k] for k in ("lazy", "npy", "npy-window")], geometry, args.seed)
    warm_page_cache(sources["npy"], rows)

    results = []
    for geometry in geometries:
        runs, medians = measure_geometry(sources, rows, geometry, args)
        ratios = {
            "ram / npy": _median_ratio(runs, "ram", "npy"),
            "ram / npy-window": _median_ratio(runs, "ram", "npy-window"),
            f"lazy ({args.workers} workers) / npy ({args.workers} workers)": _median_ratio(runs, "lazy", "npy-workers"),
            f"lazy ({args.workers} workers) / npy": _median_ratio(runs, "lazy", "npy"),
        }
        if "device" in medians:
            ratios["device / npy"] = _median_ratio(runs, "device", "npy")
        results.append({
            "window_frames": geometry.window,
            "frame_step": geometry.step,
            "batch_size": geometry.batch,
            "of": config_path.name if geometry == largest else "official baseline",
            "windows_per_s": {k: round(v, 2) for k, v in medians.items()},
            "ratios": {k: round(v, 1) for k, v in ratios.items()},
            "runs": runs,
        })

    train: list[float] = []
    if args.train_steps > 0:
        train_geometry = Geometry(largest.window, largest.step, args.train_batch or largest.batch)
        train = train_rates(model, ram, rows, train_geometry, args.train_steps, args.seed)
        print(f"training steps: {', '.join(f'{r:.3f}' for r in train)} windows/s", file=sys.stderr, flush=True)
        medians = results[0]["windows_per_s"]
        rate = statistics.median(train)
        results[0]["ratios"]["ram / train"] = round(medians["ram"] / rate, 1)
        results[0]["ratios"][f"lazy ({args.workers} workers) / train"] = round(medians["lazy"] / rate, 1)
    report = {
        "mouse": ram.mouse,
        "train_trials": int(ram.n_trials),
        "neurons": int(ram.n_neurons),
        "workers": args.workers,
        "response_dtype": args.response_dtype,
        "ram_load_s": round(load_s, 1),
        "ram_gib": round(ram.nbytes / 2**30, 2),
        "model_config": config_path.name,
        "threads": args.threads,
        "repeats": args.repeats,
        "geometries": results,
        "train_batch": (args.train_batch or largest.batch) if train else None,
        "train_windows_per_s": [round(r, 4) for r in train],
        "train_median": round(statistics.median(train), 4) if train else None,
        "neuralpredictors": "not run: " + NEURALPREDICTORS,
    }
    _print(report)
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def _check_same_windows(ram: MouseData, others: Sequence[Any], geometry: Geometry, seed: int) -> None:
    """Every reader must cut the same values from the same windows, or the race means nothing."""
    rows = np.arange(ram.n_trials)
    sampler = WindowSampler({ram.mouse: ram}, {ram.mouse: rows}, geometry.window, geometry.batch, seed,
                            frame_step=geometry.step)
    w = sampler.draw()
    expected = ram.window(w.rows, w.starts, w.length, w.step)
    for other in others:
        got = other.window(w.rows, w.starts, w.length, w.step)
        for name in ("video", "behavior", "pupil_center", "responses"):
            a, b = getattr(expected, name).numpy(), getattr(got, name).numpy()
            tolerance = 1e-2 if name == "video" or ram.responses.dtype == np.float16 else 1e-4
            if not np.allclose(a, b, rtol=tolerance, atol=tolerance):
                raise AssertionError(f"{type(other).__name__} cuts other {name} values than MouseData")


def _print(report: dict) -> None:
    workers = report["workers"]
    labels = {
        "ram": "in RAM (MouseData), main process",
        "device": "on the GPU (DeviceMouse)",
        "lazy": f"lazy Zarr (ZarrMouse), DataLoader {workers} workers",
        "npy": "per-trial .npy, official order, main process",
        "npy-workers": f"per-trial .npy, official order, {workers} workers",
        "npy-window": "per-trial .npy, window-only normalisation",
    }
    print(
        f"mouse {report['mouse']}: {report['train_trials']} train trials, {report['neurons']} neurons; responses "
        f"{report['response_dtype']}, {report['ram_gib']} GiB in RAM (loaded in {report['ram_load_s']} s); "
        f"medians of {report['repeats']} runs"
    )
    for g in report["geometries"]:
        print(f"windows of {g['window_frames']} frames (step {g['frame_step']}), batches of {g['batch_size']} "
              f"({g['of']}):")
        for name, value in g["windows_per_s"].items():
            print(f"  {labels[name]:58s} {value:10.2f} windows/s")
        for name, value in g["ratios"].items():
            print(f"  {name:58s} {value:10.1f} x")
    if report["train_median"] is not None:
        steps = len(report["train_windows_per_s"])
        print(f"training {report['model_config']} ({steps} steps of {report['train_batch']} of its windows, "
              f"{report['threads']} CPU threads): "
              f"{report['train_median']:.4f} windows/s")
    print(f"neuralpredictors: {report['neuralpredictors']}")


if __name__ == "__main__":
    raise SystemExit(main())
