"""IOVA allocator: per-op cost of alloc+free with 1k and 1M live allocations.

Both the dma-iommu fast path (``alloc_iova_fast``/``free_iova_fast`` through the
range cache) and the tree path (``alloc_iova``/``free_iova``) are measured; the
ratio 1M/1k shows whether cost stays flat as the tree grows (target <= 1.5).
"""

from __future__ import annotations

from benchmarks._harness import BenchResult, best_of
from kernel.iommu.iova import (
    IovaDomain,
    alloc_iova,
    alloc_iova_fast,
    free_iova,
    free_iova_fast,
    init_iova_domain,
    iova_domain_init_rcaches,
)

LIMIT = (1 << 48) // 4096 - 1
OPS = 2000


def _domain(live: int) -> IovaDomain:
    iovad = init_iova_domain(4096, 1)
    iova_domain_init_rcaches(iovad)
    for _ in range(live):
        alloc_iova(iovad, 1, LIMIT, True)
    return iovad


def _tree(iovad: IovaDomain) -> None:
    for _ in range(OPS):
        free_iova(iovad, alloc_iova(iovad, 1, LIMIT, True))


def _fast(iovad: IovaDomain) -> None:
    for _ in range(OPS):
        free_iova_fast(iovad, alloc_iova_fast(iovad, 1, LIMIT, True), 1)


def bench() -> list[BenchResult]:
    small, big = _domain(1_000), _domain(1_000_000)
    rows: list[BenchResult] = []
    for name, fn in (("tree", _tree), ("fast", _fast)):
        t_small = best_of(lambda fn=fn: fn(small)) / OPS * 1e6  # type: ignore[misc]
        t_big = best_of(lambda fn=fn: fn(big)) / OPS * 1e6  # type: ignore[misc]
        ratio = t_big / t_small
        rows.append(BenchResult(f"iova {name} alloc+free, 1k live", t_small, "us/op"))
        rows.append(
            BenchResult(
                f"iova {name} alloc+free, 1M live",
                t_big,
                "us/op",
                ratio,
                "same op at 1k live",
                "<= 1.5",
                ratio <= 1.5,
            )
        )
    return rows
