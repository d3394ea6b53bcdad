"""Fit a cluster profile's per-rule requests to a small test node, changing nothing else.

A real profile asks for 8 CPUs and 64 GB per training job; the test node has what the test
machine has. ``fitted_set_resources`` turns the profile's ``set-resources`` into command-line
``--set-resources`` entries that keep every key (partition, GPUs, wall time, ...) and only bound
the CPUs by the node's and scale the memory down by a constant per rule, so a retry still asks
for more than the first attempt.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def profile_config(profile_dir: str | Path) -> dict:
    return yaml.safe_load((Path(profile_dir) / "config.yaml").read_text())


def first_attempt(expression: object) -> float:
    """The value of a resource expression (a number or a Python expression of ``attempt``) at attempt 1."""
    if isinstance(expression, (int, float)):
        return expression
    return eval(str(expression), {"__builtins__": {"min": min, "max": max}}, {"attempt": 1})


def fitted_set_resources(profile_dir: str | Path, cpus: int, mem_cap_mb: int) -> list[str]:
    """``RULE:RESOURCE=VALUE`` entries of the profile's set-resources, fitted to ``cpus`` and ``mem_cap_mb``
    (the most a first attempt may ask for)."""
    entries = []
    for rule, resources in profile_config(profile_dir).get("set-resources", {}).items():
        for name, value in resources.items():
            if name == "cpus_per_task":
                value = f"min({value}, {cpus})"
            elif name == "mem_mb":
                base = first_attempt(value)
                if base > mem_cap_mb:
                    value = f"max(1, int(({value}) * {mem_cap_mb} // {base}))"
            entries.append(f"{rule}:{name}={value}")
    return entries
