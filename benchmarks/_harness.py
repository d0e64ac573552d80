"""Shared helpers for ``make bench``: timing, the result row every benchmark returns,
and issue 20's "Must show" targets.

A suite returns :class:`BenchResult` rows. A row with a target is best made with
:func:`figure`, which words the target and judges it. :data:`MUST_SHOW` lists the
figures issue 20 requires, each found by suite and row name among the rows of the
same run and judged against its own limit, so a suite's row needs no change to
appear there; ``python -m benchmarks`` exits non-zero when any target is missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from attrs import frozen

Better = Literal["lower", "higher"]


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


def meets(measured: float, limit: float, better: Better) -> bool:
    return measured <= limit if better == "lower" else measured >= limit


def target_text(limit: float, better: Better, unit: str = "") -> str:
    return f"{'<=' if better == 'lower' else '>='} {limit:g}{unit}"


def figure(
    name: str,
    value: float,
    unit: str,
    limit: float,
    better: Better = "lower",
    *,
    ratio: float | None = None,
    baseline: str = "",
) -> BenchResult:
    """A row with a target: ``ratio`` is judged when given (a ratio to ``baseline``
    measured in the same run), ``value`` otherwise."""
    measured = value if ratio is None else ratio
    suffix = "" if ratio is not None else f" {unit}"
    return BenchResult(
        name,
        value,
        unit,
        ratio,
        baseline,
        target_text(limit, better, suffix),
        meets(measured, limit, better),
    )


@frozen
class Target:
    """One figure of issue 20's "Must show" table and the row that measures it."""

    figure: str
    """The figure as the issue words it."""
    suite: str
    """``benchmarks/bench_<suite>.py``."""
    row: str
    """The row's name in that suite (its start)."""
    limit: float
    better: Better = "lower"
    of: Literal["ratio", "value"] = "ratio"
    """Which number of the row is judged."""

    def find(self, rows: list[tuple[str, BenchResult]]) -> BenchResult | None:
        return next(
            (r for suite, r in rows if suite == self.suite and r.name.startswith(self.row)),
            None,
        )

    def measured(self, row: BenchResult) -> float | None:
        return row.ratio if self.of == "ratio" else row.value


MUST_SHOW: tuple[Target, ...] = (
    Target(
        "boot `default` to ready DSA, median (ms)",
        "idxd",
        "boot default machine to ready DSA",
        20,
        of="value",
    ),
    Target("boot with 64 GiB RAM / boot with 256 MiB", "idxd", "boot 64 GiB RAM", 1.2),
    Target(
        "VT-d cold 4-level second-stage walk (x dict lookup)",
        "vtd",
        "cold 4-level second-stage walk",
        100,
    ),
    Target(
        "VT-d first-stage + PASID cold fill per page (x dict lookup)",
        "vtd",
        "fl+PASID cold fill",
        150,
    ),
    Target("SMMUv3 cold walk (x dict lookup)", "smmuv3", "cold 4-level LPAE", 100),
    Target(
        "VT-d strict map+unmap pair / dma-direct pair",
        "intel_iommu",
        "VT-d strict pair / dma-direct pair",
        10,
    ),
    Target(
        "VT-d lazy map+unmap pair / dma-direct pair",
        "intel_iommu",
        "VT-d lazy pair / dma-direct pair",
        5,
    ),
    Target(
        "warm DSA memmove through VT-d / bytearray copy",
        "vtd",
        "DSA memmove 64MiB, VT-d",
        0.9,
        better="higher",
    ),
    Target(
        "`dma_map_single` at 1M live mappings / at 1k live",
        "scale",
        "dma_map_single 4 KiB at 1M live",
        1.5,
    ),
    Target(
        "memory per live 4 KiB mapping beyond its page-table pages (bytes)",
        "scale",
        "memory per live 4 KiB mapping",
        300,
        of="value",
    ),
    Target("`server` preset boot to all DSAs ready (ms)", "idxd", "boot server", 100, of="value"),
    Target(
        "full fail_nth sweep of the founding scenario, `pytest -n 2` (s)",
        "suite",
        "fail_nth sweep of the founding scenario",
        15,
        of="value",
    ),
    Target("`make test` on 2 cores (s)", "suite", "make test", 180, of="value"),
)


def best_of(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Best wall time in seconds of ``number`` calls of ``fn``, over ``repeat`` tries."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def best_cpu_of(fn: Callable[[], object], repeat: int) -> float:
    """:func:`best_of` in this process's CPU time: on a busy host a loop of
    milliseconds is preempted and wall time charges it for other processes' turns,
    while a baseline loop of microseconds mostly is not, which skews the ratios
    between them; CPU time does not count those turns."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def dict_lookup_ns() -> float:
    """Best CPU time in ns of one Python dict lookup (in a ``for`` loop over keys):
    the baseline of the IOMMU models' per-page and per-walk rows."""
    d = {i: i for i in range(4096)}
    keys = list(range(0, 4096, 8)) * 2

    def run() -> None:
        for k in keys:
            d[k]

    return best_cpu_of(run, repeat=7) / len(keys) * 1e9


def dict_set_del_ns(n: int = 2000) -> float:
    """Best time in ns of one Python dict set + del: the baseline of the DMA-API rows."""
    d: dict[int, int] = {}
    keys = list(range(n))

    def run() -> None:
        for k in keys:
            d[k] = k
            del d[k]

    return best_of(run, repeat=7) / n * 1e9
