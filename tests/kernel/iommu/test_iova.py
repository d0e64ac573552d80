"""IOVA allocator properties (iova.c semantics)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.iommu.iova import (
    alloc_iova,
    alloc_iova_fast,
    find_iova,
    free_iova,
    free_iova_fast,
    init_iova_domain,
    iova_domain_init_rcaches,
)

LIMIT = (1 << 32) // 4096 - 1


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 64), min_size=1, max_size=40),
    limit_bits=st.integers(16, 40),
    frees=st.lists(st.integers(0, 39), max_size=20),
)
def test_allocations_are_aligned_disjoint_below_limit_and_all_freed(
    sizes: list[int], limit_bits: int, frees: list[int]
) -> None:
    iovad = init_iova_domain(4096, 1)
    limit = (1 << limit_bits) - 1
    got: list[tuple[int, int]] = []
    for size in sizes:
        pfn = alloc_iova(iovad, size, limit, True)
        if not pfn:
            continue
        align = 1 << (size - 1).bit_length()
        assert pfn % align == 0
        assert pfn + size - 1 <= limit
        assert pfn >= 1
        for lo, n in got:
            assert pfn + size <= lo or lo + n <= pfn
        got.append((pfn, size))
    for i in sorted(set(frees), reverse=True):
        if i < len(got):
            free_iova(iovad, got.pop(i)[0])
    for pfn, _ in got:
        free_iova(iovad, pfn)
    assert iovad.live_ranges() == 0


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(1, 40)), max_size=80))
def test_fast_path_through_rcache_never_overlaps(ops: list[tuple[bool, int]]) -> None:
    iovad = init_iova_domain(4096, 1)
    iova_domain_init_rcaches(iovad)
    live: dict[int, int] = {}
    for alloc, size in ops:
        if alloc or not live:
            pfn = alloc_iova_fast(iovad, size, LIMIT, True)
            assert pfn
            for lo, n in live.items():
                assert pfn + size <= lo or lo + n <= pfn
            live[pfn] = size
        else:
            pfn, n = live.popitem()
            free_iova_fast(iovad, pfn, n)
    for pfn, n in live.items():
        free_iova_fast(iovad, pfn, n)
    assert iovad.live_ranges() == 0


def test_allocation_is_top_down() -> None:
    iovad = init_iova_domain(4096, 1)
    a = alloc_iova(iovad, 1, LIMIT, True)
    b = alloc_iova(iovad, 1, LIMIT, True)
    assert a == LIMIT and b == LIMIT - 1


def test_exhaustion_returns_zero_and_recovers_after_free() -> None:
    iovad = init_iova_domain(4096, 1)
    pfns = [alloc_iova(iovad, 1, 8, True) for _ in range(8)]
    assert sorted(pfns) == list(range(1, 9))
    assert alloc_iova(iovad, 1, 8, True) == 0
    free_iova(iovad, 5)
    assert alloc_iova(iovad, 1, 8, True) == 5
    assert find_iova(iovad, 5) == (5, 5)


def test_freed_range_is_reused_from_rcache_first() -> None:
    iovad = init_iova_domain(4096, 1)
    iova_domain_init_rcaches(iovad)
    a = alloc_iova_fast(iovad, 3, LIMIT, True)
    free_iova_fast(iovad, a, 3)
    assert alloc_iova_fast(iovad, 4, LIMIT, True) == a
