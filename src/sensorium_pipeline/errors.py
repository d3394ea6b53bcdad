"""One exception hierarchy for everything a user can act on.

Messages always name the file (or config key) and what was expected, so that a failed
Snakemake job tells the user what to fix without reading a traceback.
"""

from __future__ import annotations

from pathlib import Path


class SensoriumError(Exception):
    """Base class of all errors the pipeline raises on purpose."""


class PathError(SensoriumError):
    """An error about one file: the message starts with the path."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ArchiveError(PathError):
    """A competition archive (zip) is missing a member, truncated or inconsistent.

    The message is always one line: member names come from the (untrusted) zip, so line
    breaks and other control characters in them are written as escapes.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(one_line(str(path)), one_line(problem))
        self.path = str(path)


def one_line(text: str) -> str:
    """``text`` with control characters (line breaks included) written as ``\\n``-style escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class StoreError(PathError):
    """A converted Zarr store is missing, incomplete or of an unknown layout."""


class DownloadError(PathError):
    """A download failed, or its checksum does not match."""


class PredictionError(PathError):
    """A predictions file is malformed or does not match its store."""


class SubmissionError(PathError):
    """A submission file breaks a rule of the competition's scorer."""


class ConfigError(SensoriumError):
    """A configuration value is invalid; the message names the key."""
