"""A long fuzz run of the archive reader and converter (the suite runs a bounded one).

    .venv/bin/python benchmarks/fuzz_archive.py --examples 5000
    .venv/bin/python benchmarks/fuzz_archive.py --examples 500 --seed 7 --max-mutations 6

Every example is a small archive with random breakages (strategies: ``tests/fuzz_archives.py``:
member names, headers, dtypes, shapes, orders, duplicate and missing members, truncation, flipped
bytes, non-finite values). The property is the suite's: the conversion yields a verified store,
or an :class:`ArchiveError` with a one-line message and no output left behind. Unlike the test,
a failure is recorded and the run goes on, so the counts cover every example. Prints a JSON
report: examples, outcomes, failures (with the plan of the first few), the most frequent error
kinds, seconds. Exit status 1 when any example failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from fuzz_archives import archive_plans, check_conversion  # noqa: E402


def _kind(message: str) -> str:
    """An error message without its paths, numbers and names: what kind of problem it is."""
    problem = message.split(": ", 2)[-1]
    problem = re.sub(r"'[^']*'|\([^)]*\)|\[[^\]]*\]", "…", problem)
    return re.sub(r"\d+", "N", problem)[:90]


def run(examples: int, run_seed: int, max_mutations: int) -> dict:
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    failures: list[dict] = []

    @seed(run_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(plan=archive_plans(max_mutations=max_mutations))
    def fuzz(plan):
        with tempfile.TemporaryDirectory(prefix="fuzz-archive-") as folder:
            try:
                outcome, message = check_conversion(plan, Path(folder))
            except Exception as exc:  # recorded, not raised: the run goes on
                outcomes["failure"] += 1
                if len(failures) < 10:
                    failures.append(
                        {"plan": repr(plan), "error": f"{type(exc).__name__}: {exc}",
                         "where": traceback.format_exc(limit=-3)}
                    )  # fmt: skip
                return
        outcomes[outcome] += 1
        if outcome == "ArchiveError":
            kinds[_kind(message)] += 1

    start = time.perf_counter()
    fuzz()
    total = sum(outcomes.values())
    return {
        "examples": total,
        "valid_stores": outcomes["store"],
        "archive_errors": outcomes["ArchiveError"],
        "failures": outcomes["failure"],
        "seed": run_seed,
        "max_mutations": max_mutations,
        "seconds": round(time.perf_counter() - start, 1),
        "error_kinds": dict(kinds.most_common(25)),
        "first_failures": failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-mutations", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args()
    report = run(args.examples, args.seed, args.max_mutations)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
