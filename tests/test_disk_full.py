"""A conversion onto a full file system: refused before writing when the size is known, and a
disk that fills up mid-way ends in one message naming the path and the space needed, with
nothing left behind. Runs on a real 4 MiB tmpfs in a private mount namespace (``unshare``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from factories import MOUSE, simulate_small

_CHILD = """
import json, os, sys
from sensorium_pipeline.data.convert import convert_archive
from sensorium_pipeline.errors import StoreError
archive, folder, compression, check = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
try:
    convert_archive(archive, os.path.join(folder, "data", "mouse"), compression=compression, check_space=check)
    result = {"error": None}
except StoreError as exc:
    result = {"error": str(exc)}
result["left"] = sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)
print(json.dumps(result))
"""


def _convert_on_tmpfs(archive: Path, mountpoint: Path, compression: str, check: bool) -> dict:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    mountpoint.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}
    script = f'mount -t tmpfs -o size=4m tmpfs "$1" || exit 77; shift; exec "$@"'
    command = ["unshare", "-rm", "sh", "-c", script, "sh", str(mountpoint), sys.executable, "-c", _CHILD,
               str(archive), str(mountpoint), compression, "1" if check else "0"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if done.returncode == 77 or "unshare:" in done.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return simulate_small(tmp_path_factory.mktemp("zip"))


def test_known_size_that_cannot_fit_is_refused_before_writing(archive, tmp_path):
    result = _convert_on_tmpfs(archive, tmp_path / "small", "none", check=True)
    out = tmp_path / "small" / "data" / "mouse"
    assert result["error"].startswith(f"{out}: not enough free space on the file system of {out.parent}: ")
    raw = 42 * 70 * (36 * 64 + 20 + 2 + 2) * 4  # trials x T_pad x values per frame x float32
    assert f"the store needs {raw / 2**20:.1f} MiB (and 64.0 MiB to spare), " in result["error"]
    assert result["left"] == []


def test_disk_filling_up_names_the_path_and_the_space_needed(archive, tmp_path):
    result = _convert_on_tmpfs(archive, tmp_path / "small", "lz4", check=False)
    out = tmp_path / "small" / "data" / "mouse"
    message = result["error"]
    assert message.startswith(f"{out}: no space left on the device while writing {out.parent}/.mouse.tmp-")
    assert "the store needs at most " in message and "(the partial store was removed)" in message
    assert "\n" not in message
    assert result["left"] == []  # the clean-up removed the partial store


def test_projected_size_of_a_compressed_store_stops_early(archive, tmp_path):
    result = _convert_on_tmpfs(archive, tmp_path / "small", "lz4", check=True)
    assert result["error"] is not None and "space" in result["error"]
    assert result["left"] == []
