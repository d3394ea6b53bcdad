"""What produced a report: software versions, the pinned environments and the config.

Versions are read from package metadata (``importlib.metadata``), so nothing heavy (torch)
is imported; a package absent from the environment that renders the report is listed as
such. The conda environment files list the pins each rule's own environment uses.
"""

from __future__ import annotations

import html
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .. import __version__

PACKAGES: tuple[str, ...] = (
    "sensorium-pipeline",
    "snakemake",
    "numpy",
    "pandas",
    "pyarrow",
    "zarr",
    "numcodecs",
    "torch",
    "matplotlib",
    "jsonschema",
    "PyYAML",
)


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """``{package: version}`` in this environment; None where it is not installed."""
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(directory: str | Path) -> str | None:
    """The checked-out commit of ``directory`` (with ``-dirty`` if it has changes), or None."""
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=directory, capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def software_record(env_files: Sequence[str | Path] = (), source_dir: str | Path | None = None) -> dict[str, Any]:
    """Python, platform, package versions, the code's version and commit, and the env files' text."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "code_version": __version__,
        "git_commit": git_commit(source_dir) if source_dir is not None else None,
        "packages": package_versions(),
        "environments": {Path(p).name: Path(p).read_text(encoding="utf-8") for p in env_files},
    }


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def versions_html(record: Mapping[str, Any], config: Mapping[str, Any], models: Mapping[str, str] | None = None) -> str:
    """One HTML page: the software ``record`` (:func:`software_record`), the resolved ``config``
    and the text of each model config file used (``models``: name → YAML text)."""
    rows = [
        ("Python", record.get("python")),
        ("platform", record.get("platform")),
        ("sensorium-pipeline code version", record.get("code_version")),
        ("git commit", record.get("git_commit")),
    ]
    rows += [(name, version if version is not None else "not installed here") for name, version in record["packages"].items()]
    table = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v if v is not None else '–'))}</td></tr>" for k, v in rows
    )
    parts = [
        "<h2>Software</h2>",
        "<p>Versions in the environment that rendered this report; each rule's own conda "
        "environment is pinned as listed below.</p>",
        f"<table>{table}</table>",
    ]
    for name, text in record.get("environments", {}).items():
        parts += [f"<h3>envs/{html.escape(name)}</h3>", _pre(text)]
    parts += ["<h2>Config used</h2>", _pre(yaml.safe_dump(dict(config), sort_keys=False))]
    for name, text in (models or {}).items():
        parts += [f"<h3>model config {html.escape(name)}</h3>", _pre(text)]
    style = "body{font-family:sans-serif;font-size:14px;margin:1em}td{border:1px solid #ccc;padding:2px 8px}" \
        "table{border-collapse:collapse}pre{background:#f6f6f6;padding:6px}"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Software and config</title>"
        f"<style>{style}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
