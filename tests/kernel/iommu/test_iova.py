"""IOVA allocator properties (iova.c semantics)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.fault_inject import injector
from kernel.iommu import iova as iova_mod
from kernel.iommu.iova import (
    IOVA_MAG_SIZE,
    alloc_iova,
    alloc_iova_fast,
    find_iova,
    free_iova,
    free_iova_fast,
    init_iova_domain,
    iova_domain_init_rcaches,
    iova_pfn,
)
from tests.kernel.conftest import KernelFactory, take_warnings

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


def test_granule_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="not a power of two"):
        init_iova_domain(3000, 1)
    iovad = init_iova_domain(4096, 1)
    assert iova_pfn(iovad, 0x12345) == 0x12


def test_zero_sized_allocations_fail() -> None:
    iovad = init_iova_domain(4096, 1)
    iova_domain_init_rcaches(iovad)
    assert alloc_iova(iovad, 0, LIMIT, True) == 0
    assert alloc_iova_fast(iovad, 0, LIMIT, True) == 0


def test_find_and_free_of_unallocated_pfns() -> None:
    iovad = init_iova_domain(4096, 1)
    a = alloc_iova(iovad, 1, LIMIT, True)
    b = alloc_iova(iovad, 4, LIMIT, True)
    assert find_iova(iovad, 0) is None  # below every range
    assert find_iova(iovad, b + 4) is None  # in the gap between b and a
    assert find_iova(iovad, a + 1) is None  # above: only the anchor
    free_iova(iovad, b + 4)  # no range there: nothing happens
    assert find_iova(iovad, b + 2) == (b, b + 3) and find_iova(iovad, a) == (a, a)


def test_fast_free_of_an_unallocated_pfn_warns(make_kernel: KernelFactory) -> None:
    k = make_kernel(iommu=False)
    iovad = init_iova_domain(4096, 1)
    iova_domain_init_rcaches(iovad)
    free_iova_fast(iovad, 42, 1)
    assert take_warnings(k) == ["iova: free of unallocated pfn 0x2a"]
    # The anchor is a tree key but never an allocation.
    free_iova_fast(iovad, iova_mod.IOVA_ANCHOR, 1)
    assert take_warnings(k) == [f"iova: free of unallocated pfn {iova_mod.IOVA_ANCHOR:#x}"]


def test_rcache_fills_loaded_then_prev_then_depot_and_drains_them_all() -> None:
    iovad = init_iova_domain(4096, 1)
    iova_domain_init_rcaches(iovad)
    n = 2 * IOVA_MAG_SIZE + 1
    pfns = [alloc_iova_fast(iovad, 1, LIMIT, True) for _ in range(n)]
    for pfn in pfns:
        free_iova_fast(iovad, pfn, 1)
    rc = iovad.rcaches[0]  # type: ignore[index]
    assert (len(rc.loaded), len(rc.prev), len(rc.depot)) == (1, IOVA_MAG_SIZE, 1)
    assert iovad.live_ranges() == 0
    nodes = len(iovad.tree)
    again = [alloc_iova_fast(iovad, 1, LIMIT, True) for _ in range(n)]
    assert sorted(again) == sorted(pfns) and len(iovad.tree) == nodes
    assert (rc.loaded, rc.prev, rc.depot) == ([], [], [])


def test_magazine_allocation_failure_frees_to_the_tree() -> None:
    iovad = init_iova_domain(4096, 1)
    iova_domain_init_rcaches(iovad)
    pfns = [alloc_iova_fast(iovad, 1, LIMIT, True) for _ in range(2 * IOVA_MAG_SIZE + 1)]
    for pfn in pfns[:-1]:
        free_iova_fast(iovad, pfn, 1)
    injector().arm(1, frozenset({"iova_magazine"}))
    try:
        free_iova_fast(iovad, pfns[-1], 1)
    finally:
        injector().disarm()
    assert find_iova(iovad, pfns[-1]) is None  # back in the tree's free space
    rc = iovad.rcaches[0]  # type: ignore[index]
    assert not rc.depot and len(rc.loaded) == len(rc.prev) == IOVA_MAG_SIZE


def test_cached_range_above_the_limit_is_not_handed_out() -> None:
    iovad = init_iova_domain(4096, 1)
    iova_domain_init_rcaches(iovad)
    high = alloc_iova_fast(iovad, 1, LIMIT, True)
    free_iova_fast(iovad, high, 1)
    low = alloc_iova_fast(iovad, 1, 0xFFFF, True)
    assert low <= 0xFFFF and iovad.rcaches[0].loaded == [high]  # type: ignore[index]


def test_exhaustion_flushes_the_range_caches_and_retries() -> None:
    iovad = init_iova_domain(4096, 1)
    iova_domain_init_rcaches(iovad)
    singles = [alloc_iova_fast(iovad, 1, 8, True) for _ in range(8)]
    assert sorted(singles) == list(range(1, 9))
    for pfn in singles:
        free_iova_fast(iovad, pfn, 1)  # all parked in the order-0 cache
    assert alloc_iova_fast(iovad, 2, 8, False) == 0  # without a flush: nothing fits
    pfn = alloc_iova_fast(iovad, 2, 8, True)
    assert pfn and pfn % 2 == 0 and iovad.rcaches[0].loaded == []  # type: ignore[index]
