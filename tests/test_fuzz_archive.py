"""Property: any archive, however broken, converts to a verified store or stops with a one-line
:class:`ArchiveError` and writes nothing (strategies and the property: ``fuzz_archives``).

A bounded number of examples runs here; ``benchmarks/fuzz_archive.py`` runs many more.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from fuzz_archives import ArchivePlan, Mutation, archive_plans, base_members, build_archive, check_conversion

#: Examples per run of the suite (about 0.1 s each; the long runs are the benchmark's).
EXAMPLES = 150


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(plan=archive_plans())
def test_every_archive_gives_a_store_or_a_one_line_archive_error(plan):
    with tempfile.TemporaryDirectory(prefix="fuzz-archive-") as folder:
        check_conversion(plan, Path(folder))


def _plan(*mutations: Mutation, **changes: object) -> ArchivePlan:
    settings = {
        "n_ids": 3, "with_files": (0, 2), "tiers": ("train", "live_test_main"), "n_neurons": 2, "t_pad": 3,
        "valid": (2, 3), "dtype": "<f4", "deflate": False, "seed": 0, "mutations": mutations, "order": None,
        "truncate": None, "flip": None,
    }  # fmt: skip
    return ArchivePlan(**{**settings, **changes})


def test_the_unmutated_plan_converts_and_the_generator_makes_the_named_breakages(tmp_path):
    """The strategy's base archive is valid, and a few mutations do what they say."""
    (tmp_path / "valid").mkdir()
    assert check_conversion(_plan(), tmp_path / "valid")[0] == "store"
    cases = {
        "dup": _plan(Mutation("duplicate", 5, False)),
        "huge": _plan(Mutation("header", 1, ((2**62 + 5, 4), "<i8", False, 160))),
        "inf": _plan(Mutation("value", 4, (float("inf"), 0.0))),
        "cut": _plan(truncate=0.5),
    }
    for name, plan in cases.items():
        (tmp_path / name).mkdir()
        assert check_conversion(plan, tmp_path / name)[0] == "ArchiveError", name
    with zipfile.ZipFile(build_archive(cases["dup"], tmp_path / "dup.zip")) as archive:
        names = archive.namelist()
    assert len(names) == len(set(names)) + 1


def test_negative_zero_in_withheld_responses_is_stored_bit_for_bit(tmp_path):
    """Found by the long fuzz run: -0.0 counted as 'all zeros' and was written as +0.0."""
    tiers = ("live_test_main", "final_test_main")
    names = [name for name, _ in base_members(_plan(tiers=tiers))]
    index = names.index("m/data/responses/0.npy")
    plan = _plan(Mutation("value", index, (-0.0, 0.0)), tiers=tiers)
    assert check_conversion(plan, tmp_path)[0] == "store"
