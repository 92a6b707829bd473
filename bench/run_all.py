"""Every benchmark, one after the other, in one table: each figure with its floor and target.

    .venv/bin/python -m bench.run_all              # the figures the README shows (1M enrollments)
    .venv/bin/python -m bench.run_all --quick      # 100k enrollments, fewer changes: minutes
    .venv/bin/python -m bench.run_all --markdown   # the table as the README shows it

Each benchmark runs in a process of its own (so peak RSS is its own) against its
own redis-server and simulator, and prints its rows as JSON; this collects them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime

from bench.report import Row, read, table

FULL = {
    "sweep_hot": ["--records", "100000"],
    "engine_sweep": ["--enrollments", "1000000", "--courses", "100", "--activity", "50000"],
    "delivery": ["--events", "20000"],
    "latency": ["--changes", "1200", "--rate", "20"],
    "stats_counts": ["--events", "20000"],
    "freshness": [],
    "hints": ["--courses", "500", "--rps", "20", "--changes", "240", "--rate", "2"],
    "xapi": ["--events", "2000"],
}
QUICK = {
    "sweep_hot": ["--records", "50000"],
    "engine_sweep": ["--enrollments", "100000", "--activity", "5000"],
    "delivery": ["--events", "10000"],
    "latency": ["--changes", "1000", "--rate", "40"],
    "stats_counts": ["--events", "5000"],
    "freshness": ["--hours", "0.25"],
    "hints": ["--courses", "100", "--rps", "20", "--changes", "60", "--rate", "2"],
    "xapi": ["--events", "1000"],
}


def machine() -> str:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            kb = int(next(line.split()[1] for line in info if line.startswith("MemTotal")))
            memory = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    redis = shutil.which("redis-server")
    redis_version = (
        subprocess.run([redis, "--version"], capture_output=True, text=True).stdout.split()[2]
        if redis
        else "redis-server missing"
    )
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; Linux {platform.release()}; "
        f"Python {platform.python_version()}; Redis {redis_version.removeprefix('v=')}"
    )


def run(name: str, args: list[str]) -> list[Row]:
    """One benchmark's rows (its progress goes to stderr as it runs)."""
    print(f"== bench.{name} {' '.join(args)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args, "--json"],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench.{name} failed (exit {done.returncode})")
    print(f"   {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return read(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (100k enrollments)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--only", nargs="*", choices=sorted(FULL), help="run only these")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    rows: list[Row] = []
    for name, bench_args in plan.items():
        if args.only is None or name in args.only:
            rows += run(name, bench_args)
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    print(f"\n{when}, {'quick' if args.quick else 'full'} run on {machine()}\n")
    print(table(rows, markdown=args.markdown))
    unmet = [r.name for r in rows if r.met is False]
    if unmet:
        print(f"\ntargets not met: {len(unmet)} of {sum(r.met is not None for r in rows)}")


if __name__ == "__main__":
    main()
