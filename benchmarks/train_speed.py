"""Training speed of each model config: parameters, training samples per second, peak memory.

One training step = forward + Poisson loss + backward + AdamW step on a batch of windows of
the config's own length (``training.window_frames`` model frames, ``training.batch_size``
windows) of random inputs, one mouse per batch, mice in turn. The figure is the median of
``--steps`` timed steps after ``--warmup`` untimed ones. Each config runs in a fresh
subprocess, so peak memory is its own: CUDA ``max_memory_allocated`` on a GPU, the process's
peak resident set size on a CPU (which includes Python and torch, ~0.3 GB).

    .venv/bin/python benchmarks/train_speed.py dwiseneuro_cpu gru_cpu demo_cpu      # CPU
    .venv/bin/python benchmarks/train_speed.py --device cuda --compile --channels-last --bf16 \
        --mice 10 --neurons 8000 baseline_factorized3d baseline_gru dwiseneuro        # GPU

Without names it runs every ``config/models/*.yaml``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="names in config/models (or paths to YAML files); default: all")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--compile", action="store_true", help="torch.compile the core (models.compile_core)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last weights (models.channels_last)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--mice", type=int, default=2, help="mice (readouts) in the model")
    parser.add_argument("--neurons", type=int, default=500, help="neurons per mouse")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's training.batch_size")
    parser.add_argument("--window", type=int, default=None, help="default: the config's training.window_frames")
    parser.add_argument("--steps", type=int, default=7, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one config in this process
    return parser.parse_args(argv)


def _config_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path
    return ROOT / "config" / "models" / f"{name}.yaml"


def measure(path: Path, args: argparse.Namespace) -> dict:
    """Build the model of ``path`` and time its training steps (in this process)."""
    import numpy as np
    import torch

    from sensorium_pipeline.models import MouseMeta, build_model, channels_last, compile_core
    from sensorium_pipeline.training.train import load_model_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_config, train_config = load_model_file(path)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    mice = [
        MouseMeta(f"mouse{i}", np.arange(1, args.neurons + 1), rng.uniform(0, 500, (args.neurons, 3)))
        for i in range(args.mice)
    ]
    model = build_model(model_config, mice).to(device).train()
    if args.channels_last:
        channels_last(model)
    if args.compile:
        compile_core(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = args.batch_size or train_config.batch_size
    window = args.window or train_config.window_frames
    gen = torch.Generator(device="cpu").manual_seed(0)
    video = torch.randn(batch, window, 36, 64, generator=gen).to(device)
    behavior = torch.randn(batch, window, 2, generator=gen).to(device)
    pupil = torch.randn(batch, window, 2, generator=gen).to(device)
    target = torch.rand(batch, window, args.neurons, generator=gen).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(i: int) -> float:
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = model(video, behavior, pupil, mice[i % len(mice)].name)
        out = out.float()
        loss = (out - target * torch.log(out + 1e-8)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for i in range(args.warmup):
        step(i)
    times = [step(i) for i in range(args.steps)]
    median = statistics.median(times)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        memory = "cuda max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        memory = "peak RSS"
    return {
        "config": path.stem,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "window_frames": window,
        "frame_step": model.frame_step,
        "step_s_median": median,
        "samples_per_s": batch / median,
        "peak_memory_gib": peak / 2**30,
        "memory": memory,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{args.threads} threads",
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.one:
        print(json.dumps(measure(Path(args.one), args)))
        return 0
    names = args.configs or sorted(p.stem for p in (ROOT / "config" / "models").glob("*.yaml"))
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in args.configs]
    rows = []
    for name in names:
        path = _config_path(name)
        if not path.is_file():
            print(f"{path}: no such model config", file=sys.stderr)
            return 2
        result = subprocess.run(
            [sys.executable, __file__, *passthrough, "--one", str(path)], check=False, capture_output=True, text=True
        )
        if result.returncode != 0:
            print(f"{name}: failed\n{result.stderr[-3000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    flags = " ".join(f for f in ("--compile", "--channels-last", "--bf16") if getattr(args, f[2:].replace("-", "_")))
    print(
        f"device: {rows[0]['device']}; {args.mice} mice x {args.neurons} neurons; flags: {flags or 'none'}; "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    print(f"{'config':<24}{'params':>12}{'batch x frames':>16}{'step s':>9}{'samples/s':>11}{'peak GiB':>10}")
    for r in rows:
        shape = f"{r['batch']} x {r['window_frames']}" + (f"/{r['frame_step']}" if r["frame_step"] > 1 else "")
        print(
            f"{r['config']:<24}{r['parameters']:>12,}{shape:>16}{r['step_s_median']:>9.3f}"
            f"{r['samples_per_s']:>11.1f}{r['peak_memory_gib']:>10.2f}"
        )
    print(f"(peak memory: {rows[0]['memory']})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
