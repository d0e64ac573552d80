"""Shared helpers for ``make bench``: timing and the result row every benchmark returns."""

from __future__ import annotations

import time
from collections.abc import Callable

from attrs import frozen


@frozen
class BenchResult:
    """One printed row: ``ratio`` is measured/baseline from the same run."""

    name: str
    value: float
    unit: str
    ratio: float | None = None
    baseline: str = ""
    target: str = ""
    ok: bool | None = None


def best_of(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Best wall time in seconds of ``number`` calls of ``fn``, over ``repeat`` tries."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def dict_set_del_ns(n: int = 2000) -> float:
    """Best time in ns of one Python dict set + del: the baseline of the DMA-API rows."""
    d: dict[int, int] = {}
    keys = list(range(n))

    def run() -> None:
        for k in keys:
            d[k] = k
            del d[k]

    return best_of(run, repeat=7) / n * 1e9
