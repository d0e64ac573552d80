"""Wall times of the project's own test runs, each in a subprocess on this host:

- the full fail_nth sweep of the founding scenario (``tests/sweep/test_fail_nth.py``,
  whose founding cell is what the default options select) under ``pytest -n 2``
  (target <= 15 s);
- what ``make test`` runs — ruff, ruff format, mypy, import-linter, then pytest with
  coverage on two workers (target <= 3 min).

A run that fails is reported as a miss, whatever its time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benchmarks._harness import BenchResult, figure

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PYTEST = [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-q"]
SWEEP = [*PYTEST, "tests/sweep/test_fail_nth.py"]
GATE = [
    [str(BIN / "ruff"), "check", "."],
    [str(BIN / "ruff"), "format", "--check", "."],
    [str(BIN / "mypy")],
    [str(BIN / "lint-imports")],
    [*PYTEST, "--cov", "--cov-branch", "--cov-fail-under=90"],
]


def _wall(commands: list[list[str]]) -> tuple[float, bool]:
    """Seconds to run ``commands`` one after the other, and whether all passed."""
    t0 = time.perf_counter()
    for cmd in commands:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-5:])
            print(f"bench_suite: {' '.join(cmd[:4])} ... failed:\n{tail}", file=sys.stderr)
            return time.perf_counter() - t0, False
    return time.perf_counter() - t0, True


def _row(name: str, commands: list[list[str]], limit: float) -> BenchResult:
    seconds, passed = _wall(commands)
    row = figure(name if passed else f"{name} (FAILED)", seconds, "s", limit)
    return row if passed else BenchResult(row.name, seconds, "s", target=row.target, ok=False)


def bench() -> list[BenchResult]:
    return [
        _row("fail_nth sweep of the founding scenario, pytest -n 2", [SWEEP], 15),
        _row("make test (lint, types, contracts, pytest -n 2 with coverage)", GATE, 180),
    ]
