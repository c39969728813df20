"""How long the build tool's everyday commands take, against the budgets the book promises.

    tangle + check        <= 2 s
    warm `make book`      <= 30 s   (nothing changed since the last build)

Each command runs as a user runs it (a fresh interpreter), several times; the
median is reported with its ratio to the budget (below 1.0 is within budget).
Run from the repository root: `.venv/bin/python benchmarks/build_times.py`.
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bookbuild", *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def median_seconds(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def main() -> None:
    if not (ROOT / "_book" / ".build-stamp").exists():
        print("building the book once so that the next build is warm ...")
        run("book", "--renderer", "embedded")
    rows = [
        ("tangle + check", median_seconds(lambda: run("tangle") + run("check"), 5), 2.0),
        ("warm make book (no change)", median_seconds(lambda: run("book", "--renderer", "embedded"), 3), 30.0),
    ]
    print(f"{'command':<30}{'median (s)':>12}{'budget (s)':>12}{'ratio':>8}")
    for name, seconds, budget in rows:
        print(f"{name:<30}{seconds:>12.2f}{budget:>12.1f}{seconds / budget:>8.2f}")


if __name__ == "__main__":
    main()
