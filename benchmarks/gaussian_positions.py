"""Does the Gaussian readout's score depend on where it reads? One fold of a Gaussian-readout
config trained twice on the benchmark mice: once as configured (positions predicted from the
cortical coordinates and learnt), once with every neuron's position pinned to its simulated
receptive-field centre (the ground truth, mapped onto the core's output map; jitter 0.05).

If pinning the positions to the truth does not raise the validation correlation, the positions
are not what limits the model (the features read at a point are); if it does, learning the
positions is. Also printed: how far the learnt positions end from the truth.

    .venv/bin/python benchmarks/gaussian_positions.py [--model baseline_cpu] [--workdir DIR]

The simulated mice come from ``--configfile`` (default ``config/benchmark.yaml``) and are
converted in ``--workdir`` (default ``benchmarks/.cache/model_quality``, shared with
``model_quality.py``) if they are not there yet. About 2 × 4 min on 2 idle cores.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sensorium_pipeline.layout import VIDEO_HEIGHT, VIDEO_WIDTH  # noqa: E402
from sensorium_pipeline.models import load_trained  # noqa: E402
from sensorium_pipeline.models.readouts import GaussianReadout  # noqa: E402
from sensorium_pipeline.simulate.config import SimulationConfig  # noqa: E402
from sensorium_pipeline.simulate.generate import build_population  # noqa: E402
from sensorium_pipeline.training.train import load_model_file, train  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from model_quality import _run as run_dag  # noqa: E402  (the benchmark DAG's one snakemake call)


class PinnedPositions(torch.nn.Module):
    """Stands in for a readout's position network: the same ``(N, 2)`` positions for any input."""

    def __init__(self, positions: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("grid", torch.as_tensor(positions, dtype=torch.float32))

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        return self.grid


def core_window(model_config) -> tuple[int, int]:
    """``(downsample, lost)``: the model's downsampling and the pixels of the downsampled frame
    its unpadded kernels take off each side of the core's map; factorized 3D cores only."""
    core = model_config.core
    if core.type != "factorized3d":
        raise SystemExit(f"gaussian_positions: needs a factorized3d core, the config has {core.type}")
    lost = 0 if core.padding else sum((k - 1) // 2 for k in core.spatial_kernels)
    return int(model_config.downsample), lost


def true_grid(rf_center: np.ndarray, downsample: int, lost: int) -> np.ndarray:
    """``(N, 2)`` receptive-field centres (video pixels, (y, x)) as grid positions (x, y) on the
    core's output map (-1 and 1 are its first and last pixel centres, as the readout samples)."""
    h, w = VIDEO_HEIGHT // downsample - 2 * lost, VIDEO_WIDTH // downsample - 2 * lost
    pixel = (rf_center - (downsample - 1) / 2) / downsample - lost  # map pixel coordinates
    return np.stack([pixel[:, 1] / (w - 1) * 2 - 1, pixel[:, 0] / (h - 1) * 2 - 1], axis=1)


def _stores(configfile: Path, workdir: Path, config: dict, cores: int) -> list[Path]:
    mice = [m["name"] for m in config["mice"]]
    stores = [workdir / "results" / "data" / m for m in mice]
    if not all(s.exists() for s in stores) and not run_dag(
            workdir, configfile.resolve(), [f"results/data/{m}" for m in mice], str(cores)):
        raise SystemExit("gaussian_positions: converting the benchmark mice failed")
    return stores


def _best(metrics: Path) -> tuple[float, list[float]]:
    with metrics.open() as f:
        curve = [float(r["val_correlation"]) for r in csv.DictReader(f)]
    return max(curve), curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="baseline_cpu")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "config" / "models")
    parser.add_argument("--configfile", type=Path, default=ROOT / "config" / "benchmark.yaml")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".cache" / "model_quality")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = yaml.safe_load(args.configfile.read_text())
    stores = _stores(args.configfile, args.workdir, config, args.cores)
    model_config, train_config = load_model_file(args.model_dir / f"{args.model}.yaml", seed=args.seed,
                                                 threads=args.cores, device="cpu")
    downsample, lost = core_window(model_config)
    truth = {}
    for mouse in config["mice"]:
        settings = {**config.get("simulation", {}).get("defaults", {}), **mouse.get("simulation", {}),
                    "mouse": mouse["name"]}
        population, _ = build_population(SimulationConfig.from_dict(settings))
        truth[mouse["name"]] = true_grid(population.rf_center, downsample, lost)

    def pin(model) -> None:
        for name, grid in truth.items():
            readout = model.readout(name)
            if not isinstance(readout, GaussianReadout):
                raise SystemExit(f"gaussian_positions: {args.model} has no Gaussian readout")
            readout.positions = PinnedPositions(np.clip(grid, -1.0, 1.0))
            with torch.no_grad():
                readout.sigma.uniform_(-0.05, 0.05)

    out = args.workdir / "gaussian_positions" / args.model
    results = {}
    for variant, hook in (("learnt", None), ("pinned to the truth", pin)):
        run_dir = out / variant.split()[0]
        train([str(s) for s in stores], model_config, train_config, fold=0, n_folds=5,
              out_model=run_dir / "model.pt", out_metrics_csv=run_dir / "metrics.csv",
              checkpoint_dir=run_dir / "checkpoints", prepare_model=hook)
        results[variant] = _best(run_dir / "metrics.csv")

    print(f"{args.model}, fold 0, seed {args.seed}: best validation correlation (per-epoch curve)")
    for variant, (best, curve) in results.items():
        print(f"  positions {variant:20s} {best:.4f}  ({', '.join(f'{v:.3f}' for v in curve)})")
    learnt, pinned = results["learnt"][0], results["pinned to the truth"][0]
    print(f"  pinned / learnt: {pinned / learnt:.2f}" if learnt > 0 else "  learnt positions did not learn")

    trained = load_trained(out / "learnt" / "model.pt").model
    print("learnt positions against the truth (grid units of the core's map, inside the map only):")
    for name, grid in truth.items():
        with torch.no_grad():
            mu = trained.readout(name).mean_positions().numpy()
        inside = (np.abs(grid) <= 1).all(axis=1)
        error = np.median(np.linalg.norm(mu[inside] - grid[inside], axis=1))
        print(f"  {name}: {inside.mean():.0%} of the fields inside the map; true mean {grid[inside].mean(0).round(2)}"
              f" spread {grid[inside].std(0).round(2)}; learnt mean {mu.mean(0).round(2)} spread "
              f"{mu.std(0).round(3)}; median distance {error:.2f}")


if __name__ == "__main__":
    main()
