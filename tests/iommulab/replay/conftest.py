"""The real Linux 6.12 trace (``shared/spec/linux-6.12-trace/trace.txt``, copied into
``tests/data`` so a fresh clone needs nothing beside it) and edited copies of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

REAL_TRACE = Path(__file__).parents[2] / "data" / "linux-6.12-trace.txt"

Edit = Callable[[list[str]], list[str]]


def real_lines() -> list[str]:
    assert REAL_TRACE.is_file(), f"the reference trace {REAL_TRACE} is missing"
    return REAL_TRACE.read_text().splitlines()


def line_of(lines: list[str], *needles: str, after: int = 0) -> int:
    """1-based number of the first line after ``after`` containing every needle."""
    for i in range(after, len(lines)):
        if all(n in lines[i] for n in needles):
            return i + 1
    raise AssertionError(f"no line contains {needles}")


@pytest.fixture
def write_trace(tmp_path: Path) -> Callable[[list[str]], Path]:
    def write(lines: list[str]) -> Path:
        p = tmp_path / "trace.txt"
        p.write_text("\n".join(lines) + "\n")
        return p

    return write
