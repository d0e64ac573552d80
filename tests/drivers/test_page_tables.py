"""One set of page-table tests for both generations: 6.12's driver-private tables
(``iommu.pt=driver``, the default) and the generic page table (``iommu.pt=generic``,
merged after 6.12), on VT-d first stage (x86_64 format), VT-d second stage (vtdss) and
SMMUv3 stage 1 (ARM LPAE). The reference is a dict of what the test mapped; the
hardware model's own walk is checked by device DMA through the attached domain.

Where the generations differ the test says which kernel does what."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from attrs import astuple
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.arm_smmu_v3.io_pgtable_arm import IoPgtableCfg
from drivers.arm_smmu_v3.iommu_pt import ArmSmmuPtPgtable, arm_smmu_alloc_pgtbl
from kernel.errno import EADDRINUSE, EEXIST, EFAULT, ENOMEM, ERANGE
from kernel.fault_inject import injector
from kernel.iommu.generic_pt import iommu_pt_generic
from kernel.iommu.iommu import iommu_domain_free, iommu_paging_domain_alloc
from kernel.iommu.iommu_h import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    IommuIotlbGather,
    iommu_iotlb_sync,
)
from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_map, iommu_unmap, iommu_unmap_fast
from kernel.mm import GFP_KERNEL, PAGE_OFFSET
from tests.drivers.intel_iommu.conftest import boot_vtd
from tests.drivers.page_table_rigs import TARGETS, Rig, rig, rig_fixture

__all__ = ["rig"]

RW = IOMMU_READ | IOMMU_WRITE
SZ_4K, SZ_2M = 1 << 12, 1 << 21
BASE = 0x4000_0000
PHYS = 0x0200_0000  # RAM the device can read: 32 MiB + slot * 2 MiB

MAP = st.tuples(st.just("map"), st.integers(0, 5), st.integers(-1, 509), st.integers(1, 3))
UNMAP = st.tuples(st.just("unmap"), st.integers(0, 30), st.just(0), st.just(0))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(st.one_of(MAP, UNMAP), min_size=1, max_size=10))
def test_map_unmap_and_iova_to_phys_match_the_mappings_asked_for(
    rig: Rig, ops: list[tuple[str, int, int, int]]
) -> None:
    dom = rig.domain()
    ref: dict[int, int] = {}
    live: list[tuple[int, int]] = []
    for kind, slot, page, count in ops:
        if kind == "map":
            off = 0 if page < 0 else page * SZ_4K
            iova, phys = BASE + slot * SZ_2M + off, PHYS + slot * SZ_2M + off
            size = SZ_2M if page < 0 else count * SZ_4K
            pages = range(iova, iova + size, SZ_4K)
            if any(p in ref for p in pages):
                continue  # overlaps are where the generations differ: see below
            iommu_map(dom, iova, phys, size, RW, GFP_KERNEL)
            ref.update({p: phys + p - iova for p in pages})
            live.append((iova, size))
        elif live:
            iova, size = live.pop(slot % len(live))
            assert iommu_unmap(dom, iova, size) == size
            for p in range(iova, iova + size, SZ_4K):
                del ref[p]
            assert iommu_iova_to_phys(dom, iova) == 0
            assert rig.dma_read(iova, 8)[1] is not None  # the IOTLB was flushed
        for iova, size in live:
            last = iova + size - SZ_4K
            for p in (iova, last):
                assert iommu_iova_to_phys(dom, p + 0x88) == ref[p] + 0x88
            data, fault = rig.dma_read(last + 0x40, 16)
            assert fault is None and data == rig.ram(ref[last] + 0x40, 16)
    for iova, size in live:
        assert iommu_unmap(dom, iova, size) == size
    rig.release(dom)


@pytest.fixture(params=TARGETS)
def driver_rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    yield from rig_fixture("driver", request.param)


@pytest.fixture(params=TARGETS)
def generic_rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    yield from rig_fixture("generic", request.param)


def test_generic_pt_mapping_over_a_live_page_is_eaddrinuse_and_changes_nothing(
    generic_rig: Rig,
) -> None:
    """After 6.12 (generic_pt): ``map_pages`` refuses; ``iommu_map`` unmaps what the
    call had mapped, so the pages before the overlap stay unmapped."""
    rig = generic_rig
    dom = rig.domain()
    iommu_map(dom, BASE + 2 * SZ_4K, PHYS, SZ_4K, RW, GFP_KERNEL)
    with pytest.raises(EADDRINUSE):
        iommu_map(dom, BASE, PHYS + SZ_2M, 4 * SZ_4K, RW, GFP_KERNEL)
    got = [iommu_iova_to_phys(dom, BASE + i * SZ_4K) for i in range(4)]
    assert got == [0, 0, PHYS, 0]
    assert rig.take_warnings() == []
    iommu_unmap(dom, BASE + 2 * SZ_4K, SZ_4K)
    rig.release(dom)


def test_6_12_vtd_mapping_over_a_live_page_warns_and_keeps_the_old_entry(
    driver_rig: Rig,
) -> None:
    """Linux 6.12: VT-d's ``__domain_mapping`` finds the PTE set, prints "DMAR: ERROR:
    DMA PTE for vPFN ... already set", WARNs, keeps the old entry and counts the page
    as mapped, so ``iommu_map`` succeeds; io-pgtable-arm checks the table's entries
    first, WARNs and fails the call with EEXIST having written none."""
    rig = driver_rig
    dom = rig.domain()
    iommu_map(dom, BASE + 2 * SZ_4K, PHYS, SZ_4K, RW, GFP_KERNEL)
    if rig.target == "smmuv3-stage1":
        with pytest.raises(EEXIST):
            iommu_map(dom, BASE, PHYS + SZ_2M, 4 * SZ_4K, RW, GFP_KERNEL)
        assert rig.take_warnings() == [f"io-pgtable-arm: iova {BASE + 2 * SZ_4K:#x} already mapped"]
        expect = [0, 0, PHYS, 0]
    else:
        iommu_map(dom, BASE, PHYS + SZ_2M, 4 * SZ_4K, RW, GFP_KERNEL)
        vpfn = (BASE >> 12) + 2
        assert rig.take_warnings() == [f"DMA PTE for vPFN {vpfn:#x} already set"]
        assert f"DMAR: ERROR: DMA PTE for vPFN {vpfn:#x} already set (to " in rig.kernel.dmesg()
        expect = [PHYS + SZ_2M, PHYS + SZ_2M + SZ_4K, PHYS, PHYS + SZ_2M + 3 * SZ_4K]
        iommu_unmap(dom, BASE, 4 * SZ_4K)
    assert [iommu_iova_to_phys(dom, BASE + i * SZ_4K) for i in range(4)] in (expect, [0] * 4)
    iommu_unmap(dom, BASE + 2 * SZ_4K, SZ_4K)
    rig.release(dom)


def test_a_range_beyond_the_table_is_erange_under_generic_pt(generic_rig: Rig) -> None:
    dom = generic_rig.domain()
    with pytest.raises(ERANGE):
        iommu_map(dom, 1 << 48, PHYS, SZ_4K, RW, GFP_KERNEL)
    assert generic_rig.take_warnings() == []
    generic_rig.release(dom)


def test_a_range_beyond_the_table_under_6_12(driver_rig: Rig) -> None:
    """Linux 6.12: ``intel_iommu_map`` says the width is not sufficient (EFAULT);
    io-pgtable-arm WARNs and returns ERANGE."""
    dom = driver_rig.domain()
    if driver_rig.target == "smmuv3-stage1":
        with pytest.raises(ERANGE):
            iommu_map(dom, 1 << 48, PHYS, SZ_4K, RW, GFP_KERNEL)
        assert len(driver_rig.take_warnings()) == 1
    else:
        with pytest.raises(EFAULT):
            iommu_map(dom, 1 << 48, PHYS, SZ_4K, RW, GFP_KERNEL)
        assert "iommu width (48) is not sufficient" in driver_rig.kernel.dmesg()
    driver_rig.release(dom)


@pytest.mark.parametrize("target", ["vtd-first-stage", "vtd-second-stage"])
def test_generic_pt_vtd_frees_emptied_tables_only_after_the_iotlb_flush(target: str) -> None:
    gen = rig_fixture("generic", target)
    rig = next(gen)
    dom = rig.domain()
    for i in range(512):  # one 4 KiB-leaf table, full
        iommu_map(dom, BASE + i * SZ_4K, PHYS + i * SZ_4K, SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert rig.dma_read(BASE, 8)[1] is None  # the unit caches the walk
    free = rig.kernel.mm.free_page_count
    gather = IommuIotlbGather()
    assert iommu_unmap_fast(dom, BASE, SZ_2M, gather) == SZ_2M
    assert len(gather.freelist) == 1 and rig.kernel.mm.free_page_count == free
    iommu_iotlb_sync(dom, gather)
    assert rig.kernel.mm.free_page_count == free + 1
    assert rig.dma_read(BASE, 8)[1] is not None
    rig.release(dom)
    with pytest.raises(StopIteration):
        next(gen)


@pytest.mark.parametrize("target", ["vtd-first-stage", "vtd-second-stage"])
def test_generic_pt_vtd_parks_a_queued_unmaps_tables_until_the_domain_lets_go(
    target: str,
) -> None:
    """A flush-queue (lazy) unmap syncs no gather: the emptied table waits on the
    domain's deferred list, freed by the queue's full flush or with the domain."""
    gen = rig_fixture("generic", target)
    rig = next(gen)
    dom = iommu_paging_domain_alloc(rig.edu)
    assert dom.ops is not None
    for i in range(512):
        iommu_map(dom, BASE + i * SZ_4K, PHYS + i * SZ_4K, SZ_4K, IOMMU_READ, GFP_KERNEL)
    gather = IommuIotlbGather(queued=True)
    assert dom.ops.unmap_pages(dom, BASE, SZ_2M, 1, gather) == SZ_2M  # type: ignore[attr-defined]
    assert gather.freelist == [] and len(dom.deferred_free) == 1  # type: ignore[attr-defined]
    free = rig.kernel.mm.free_page_count
    iommu_domain_free(dom)
    assert rig.kernel.mm.free_page_count > free + 1  # the parked table and the rest
    with pytest.raises(StopIteration):
        next(gen)


def test_generic_pt_vtd_domain_allocation_unwinds_without_a_top_table() -> None:
    gen = rig_fixture("generic", "vtd-second-stage")
    rig = next(gen)
    injector().arm(2, frozenset({"alloc_pages"}))  # the 6.12 pgd, then the library's
    try:
        with pytest.raises(ENOMEM):
            iommu_paging_domain_alloc(rig.edu)
    finally:
        injector().disarm()
    with pytest.raises(StopIteration):
        next(gen)


def test_generic_pt_smmuv3_table_is_walked_like_io_pgtable_arm() -> None:
    gen = rig_fixture("generic", "smmuv3-stage1")
    rig = next(gen)
    dom = rig.domain()
    ops = dom.pgtbl_ops  # type: ignore[attr-defined]
    assert isinstance(ops, ArmSmmuPtPgtable) and ops.tables == 1
    iommu_map(dom, BASE, PHYS, SZ_4K, RW, GFP_KERNEL)
    assert [lvl for lvl, _, _ in ops.walk(BASE)] == [0, 1, 2, 3] and ops.tables == 4
    iommu_unmap(dom, BASE, SZ_4K)
    bad = IoPgtableCfg(pgsize_bitmap=SZ_4K, ias=48, oas=47, tlb=dom)
    assert arm_smmu_alloc_pgtbl(bad, dom) is None  # no IPS encoding for 47 bits
    rig.release(dom)
    with pytest.raises(StopIteration):
        next(gen)


def test_iommu_pt_takes_driver_or_generic_only() -> None:
    k, _ = boot_vtd("iommu.pt=bogus")
    try:
        assert "Malformed early option iommu.pt: " in k.dmesg()
        assert not iommu_pt_generic()
    finally:
        k.shutdown()


def _vtd_walk(rig: Rig, dom: object, iova: int) -> list[int]:
    """The entries on ``iova``'s path from the domain's root, read from RAM as the
    VT-d unit reads them (9 bits a level, address in bits 51:12)."""
    pgd = dom.pgd - PAGE_OFFSET  # type: ignore[attr-defined]
    levels = dom.agaw + 2  # type: ignore[attr-defined]
    out = []
    for level in range(levels, 0, -1):
        entry = int.from_bytes(rig.ram(pgd + ((iova >> (3 + 9 * level)) & 0x1FF) * 8, 8), "little")
        out.append(entry)
        if level == 1 or entry & 0x80:
            break
        pgd = entry & ((1 << 52) - 1) & ~0xFFF
    return out


@pytest.mark.parametrize("target", ["vtd-first-stage", "vtd-second-stage", "vtd-legacy"])
@pytest.mark.parametrize("prot", [RW, IOMMU_READ, IOMMU_WRITE])
def test_vtd_entries_are_bit_identical_in_both_generations(target: str, prot: int) -> None:
    """The generic formats write what 6.12's driver writes: same flags in every table
    entry, the same leaf for a 4 KiB page and for a 2 MiB page. One known difference:
    6.12's ``__domain_mapping`` sets R in every second-stage leaf (eea53c581688), the
    generic vtdss format keeps a write-only leaf write-only (as upstream since 2025)."""
    seen = []
    for generation in ("driver", "generic"):
        gen = rig_fixture(generation, target)
        rig = next(gen)
        dom = rig.domain()
        iommu_map(dom, BASE, PHYS, SZ_4K, prot, GFP_KERNEL)
        iommu_map(dom, BASE + SZ_2M, PHYS, SZ_2M, prot, GFP_KERNEL)
        small, big = _vtd_walk(rig, dom, BASE), _vtd_walk(rig, dom, BASE + SZ_2M)
        seen.append(([e & 0xFFF for e in small[:-1]], small[-1], len(small), big[-1], len(big)))
        iommu_unmap(dom, BASE, SZ_4K)
        iommu_unmap(dom, BASE + SZ_2M, SZ_2M)
        rig.release(dom)
        with pytest.raises(StopIteration):
            next(gen)
    if prot == IOMMU_WRITE and target != "vtd-first-stage":
        drv, gen_ = seen
        assert drv[1] & 1 and drv[3] & 1 and not gen_[1] & 1 and not gen_[3] & 1
        seen[0] = (drv[0], drv[1] & ~1, drv[2], drv[3] & ~1, drv[4])
    assert seen[0] == seen[1]
    assert seen[0][1] & ~0xFFF == PHYS and seen[0][3] & 0x80


@pytest.mark.parametrize(
    "prot", [RW, IOMMU_READ, RW | IOMMU_CACHE, RW | IOMMU_MMIO | IOMMU_NOEXEC, RW | IOMMU_PRIV]
)
def test_smmuv3_descriptors_are_bit_identical_in_both_generations(prot: int) -> None:
    """The generic armv8 format writes what io-pgtable-arm writes for stage 1."""
    seen = []
    for generation in ("driver", "generic"):
        gen = rig_fixture(generation, "smmuv3-stage1")
        rig = next(gen)
        dom = rig.domain()
        iommu_map(dom, BASE, PHYS, SZ_4K, prot, GFP_KERNEL)
        iommu_map(dom, BASE + SZ_2M, PHYS, SZ_2M, prot, GFP_KERNEL)
        ops = dom.pgtbl_ops  # type: ignore[attr-defined]
        small, big = ops.walk(BASE), ops.walk(BASE + SZ_2M)
        seen.append(
            (
                [(lvl, e & 0xFFF) for lvl, _, e in small[:-1]],
                [(lvl, e) for lvl, _, e in small[-1:] + big[-1:]],
                (astuple(ops.cfg.tcr), ops.cfg.mair),
            )
        )
        iommu_unmap(dom, BASE, SZ_4K)
        iommu_unmap(dom, BASE + SZ_2M, SZ_2M)
        rig.release(dom)
        with pytest.raises(StopIteration):
            next(gen)
    assert seen[0] == seen[1]
