"""A conversion killed mid-way leaves nothing a rerun (or Snakemake) could take for a finished store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sensorium_pipeline.data.store import open_mouse
from factories import MOUSE, simulate_small

_CONVERT = """
import sys, time
from sensorium_pipeline.data import convert
from sensorium_pipeline.data import store_writer
original = store_writer._write_one
def slow(*args):
    print("trial", flush=True)
    time.sleep(0.5)  # keep the conversion busy long enough to be killed inside it
    return original(*args)
store_writer._write_one = slow
convert.convert_archive(sys.argv[1], sys.argv[2], workers=1, verify_trials=2)
"""


def test_killed_conversion_leaves_no_store_and_a_rerun_succeeds(tmp_path):
    archive = simulate_small(tmp_path / "zip")
    out = tmp_path / "data" / MOUSE
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, "-c", _CONVERT, str(archive), str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    for _ in range(3):  # a few trials are on disk
        assert child.stdout.readline() == "trial\n"
    time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert not out.exists()  # only a temporary sibling, which no reader takes for the store
    leftovers = list(out.parent.glob(f".{MOUSE}.tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "store.zarr").is_dir()

    from sensorium_pipeline.data.convert import convert_archive

    convert_archive(archive, out, verify_trials=2)
    assert open_mouse(out).trials["trial_id"].size == 42
    assert list(out.parent.glob(f".{MOUSE}.tmp-*")) == []  # the killed run's temporary is gone
