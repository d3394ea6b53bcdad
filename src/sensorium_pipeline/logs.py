"""Send a stage's output to its log file, plainly enough for a SLURM job log."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path


@contextmanager
def log_to(path: str | Path | None) -> Iterator[logging.Logger]:
    """Redirect stdout, stderr and the ``sensorium_pipeline`` logger to ``path``.

    Exceptions are logged with their traceback and re-raised, so the failing job's log
    tells what went wrong; ``None`` logs to stderr (notebook or command-line use).
    """
    logger = logging.getLogger("sensorium_pipeline")
    logger.setLevel(logging.INFO)
    if path is None:
        handler = logging.StreamHandler(sys.stderr)
        logger.addHandler(handler)
        try:
            yield logger
        finally:
            logger.removeHandler(handler)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1, encoding="utf-8") as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        try:
            with redirect_stdout(stream), redirect_stderr(stream):
                yield logger
        except BaseException:
            logger.exception("failed")
            raise
        finally:
            logger.removeHandler(handler)
