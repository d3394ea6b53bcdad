"""Atomic outputs: write to a temporary sibling, rename into place only when complete.

A crash, a kill or an exception therefore never leaves a half-written artifact at the
final path, and a rerun never mistakes a partial output for a finished one.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _temp_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _temp_pattern(final: Path) -> re.Pattern[str]:
    """Names :func:`_temp_sibling` gives, with the writing process id as group 1."""
    return re.compile(rf"^\.{re.escape(final.name)}\.tmp-(\d+)-[0-9a-f]+$")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` on success.

    Works for files and directories alike (the caller decides what to create at the
    temporary path). On any exception the temporary path is removed and ``final`` is
    left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written for {final}")
        if final.is_dir() and not final.is_symlink():
            # os.replace cannot replace a non-empty directory: move the old one aside first.
            old = _temp_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes_atomic(final: str | Path, data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` atomically."""
    write_bytes_atomic(final, text.encode("utf-8"))


def remove_stale_temporaries(out_dir: str | Path) -> list[Path]:
    """Remove temporary siblings of ``out_dir`` left by killed runs (their process is gone).

    A SIGKILL skips :func:`atomic_path`'s clean-up; a rerun calls this first, so large
    half-written outputs (a store) do not pile up. Only siblings of this one output are
    touched: Snakemake never writes one output from two jobs at once.
    """
    out_dir = Path(out_dir)
    pattern = _temp_pattern(out_dir)
    removed = []
    if not out_dir.parent.is_dir():
        return removed
    for sibling in out_dir.parent.iterdir():
        match = pattern.match(sibling.name)
        if match and not _process_alive(int(match.group(1))):
            _remove(sibling)
            removed.append(sibling)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not writing the same output twice at once
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
