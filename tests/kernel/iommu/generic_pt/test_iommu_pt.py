"""The generic page table's contract, on every format (drivers/iommu/generic_pt/
kunit_iommu.h and kunit_generic_pt.h check the same things upstream)."""

from __future__ import annotations

import pytest

from kernel.bitfield import BIT
from kernel.boot import Kernel
from kernel.errno import EADDRINUSE, EINVAL, ENOMEM, ENXIO, EOPNOTSUPP, ERANGE, KernelError
from kernel.fault_inject import injector
from kernel.iommu.generic_pt.iommu_pt import PtIommu
from kernel.iommu.generic_pt.pt_common import (
    PT_ENTRY_OA,
    PT_FEAT_FLUSH_RANGE,
    PT_FEAT_FLUSH_RANGE_NO_GAPS,
    PT_FEAT_SIGN_EXTEND,
)
from kernel.iommu.iommu_h import IOMMU_READ, IOMMU_WRITE, IommuDomain, IommuIotlbGather
from kernel.iommu.iommu_map import iommu_pgsize
from tests.kernel.conftest import take_warnings
from tests.kernel.iommu.generic_pt.tables import FORMATS, SZ_1G, SZ_2M, SZ_4K, make_table

RW = IOMMU_READ | IOMMU_WRITE
fmts = pytest.mark.parametrize("fmt", sorted(FORMATS))


@fmts
def test_mapped_pages_translate_and_unmapped_ones_do_not(k: Kernel, fmt: str) -> None:
    t, _, _ = make_table(fmt)
    assert t.map_pages(0x7000, 0x123000, SZ_4K, 3, RW, 0) == 3 * SZ_4K
    assert t.iova_to_phys(0x7000) == 0x123000
    assert t.iova_to_phys(0x9ABC) == 0x125ABC
    assert t.iova_to_phys(0x6FFF) == 0 and t.iova_to_phys(0xA000) == 0
    t.deinit()


@fmts
def test_mapping_over_a_live_page_is_eaddrinuse_and_changes_nothing(k: Kernel, fmt: str) -> None:
    t, _, _ = make_table(fmt)
    t.map_pages(0x3000, 0x800000, SZ_4K, 1, RW, 0)
    tables = t.tables
    with pytest.raises(EADDRINUSE):
        t.map_pages(0x1000, 0x900000, SZ_4K, 4, RW, 0)  # pages 1, 2 free; 3 taken
    assert [t.iova_to_phys(a) for a in (0x1000, 0x2000, 0x3000, 0x4000)] == [0, 0, 0x800000, 0]
    assert t.tables == tables
    assert take_warnings(k) == []
    t.deinit()


@fmts
def test_a_page_under_a_large_leaf_or_a_large_leaf_over_pages_is_eaddrinuse(
    k: Kernel, fmt: str
) -> None:
    t, _, _ = make_table(fmt)
    t.map_pages(SZ_2M, 0x4000_0000, SZ_2M, 1, RW, 0)
    with pytest.raises(EADDRINUSE):
        t.map_pages(SZ_2M + 0x5000, 0x1000, SZ_4K, 1, RW, 0)
    t.map_pages(2 * SZ_2M + 0x5000, 0x1000, SZ_4K, 1, RW, 0)
    with pytest.raises(EADDRINUSE):
        t.map_pages(2 * SZ_2M, 0x4020_0000, SZ_2M, 1, RW, 0)
    assert t.iova_to_phys(SZ_2M + 0x5000) == 0x4000_5000
    assert t.iova_to_phys(2 * SZ_2M + 0x5000) == 0x1000
    assert t.iova_to_phys(2 * SZ_2M) == 0
    t.deinit()


@fmts
def test_a_range_beyond_the_va_or_oa_width_is_erange(k: Kernel, fmt: str) -> None:
    t, _, _ = make_table(fmt, vasz=39)
    with pytest.raises(ERANGE):
        t.map_pages((1 << 39) - SZ_4K, 0, SZ_4K, 2, RW, 0)
    with pytest.raises(ERANGE):
        t.map_pages(0, 1 << t.max_oasz_lg2, SZ_4K, 1, RW, 0)
    assert t.iova_to_phys(1 << 39) == 0
    assert t.unmap_pages(1 << 39, SZ_4K, 1, IommuIotlbGather()) == 0
    assert t.tables == 1
    t.deinit()


@fmts
def test_aligned_ranges_get_the_largest_leaf_the_bitmap_allows(k: Kernel, fmt: str) -> None:
    t, dom, _ = make_table(fmt)
    assert dom.pgsize_bitmap == SZ_4K | SZ_2M | SZ_1G
    t.map_pages(SZ_1G, 2 * SZ_1G, SZ_4K, 512 * 512, RW, 0)  # one 1 GiB leaf
    assert t.tables == 2 and len(t.walk(SZ_1G)) == 2
    t.map_pages(0, SZ_1G, SZ_2M, 2, RW, 0)  # two 2 MiB leaves
    assert t.tables == 3 and len(t.walk(SZ_2M)) == 3
    assert t.iova_to_phys(SZ_1G + 0x12345) == 2 * SZ_1G + 0x12345
    assert t.iova_to_phys(SZ_2M + 0x5678) == SZ_1G + SZ_2M + 0x5678
    t.deinit()
    t, dom, _ = make_table(fmt, bitmap=SZ_4K)
    t.map_pages(0, SZ_1G, SZ_2M, 1, RW, 0)
    assert t.tables == 4 and len(t.walk(0x1000)) == 4  # 512 4 KiB leaves
    t.deinit()


@fmts
def test_a_misaligned_or_empty_request_maps_nothing(k: Kernel, fmt: str) -> None:
    t, _, _ = make_table(fmt)
    with pytest.raises(ENXIO):
        t.map_pages(0x800, 0, SZ_4K, 1, RW, 0)
    with pytest.raises(EINVAL):
        t.map_pages(0, 0, SZ_4K, 0, RW, 0)
    with pytest.raises(EINVAL):
        t.map_pages(0, 0, SZ_4K, 1, 0, 0)
    assert take_warnings(k) == ["generic_pt: map without R/W"]
    assert t.tables == 1
    t.deinit()


@fmts
def test_tables_an_unmap_empties_are_freed_only_by_the_flush(k: Kernel, fmt: str) -> None:
    t, _, fl = make_table(fmt, bitmap=SZ_4K)
    t.map_pages(SZ_1G, 0x100000, SZ_4K, 512, RW, 0)  # one full 4 KiB-leaf table
    assert t.tables == 4
    gather = IommuIotlbGather()
    free = k.mm.free_page_count
    assert t.unmap_pages(SZ_1G, SZ_2M, 1, gather) == SZ_2M
    assert len(gather.freelist) == 1 and t.tables == 3  # the 2 MiB-level table stays
    assert (gather.start, gather.end) == (SZ_1G, SZ_1G + SZ_2M - 1)
    assert k.mm.free_page_count == free  # still allocated until the flush
    fl.sync(gather)
    assert k.mm.free_page_count == free + 1
    t.deinit()


@fmts
def test_a_partial_unmap_keeps_the_table(k: Kernel, fmt: str) -> None:
    t, _, _ = make_table(fmt)
    t.map_pages(0, 0x100000, SZ_4K, 4, RW, 0)
    gather = IommuIotlbGather()
    assert t.unmap_pages(0, SZ_4K, 2, gather) == 2 * SZ_4K
    assert gather.freelist == [] and t.tables == 4
    assert (gather.start, gather.end) == (0, 2 * SZ_4K - 1)
    assert t.iova_to_phys(0x2000) == 0x102000
    t.deinit()


@fmts
def test_a_large_leaf_replaces_an_empty_table_through_the_flush(k: Kernel, fmt: str) -> None:
    t, _, fl = make_table(fmt)
    t.map_pages(SZ_2M, 0x100000, SZ_4K, 1, RW, 0)
    t.unmap_pages(SZ_2M, SZ_4K, 1, IommuIotlbGather())  # the 4 KiB table stays, empty
    assert t.tables == 4
    t.map_pages(SZ_2M, 0x4000_0000, SZ_2M, 1, RW, 0)
    assert fl.log == [(SZ_2M, 2 * SZ_2M - 1, 1)] and t.tables == 3
    assert t.iova_to_phys(SZ_2M + 0x1234) == 0x4000_1234
    t.deinit()


@fmts
def test_unmap_stops_at_a_hole_and_in_the_middle_of_a_large_leaf(k: Kernel, fmt: str) -> None:
    t, _, _ = make_table(fmt)
    t.map_pages(0, 0x100000, SZ_4K, 2, RW, 0)
    t.map_pages(SZ_2M, 0x4000_0000, SZ_2M, 1, RW, 0)
    gather = IommuIotlbGather()
    assert t.unmap_pages(0, SZ_4K, 4, gather) == 2 * SZ_4K  # page 2 is a hole
    assert t.unmap_pages(SZ_2M + SZ_4K, SZ_4K, 1, gather) == 0
    assert t.unmap_pages(SZ_2M, SZ_4K, 1, gather) == SZ_2M  # the whole leaf goes
    assert gather.end == 2 * SZ_2M - 1
    assert t.iova_to_phys(SZ_2M) == 0
    t.deinit()


@fmts
def test_no_memory_for_a_table_is_enomem_with_nothing_mapped(k: Kernel, fmt: str) -> None:
    t, _, _ = make_table(fmt)
    t.map_pages(0, 0x100000, SZ_4K, 1, RW, 0)
    injector().arm(1, frozenset({"alloc_pages"}))
    try:
        with pytest.raises(ENOMEM):
            t.map_pages(SZ_2M - SZ_4K, 0x200000, SZ_4K, 2, RW, 0)  # second page needs a table
    finally:
        injector().disarm()
    assert t.iova_to_phys(SZ_2M - SZ_4K) == 0
    t.deinit()


def test_without_memory_for_the_top_table_init_fails(k: Kernel) -> None:
    injector().arm(1, frozenset({"alloc_pages"}))
    try:
        with pytest.raises(ENOMEM):
            make_table("vtdss")
    finally:
        injector().disarm()


@pytest.mark.parametrize(
    ("fmt", "vasz"), [("x86_64", 30), ("x86_64", 58), ("vtdss", 30), ("vtdss", 58), ("armv8", 52)]
)
def test_a_va_width_the_format_cannot_walk_is_refused(k: Kernel, fmt: str, vasz: int) -> None:
    with pytest.raises(KernelError) as err:
        make_table(fmt, vasz=vasz)
    assert err.value.errno in (EINVAL.errno, EOPNOTSUPP.errno)


def test_unsupported_features_are_refused(k: Kernel) -> None:
    with pytest.raises(EINVAL):
        make_table("armv8", features=BIT(PT_FEAT_SIGN_EXTEND))


def test_sign_extended_x86_64_maps_the_upper_half_and_not_the_hole(k: Kernel) -> None:
    feats = BIT(PT_FEAT_FLUSH_RANGE) | BIT(PT_FEAT_SIGN_EXTEND)
    t, dom, _ = make_table("x86_64", features=feats)
    assert dom.geometry.aperture_end == (1 << 47) - 1
    high = (1 << 64) - SZ_2M
    t.map_pages(high, 0x200000, SZ_4K, 1, RW, 0)
    assert t.iova_to_phys(high + 0x10) == 0x200010
    assert t.iova_to_phys(high & ((1 << 48) - 1)) == 0  # non-canonical: not translated
    with pytest.raises(ERANGE):
        t.map_pages(1 << 47, 0, SZ_4K, 1, RW, 0)
    assert t.unmap_pages(high, SZ_4K, 1, IommuIotlbGather()) == SZ_4K
    t.deinit()


def test_no_gaps_flushes_what_was_gathered_before_a_disjoint_range(k: Kernel) -> None:
    t, _, fl = make_table("vtdss", features=BIT(PT_FEAT_FLUSH_RANGE_NO_GAPS))
    t.map_pages(0, 0x100000, SZ_4K, 1, RW, 0)
    t.map_pages(SZ_1G, 0x100000, SZ_4K, 1, RW, 0)
    gather = IommuIotlbGather()
    t.unmap_pages(0, SZ_4K, 1, gather)
    t.unmap_pages(SZ_1G, SZ_4K, 1, gather)
    assert fl.log == [(0, SZ_4K - 1, 0)]
    assert (gather.start, gather.end) == (SZ_1G, SZ_1G + SZ_4K - 1)
    t.deinit()


def _iommu_map(t: PtIommu, dom: IommuDomain, va: int, pa: int, length: int) -> None:
    """What ``iommu_map`` does with the table: page-size runs, one map_pages each."""
    while length:
        pgsize, count = iommu_pgsize(dom, va, pa, length)
        assert t.map_pages(va, pa, pgsize, count, RW, 0) == pgsize * count
        va, pa, length = va + pgsize * count, pa + pgsize * count, length - pgsize * count


def _leaves(t: PtIommu, va: int, end: int) -> list[int]:
    """The size of each leaf from ``va`` to ``end`` (the range must be mapped)."""
    sizes = []
    while va < end:
        level, _, entry = t.walk(va)[-1]
        assert t.fmt.entry_type(entry, level) == PT_ENTRY_OA
        sizes.append(1 << (12 + 9 * level))
        va += sizes[-1]
    return sizes


@fmts
def test_a_mixed_range_gets_2m_1g_2m_leaves(k: Kernel, fmt: str) -> None:
    """kunit ``test_mixed`` (an Amazon report, 2025-08-26): 14 x 2 MiB, 3 x 1 GiB, 3 x 2 MiB."""
    t, dom, _ = make_table(fmt)
    start, end = 0x3FE400 << 12, 0x4C0600 << 12
    _iommu_map(t, dom, start, start, end - start)
    assert _leaves(t, start, end) == [SZ_2M] * 14 + [SZ_1G] * 3 + [SZ_2M] * 3
    assert t.iova_to_phys(end - 1) == end - 1 and t.iova_to_phys(start) == start
    t.deinit()


@fmts
def test_a_small_range_at_an_odd_physical_address_maps_4k_pages(k: Kernel, fmt: str) -> None:
    """kunit ``test_pgsize_boundary`` (an AMD report)."""
    t, dom, _ = make_table(fmt)
    va, pa, length = 0xFEF80000, 0x208B95D000 & ((1 << t.max_oasz_lg2) - 1), 0x20000
    _iommu_map(t, dom, va, pa, length)
    assert _leaves(t, va, va + length) == [SZ_4K] * 32
    assert all(t.iova_to_phys(va + off) == pa + off for off in range(0, length, SZ_4K))
    t.deinit()


@fmts
def test_unmapping_the_start_of_a_large_leaf_takes_it_whole_and_stops(k: Kernel, fmt: str) -> None:
    """kunit ``test_unmap_split``."""
    t, _, fl = make_table(fmt)
    for small, big in ((SZ_4K, SZ_2M), (SZ_4K, SZ_1G), (SZ_2M, SZ_1G)):
        t.map_pages(0, 0, big, 1, RW, 0)
        t.map_pages(big, 0, big, 1, RW, 0)
        gather = IommuIotlbGather()
        assert t.unmap_pages(0, small, 1, gather) == big
        assert t.iova_to_phys(big) == 0 and t.iova_to_phys(0) == 0
        assert t.unmap_pages(big, big, 1, gather) == big
        fl.sync(gather)
    t.deinit()
