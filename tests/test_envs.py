"""The conda environments of envs/ against pyproject.toml and the rules that use them.

`--sdm conda` runs each rule's script in its environment, not in the development virtualenv,
so a pin that drifts from pyproject.toml, or a library import that the environment lacks, would
only show on a cluster. These checks read the files; they need no conda.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))
RULE_FILES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
PACKAGE = "sensorium_pipeline"
RULE = re.compile(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement(spec: str) -> tuple[str, str | None]:
    """``name==version`` as (canonical name, version); any other spec gives version None."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(?:==\s*([^\s;,]+))?\s*(?:;.*)?", spec)
    assert match, f"cannot read the requirement {spec!r}"
    return canonical(match.group(1)), match.group(2)


def pyproject_pins() -> dict[str, str | None]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    pins: dict[str, str | None] = {}
    for spec in specs:
        name, version = requirement(spec)
        assert pins.get(name, version) == version, f"pyproject.toml pins {name} twice: {pins[name]} and {version}"
        pins[name] = version
    return pins


def env_spec(path: Path) -> dict:
    spec = yaml.safe_load(path.read_text())
    assert isinstance(spec, dict) and "dependencies" in spec, f"{path}: not a conda environment file"
    return spec


def env_pins(path: Path) -> dict[str, str | None]:
    """The pip requirements of an environment file (its conda packages are python and pip only)."""
    pins: dict[str, str | None] = {}
    for entry in env_spec(path)["dependencies"]:
        if isinstance(entry, dict):
            for spec in entry.get("pip", []):
                name, version = requirement(spec)
                pins[name] = version
    return pins


def rules() -> dict[str, str]:
    """Every rule's body, by rule name, from workflow/rules/*.smk."""
    found = {}
    for path in RULE_FILES:
        for name, body in RULE.findall(path.read_text()):
            found[name] = body
    return found


def directive(body: str, name: str) -> str | None:
    match = re.search(rf"^\s+{name}:\s*\n\s+\"([^\"]+)\"", body, re.MULTILINE)
    return match.group(1) if match else None


def third_party_imports(script: Path) -> set[str]:
    """Top-level modules outside the standard library that ``script`` imports, directly or through
    the modules of this package it imports (followed transitively)."""
    seen: set[Path] = set()
    found: set[str] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: a module of this package
                    base = path.parent
                    for _ in range(node.level - 1):
                        base = base.parent
                    parts = (node.module or "").split(".") if node.module else []
                    names = [".".join([PACKAGE, *base.relative_to(ROOT / "src" / PACKAGE).parts, *parts])]
                    names += [f"{names[0]}.{alias.name}" for alias in node.names]
                else:
                    names = [node.module or ""]
                    names += [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == PACKAGE:
                    module = ROOT / "src" / Path(*name.replace(f"{PACKAGE}.", "", 1).split(".")) if name != PACKAGE else None
                    candidates = [ROOT / "src" / PACKAGE / "__init__.py"]
                    if module is not None:
                        candidates += [ROOT / "src" / PACKAGE / module.relative_to(ROOT / "src").with_suffix(".py"),
                                       ROOT / "src" / PACKAGE / module.relative_to(ROOT / "src") / "__init__.py"]
                    todo += [c for c in candidates if c.exists()]
                elif top and top not in sys.stdlib_module_names and top != "__future__":
                    found.add(top)
    return found


def requirements_of(name: str) -> set[str]:
    """Canonical names of what an installed distribution requires (empty when it is not installed)."""
    try:
        specs = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    return {canonical(re.split(r"[\s<>=!~;\[(]", spec, maxsplit=1)[0]) for spec in specs}


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution(module: str) -> str:
    names = distributions().get(module)
    return canonical(names[0]) if names else canonical(module)


@pytest.mark.parametrize("env", ENVS, ids=lambda path: path.name)
def test_environment_pins_agree_with_pyproject(env):
    pins = pyproject_pins()
    spec = env_spec(env)
    assert "conda-forge" in spec.get("channels", []), f"{env.name}: conda-forge channel missing"
    python = [d for d in spec["dependencies"] if isinstance(d, str) and d.startswith("python")]
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == ["python=3.11"] and required == ">=3.11", (python, required)
    packages = env_pins(env)
    assert packages, f"{env.name}: no pip requirements"
    for name, version in packages.items():
        assert version is not None, f"{env.name}: {name} is not pinned (name==version)"
        if name in pins:
            assert pins[name] == version, f"{env.name}: {name}=={version}, pyproject.toml pins {pins[name]}"
        else:  # a dependency of a pinned package, pinned to what pip installs beside it
            parents = [p for p in packages if p in pins and name in requirements_of(p)]
            assert parents, f"{env.name}: {name}=={version} is neither in pyproject.toml nor required by a package there"
            assert installed_version(name) in (None, version), (
                f"{env.name}: {name}=={version}, the development environment has {installed_version(name)}"
            )


def test_every_rule_with_code_has_a_pinned_environment():
    found = rules()
    assert {"simulate", "download", "convert", "train", "predict", "ensemble", "evaluate", "submission"} <= set(found)
    for name, body in found.items():
        if not re.search(r"^\s+(script|shell|run|notebook|wrapper):", body, re.MULTILINE):
            continue  # a target rule such as `all`
        env = directive(body, "conda")
        assert env is not None, f"rule {name}: no conda: directive"
        path = (ROOT / "workflow" / "rules" / env).resolve()
        assert path in ENVS, f"rule {name}: conda env {env} is not a file of envs/"


def test_every_environment_provides_what_its_rules_import():
    for name, body in rules().items():
        script, env = directive(body, "script"), directive(body, "conda")
        if script is None or env is None:
            continue
        script_path = (ROOT / "workflow" / "rules" / script).resolve()
        provided = set(env_pins((ROOT / "workflow" / "rules" / env).resolve()))
        needed = {distribution(module) for module in third_party_imports(script_path)}
        needed.discard("snakemake")  # the `snakemake` object scripts receive, not an import
        missing = needed - provided
        assert not missing, f"rule {name}: {script_path.name} imports {sorted(missing)}, which {env} lacks"
