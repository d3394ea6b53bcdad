"""Conversion speed against merely reading the archive, side by side, on a simulated full-size mouse.

    .venv/bin/python benchmarks/convert_speed.py --repeats 3              # ~700 trials x 8,000 neurons
    .venv/bin/python benchmarks/convert_speed.py --trials 60 --repeats 3  # a quick run
    .venv/bin/python benchmarks/convert_speed.py --compression none       # one codec setting only

Each repeat runs, in fresh child processes one after the other, (1) the raw read: every
member of the zip read and decompressed (CRC checked) into a numpy array with plain
``zipfile`` and numpy, by the same number of worker threads, each with its own zip handle,
which is what any conversion must at least do; (2) the conversion of the same archive into a
Zarr store (``convert_archive``, with the checksum given, as the workflow does), once per
``--compression`` setting (``conversion.compression``: ``lz4``, the default, and ``none``);
and (3) the **copy**: the raw read that also writes every member's bytes unchanged to a file,
i.e. the disk writes of an uncompressed store without any of a conversion's work: the I/O
floor of a conversion on this machine. The archive is read once before each repeat, so that
every step finds it in the page cache.
It prints the wall times, each conversion's ratio ``raw / conversion`` (1.0 = conversion as
fast as reading), peak RSS and store size, then the median ratio per setting. The archive and its store
are simulated once and cached (``benchmarks/fullsize.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import local

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from benchmarks.fullsize import CACHE_DIR, fullsize_archive  # noqa: E402
from sensorium_pipeline.data.convert import convert_archive, file_sha256  # noqa: E402
from sensorium_pipeline.data.store_writer import COMPRESSIONS  # noqa: E402


def read_every_member(archive: Path, workers: int, copy_to: Path | None = None) -> int:
    """Read and decompress every ``.npy`` member into an array; return the bytes read.
    With ``copy_to``, also write each member's array bytes unchanged to a file there."""
    handles = local()

    def handle() -> zipfile.ZipFile:
        if not hasattr(handles, "zip"):
            handles.zip = zipfile.ZipFile(archive)
        return handles.zip

    def read(info: zipfile.ZipInfo) -> int:
        with handle().open(info) as stream:
            version = np.lib.format.read_magic(stream)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(stream)
            data = stream.read()  # to the end, where zipfile checks the CRC
        array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
        if copy_to is not None:
            with open(copy_to / f"{info.header_offset}.bin", "wb", buffering=0) as out:
                view = memoryview(array).cast("B")
                while view:
                    view = view[out.write(view) :]
        return array.nbytes

    with zipfile.ZipFile(archive) as listing:
        members = [i for i in listing.infolist() if i.filename.endswith(".npy")]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(read, members))


def _child(args: argparse.Namespace) -> None:
    """Run one measured step in this (fresh) process and print its result as JSON."""
    archive = Path(args.archive)
    start = time.perf_counter()
    if args.child == "raw":
        detail = {"bytes": read_every_member(archive, args.workers)}
    elif args.child == "copy":
        Path(args.out).mkdir(parents=True)
        detail = {"bytes": read_every_member(archive, args.workers, copy_to=Path(args.out))}
    else:
        summary = convert_archive(
            archive, Path(args.out), sha256=args.sha256, workers=args.workers,
            verify_trials=args.verify_trials, compression=args.child_compression,
        )  # fmt: skip
        size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
        detail = {"verified_trials": summary["verified_trials"], "store_bytes": size}
    print(json.dumps({"seconds": time.perf_counter() - start, **detail}))


def _run_child(
    kind: str, args: argparse.Namespace, archive: Path, sha256: str, out: Path, compression: str = "none"
) -> tuple[dict, float]:
    """Run a child step; return its JSON result and its peak RSS in MiB."""
    command = [
        sys.executable, __file__, "--child", kind, "--archive", str(archive), "--out", str(out),
        "--sha256", sha256, "--workers", str(args.workers), "--verify-trials", str(args.verify_trials),
        "--child-compression", compression,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{kind} step failed with exit code {process.returncode}")
    return json.loads(output.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def _warm(path: Path, block: int = 64 * 2**20) -> None:
    """Read the file once so that it sits in the page cache (if it fits in memory)."""
    with open(path, "rb", buffering=0) as stream:
        while stream.read(block):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=700)
    parser.add_argument("--neurons", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--verify-trials", type=int, default=8)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument(
        "--compression", default=",".join(COMPRESSIONS), help="conversion.compression settings to measure (comma-separated)"
    )
    parser.add_argument("--zip-compression", choices=["stored", "deflated"], default="stored",
                        help="how the simulated archive stores its members (the official zips' choice is unknown)")
    parser.add_argument("--child", choices=["raw", "copy", "convert"], help=argparse.SUPPRESS)
    parser.add_argument("--child-compression", help=argparse.SUPPRESS)
    parser.add_argument("--archive", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--sha256", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    settings = args.compression.split(",")
    unknown = sorted(set(settings) - set(COMPRESSIONS))
    if unknown:
        parser.error(f"--compression: {unknown} not in {list(COMPRESSIONS)}")
    archive = fullsize_archive(
        args.cache_dir, trials=args.trials, neurons=args.neurons, zip_compression=args.zip_compression
    )
    checksum_file = archive.with_name(archive.name + ".sha256")
    if not checksum_file.exists():  # the workflow has it from the download step
        checksum_file.write_text(file_sha256(archive))
    sha256 = checksum_file.read_text().strip()
    out = archive.parent / "speed-run" / archive.stem
    size = archive.stat().st_size / 2**30
    print(f"archive {archive} ({size:.2f} GiB), {args.workers} workers, {args.repeats} repeats")
    print(f"{'repeat':>6} {'raw read s':>11} {'copy s':>7} {'compression':>11} {'convert s':>10} "
          f"{'raw/conv':>8} {'copy/conv':>9} {'peak RSS MiB':>12} {'store GiB':>9}")  # fmt: skip
    ratios: dict[str, list[float]] = {"copy": []} | {setting: [] for setting in settings}
    floors: dict[str, list[float]] = {setting: [] for setting in settings}
    for repeat in range(args.repeats):
        shutil.rmtree(out.parent, ignore_errors=True)
        _warm(archive)  # every step reads the archive from the page cache, the first one too
        raw, _ = _run_child("raw", args, archive, sha256, out)
        copied, _ = _run_child("copy", args, archive, sha256, out)
        shutil.rmtree(out.parent, ignore_errors=True)
        ratios["copy"].append(raw["seconds"] / copied["seconds"])
        for setting in settings:
            converted, rss = _run_child("convert", args, archive, sha256, out, setting)
            shutil.rmtree(out.parent, ignore_errors=True)
            ratios[setting].append(raw["seconds"] / converted["seconds"])
            floors[setting].append(copied["seconds"] / converted["seconds"])
            print(
                f"{repeat:>6} {raw['seconds']:>11.2f} {copied['seconds']:>7.2f} {setting:>11} "
                f"{converted['seconds']:>10.2f} {ratios[setting][-1]:>8.2f} {floors[setting][-1]:>9.2f} "
                f"{rss:>12.0f} {converted['store_bytes'] / 2**30:>9.2f}",
                flush=True,
            )
    print(f"median ratio raw/copy (the I/O floor of a conversion): {statistics.median(ratios['copy']):.2f}")
    for setting in settings:
        print(
            f"median ratio raw/convert, compression {setting}: {statistics.median(ratios[setting]):.2f} "
            f"(target >= 0.7); copy/convert: {statistics.median(floors[setting]):.2f}"
        )


if __name__ == "__main__":
    main()
