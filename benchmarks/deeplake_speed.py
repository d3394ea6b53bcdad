"""Deep Lake export and ingest against the archive conversion, side by side, on a simulated mouse.

    .venv/bin/python benchmarks/deeplake_speed.py --trials 60 --neurons 2000 --repeats 3   # a quick run
    .venv/bin/python benchmarks/deeplake_speed.py --repeats 3                              # full size

Each repeat times, one after the other in this process: (1) ``convert_archive`` of the
simulated archive (the usual way to a store), (2) ``export_deeplake`` of that store to a
local Deep Lake folder, (3) ``ingest_deeplake`` of the folder back into a store. It prints
the wall times and the ratios ``export / convert`` and ``ingest / convert``, then their
medians over the repeats. It also times one ``append`` (and ``commit``) of 2 trials' videos to a fresh Deep
Lake dataset with the dtype spelt ``<f4`` (as zarr returns arrays) and ``float32`` (same
bits), and prints the median ratio: the reason ``deeplake_io`` re-creates every sample.
The archive is simulated once and cached (``benchmarks/fullsize.py``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from benchmarks.fullsize import CACHE_DIR, MOUSE, fullsize_archive  # noqa: E402
from sensorium_pipeline.data.convert import convert_archive, file_sha256  # noqa: E402
from sensorium_pipeline.data.deeplake_io import export_deeplake, ingest_deeplake  # noqa: E402
from sensorium_pipeline.data.store import open_mouse  # noqa: E402


def timed(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def append_seconds(videos: np.ndarray, folder: Path) -> float:
    """One ``append`` + ``commit`` of ``videos`` (trials, 1, T, 36, 64) as samples to a fresh dataset."""
    import deeplake

    ds = deeplake.create(str(folder))
    ds.add_column("videos", deeplake.types.Array(videos.dtype.name, dimensions=4))
    start = time.perf_counter()
    ds.append({"videos": list(videos)})
    ds.commit()  # append may hand work to a background writer: time until it is on disk
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=700)
    parser.add_argument("--neurons", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="conversion threads")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    args = parser.parse_args()
    archive = fullsize_archive(args.cache_dir, trials=args.trials, neurons=args.neurons)
    checksum = file_sha256(archive)
    export_ratios, ingest_ratios, dtype_ratios = [], [], []
    with tempfile.TemporaryDirectory(dir=args.cache_dir) as scratch:
        scratch = Path(scratch)
        for repeat in range(args.repeats):
            for name in ("converted", "dataset", "ingested", "spelt", "native"):
                shutil.rmtree(scratch / name, ignore_errors=True)
            convert = timed(
                convert_archive, archive, scratch / "converted" / MOUSE, sha256=checksum, workers=args.workers
            )
            export = timed(export_deeplake, scratch / "converted" / MOUSE, scratch / "dataset")
            ingest = timed(ingest_deeplake, scratch / "dataset", scratch / "ingested" / MOUSE)
            spelt = np.asarray(open_mouse(scratch / "converted" / MOUSE).array("videos")[:2])[:, np.newaxis]
            native = np.empty(spelt.shape, dtype=np.float32)
            native[...] = spelt
            slow = append_seconds(spelt, scratch / "spelt")  # zarr spells its dtype "<f4"
            fast = append_seconds(native, scratch / "native")
            export_ratios.append(export / convert)
            ingest_ratios.append(ingest / convert)
            dtype_ratios.append(slow / fast)
            print(
                f"repeat {repeat}: convert {convert:.2f} s, export {export:.2f} s ({export / convert:.2f}x), "
                f"ingest {ingest:.2f} s ({ingest / convert:.2f}x); append+commit of 2 videos: '<f4' {slow:.4f} s, "
                f"float32 {fast:.4f} s ({slow / fast:.0f}x)",
                flush=True,
            )
    print(
        f"median over {args.repeats} repeats ({args.trials} trials, {args.neurons} neurons): "
        f"export/convert {statistics.median(export_ratios):.2f}, ingest/convert {statistics.median(ingest_ratios):.2f}, "
        f"append '<f4'/float32 {statistics.median(dtype_ratios):.0f}"
    )


if __name__ == "__main__":
    main()
