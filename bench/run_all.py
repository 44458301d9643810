"""`make bench`: runs every bench/bench_*.py in turn (each prints its own table as it goes, and
each still runs alone), then prints ONE combined table of every figure beside its baseline,
its ratio, the goal and whether it is met.

    .venv/bin/python -m bench.run_all                 # everything, full size
    .venv/bin/python -m bench.run_all --quick         # small sizes, for development
    .venv/bin/python -m bench.run_all bench_read bench_audit   # some scripts only

`--quick` (or BENCH_QUICK=1) sets small sizes for whatever is not already set in the
environment: the figures are then only a smoke test, not the ones to quote."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import RESULTS_ENV, TWIN, Figure, combined_table, read_recorded, twin_table

HERE = Path(__file__).resolve().parent

QUICK = {
    "BENCH_ROUNDS": "3",
    "BENCH_OPS": "30",
    "BENCH_CLIENTS": "1,8",
    "BENCH_PERKS": "10",
    "BENCH_AUDIT_EVENTS": "20000",
    "BENCH_EVENTS": "300",
    "BENCH_FEED_SECONDS": "2",
    "BENCH_READ_CALLS": "200",
    "BENCH_INTEGRITY_RIDERS": "200",
    "BENCH_NEARBY_PLACES": "1000",
    "BENCH_NEARBY_RIDERS": "2000",
    "BENCH_NEARBY_CLAIMS": "200",
    "BENCH_NEARBY_QUERIES": "200",
    "BENCH_PERK_HISTORY": "300",
    "BENCH_CAMPAIGN_SIZES": "300",
}


def main(argv: list[str], scripts_dir: Path = HERE) -> int:
    quick = "--quick" in argv or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    wanted = {a.removesuffix(".py") for a in argv if not a.startswith("-")}
    scripts = [s for s in sorted(scripts_dir.glob("bench_*.py"))
               if not wanted or s.stem in wanted]
    env = dict(os.environ)
    if quick:
        for key, value in QUICK.items():
            env.setdefault(key, value)
    failed = []
    with tempfile.TemporaryDirectory(prefix="qiji-bench-results-") as tmp:
        results = Path(tmp) / "figures.jsonl"
        env[RESULTS_ENV] = str(results)
        for script in scripts:
            print(f"\n### {script.name}", flush=True)
            # A module of bench/ when it is one (imports resolve from the project root).
            command = ([sys.executable, "-m", f"bench.{script.stem}"] if scripts_dir == HERE
                       else [sys.executable, str(script)])
            if subprocess.call(command, cwd=HERE.parent, env=env) != 0:
                failed.append(script.name)
        figures = read_recorded(results)
    twice = recorded_twice(figures)
    print(f"\n## All figures{' (QUICK: smoke sizes, not figures to quote)' if quick else ''}\n")
    print(combined_table(figures))
    if any(f.baseline_name == TWIN for f in figures):
        print("\n## Commands beside their CRUD twin (bench/twin.py) and the raw INSERT\n")
        print(twin_table(figures))
    if twice:
        # A figure handed in twice would print as two rows of one measurement.
        print(f"\nRECORDED TWICE: {'; '.join(twice)}")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    return 1 if failed or twice else 0


def recorded_twice(figures: list[Figure]) -> list[str]:
    """The figures recorded more than once: the same benchmark beside the same baseline."""
    seen: set[tuple[str, str, int | None]] = set()
    twice = []
    for f in figures:
        key = (f.benchmark, f.baseline_name, f.concurrency)
        if key in seen and f.benchmark not in twice:
            twice.append(f.benchmark)
        seen.add(key)
    return twice


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
