"""DMA API breadth: scatter-gather merging through dma-iommu (count, lengths,
max segment size, segment boundary), dma_alloc_pages / dma_alloc_noncoherent,
dma_map_resource, dma_need_sync, dma_get_sgtable, the mapping-size queries, and a
fail_nth sweep over all of them plus dma_pool and the two-step IOVA API."""

from __future__ import annotations

import itertools
from contextlib import suppress
from unittest.mock import patch

import pytest

from hw import machine as hw_machine
from kernel.boot import Kernel
from kernel.dma.debug import TYPE_NONCOHERENT, TYPE_RESOURCE, dma_debug_state
from kernel.dma.direction import (
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
)
from kernel.dma.iova_api import (
    DmaIovaState,
    dma_iova_destroy,
    dma_iova_link,
    dma_iova_sync,
    dma_iova_try_alloc,
)
from kernel.dma.mapping import (
    SIZE_MAX,
    dma_alloc_coherent,
    dma_alloc_noncoherent,
    dma_alloc_pages,
    dma_free_coherent,
    dma_free_noncoherent,
    dma_free_pages,
    dma_get_sgtable,
    dma_map_resource,
    dma_map_sg,
    dma_mapping_error,
    dma_max_mapping_size,
    dma_need_sync,
    dma_opt_mapping_size,
    dma_set_max_seg_size,
    dma_set_seg_boundary,
    dma_unmap_resource,
    dma_unmap_sg,
)
from kernel.dma.pool import dma_pool_alloc, dma_pool_create, dma_pool_destroy, dma_pool_free
from kernel.dma.scatterlist import Scatterlist, sg_init_table, sg_set_page
from kernel.errno import ENXIO, KernelError
from kernel.fault_inject import count_points, injector
from kernel.iommu.dma_iommu import iommu_dma_live_iovas
from kernel.iommu.iommu import iommu_get_domain_for_dev, iommu_release_device
from kernel.iommu.iommu_map import iommu_iova_to_phys
from kernel.mm import (
    GFP_KERNEL,
    PAGE_SIZE,
    Page,
    __free_pages,
    alloc_pages,
    memory_read,
    page_address,
    virt_to_phys,
)
from kernel.pci import PciDev, pci_resource_start
from tests.kernel.conftest import (
    EDU_BDF,
    PASID_EDU_KIND,
    KernelFactory,
    boot_kernel,
    pdev_at,
    take_warnings,
)


@pytest.fixture(params=[False, True], ids=["direct", "iommu"])
def booted(request: pytest.FixtureRequest, make_kernel: KernelFactory) -> tuple[Kernel, PciDev]:
    k = make_kernel(iommu=request.param)
    return k, pdev_at(EDU_BDF)


def _discontiguous_pages(n: int) -> tuple[list[Page], list[Page]]:
    """``n`` pages no two of which are physically adjacent (and the spacers)."""
    pages, spacers = [], []
    for _ in range(n):
        p, s = alloc_pages(GFP_KERNEL, 0), alloc_pages(GFP_KERNEL, 0)
        assert p is not None and s is not None
        pages.append(p)
        spacers.append(s)
    assert all(b.pfn - a.pfn > 1 for a, b in itertools.pairwise(pages))
    return pages, spacers


def _sg_of(pages: list[Page]) -> list[Scatterlist]:
    sgl = sg_init_table(len(pages))
    for sg, p in zip(sgl, pages, strict=True):
        sg_set_page(sg, p, PAGE_SIZE, 0)
    return sgl


def _reference_segments(base: int, npages: int, max_seg: int, boundary: int) -> list[int]:
    """Segment lengths of ``npages`` whole pages laid out back to back from IOVA
    ``base``: a new segment where the address is on a boundary or the current one
    would exceed ``max_seg`` (the merge rule of dma-iommu, restated)."""
    lens: list[int] = []
    for i in range(npages):
        addr = base + i * PAGE_SIZE
        if lens and addr & boundary and lens[-1] + PAGE_SIZE <= max_seg:
            lens[-1] += PAGE_SIZE
        else:
            lens.append(PAGE_SIZE)
    return lens


@pytest.mark.parametrize(
    ("max_seg", "boundary"),
    [(1 << 16, (1 << 64) - 1), (0x3000, 0xFFFF), (1 << 20, 0x7FFF)],
    ids=["default", "12k-max-64k-boundary", "32k-boundary"],
)
def test_map_sg_merges_discontiguous_pages_into_iova_segments(
    make_kernel: KernelFactory, max_seg: int, boundary: int
) -> None:
    k = make_kernel(iommu=True)
    dev = pdev_at(EDU_BDF)
    dma_set_max_seg_size(dev, max_seg)
    dma_set_seg_boundary(dev, boundary)
    pages, spacers = _discontiguous_pages(64)
    sgl = _sg_of(pages)
    n = dma_map_sg(dev, sgl, 64, DMA_TO_DEVICE)
    expected = _reference_segments(sgl[0].dma_address, 64, max_seg, boundary)
    assert n == len(expected) and [sg.dma_length for sg in sgl[:n]] == expected
    assert all(sg.dma_address == DMA_MAPPING_ERROR and sg.dma_length == 0 for sg in sgl[n:])
    assert all(
        sg.dma_address + sg.dma_length == nxt.dma_address for sg, nxt in itertools.pairwise(sgl[:n])
    )
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    for i, p in enumerate(pages):  # every page reachable at base + i * 4K
        assert iommu_iova_to_phys(dom, sgl[0].dma_address + i * PAGE_SIZE + 8) == p.phys + 8
    assert all(sg.length == PAGE_SIZE and sg.offset == 0 for sg in sgl)
    dma_unmap_sg(dev, sgl, 64, DMA_TO_DEVICE)
    assert iommu_dma_live_iovas(dev) == 0
    assert dma_debug_state().error_count == 0 and not k.warnings()
    for p in pages + spacers:
        __free_pages(p, 0)


def test_map_sg_without_iommu_keeps_one_segment_per_entry(make_kernel: KernelFactory) -> None:
    make_kernel(iommu=False)
    dev = pdev_at(EDU_BDF)
    pages, spacers = _discontiguous_pages(8)
    sgl = _sg_of(pages)
    assert dma_map_sg(dev, sgl, 8, DMA_BIDIRECTIONAL) == 8
    assert [sg.dma_address for sg in sgl] == [p.phys for p in pages]
    dma_unmap_sg(dev, sgl, 8, DMA_BIDIRECTIONAL)
    for p in pages + spacers:
        __free_pages(p, 0)


def test_map_sg_keeps_unaligned_entries_apart_and_their_offsets(
    make_kernel: KernelFactory,
) -> None:
    make_kernel(iommu=True)
    dev = pdev_at(EDU_BDF)
    pages, spacers = _discontiguous_pages(3)
    sgl = sg_init_table(3)
    sg_set_page(sgl[0], pages[0], PAGE_SIZE - 0x100, 0x100)  # ends on the page end
    sg_set_page(sgl[1], pages[1], PAGE_SIZE, 0)  # appended to the first
    sg_set_page(sgl[2], pages[2], 0x200, 0x40)  # starts inside a page: its own segment
    assert dma_map_sg(dev, sgl, 3, DMA_FROM_DEVICE) == 2
    assert sgl[0].dma_address & 0xFFF == 0x100 and sgl[0].dma_length == 2 * PAGE_SIZE - 0x100
    assert sgl[1].dma_address & 0xFFF == 0x40 and sgl[1].dma_length == 0x200
    assert (sgl[0].offset, sgl[0].length, sgl[2].offset) == (0x100, PAGE_SIZE - 0x100, 0x40)
    dma_unmap_sg(dev, sgl, 3, DMA_FROM_DEVICE)
    assert iommu_dma_live_iovas(dev) == 0
    for p in pages + spacers:
        __free_pages(p, 0)


def test_map_sg_failure_restores_entries_and_maps_nothing(make_kernel: KernelFactory) -> None:
    make_kernel(iommu=True)
    dev = pdev_at(EDU_BDF)
    pages, spacers = _discontiguous_pages(4)
    sgl = _sg_of(pages)
    sgl[1].offset, sgl[1].length = 0x80, 0x100
    injector().arm(1, frozenset({"iommu_pgtable"}))
    try:
        assert dma_map_sg(dev, sgl, 4, DMA_TO_DEVICE) == 0
    finally:
        injector().disarm()
    assert [(sg.offset, sg.length) for sg in sgl] == [(0, PAGE_SIZE), (0x80, 0x100)] + [
        (0, PAGE_SIZE)
    ] * 2
    assert iommu_dma_live_iovas(dev) == 0 and not dma_debug_state().entries
    for p in pages + spacers:
        __free_pages(p, 0)


def test_alloc_pages_is_zeroed_mapped_and_tracked_as_noncoherent(
    booted: tuple[Kernel, PciDev],
) -> None:
    k, dev = booted
    page, handle = dma_alloc_pages(dev, 3 * PAGE_SIZE - 5, DMA_FROM_DEVICE, GFP_KERNEL)
    assert page is not None and handle != DMA_MAPPING_ERROR
    assert memory_read(page_address(page), 64) == bytes(64)
    (entry,) = [e for lst in dma_debug_state().entries.values() for e in lst]
    assert (entry.type, entry.size, entry.paddr) == (TYPE_NONCOHERENT, 3 * PAGE_SIZE, page.phys)
    if dev.dma_iommu:
        dom = iommu_get_domain_for_dev(dev)
        assert dom is not None and iommu_iova_to_phys(dom, handle + 0x2010) == page.phys + 0x2010
    else:
        assert handle == page.phys
    dma_free_pages(dev, 3 * PAGE_SIZE - 5, page, handle, DMA_FROM_DEVICE)
    assert not dma_debug_state().entries and dma_debug_state().error_count == 0
    assert iommu_dma_live_iovas(dev) == 0 and not k.warnings()


@pytest.mark.iommulab_allow("dma-debug")
def test_free_noncoherent_with_other_direction_is_reported(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    vaddr, handle = dma_alloc_noncoherent(dev, 100, DMA_TO_DEVICE, GFP_KERNEL)
    assert vaddr is not None
    dma_free_noncoherent(dev, 100, vaddr, handle, DMA_FROM_DEVICE)
    assert "frees DMA memory with different direction" in dma_debug_state().errors[0]
    assert iommu_dma_live_iovas(dev) == 0
    take_warnings(k)


def test_map_resource_maps_a_peer_bar_and_refuses_ram(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    bar = pci_resource_start(dev, 0)
    h = dma_map_resource(dev, bar + 0x40, 8, DMA_BIDIRECTIONAL)
    assert not dma_mapping_error(dev, h)
    (entry,) = [e for lst in dma_debug_state().entries.values() for e in lst]
    assert entry.type == TYPE_RESOURCE and entry.paddr == bar + 0x40
    if dev.dma_iommu:
        dom = iommu_get_domain_for_dev(dev)
        assert dom is not None and iommu_iova_to_phys(dom, h) == bar + 0x40
    else:
        assert h == bar + 0x40
    dma_unmap_resource(dev, h, 8, DMA_BIDIRECTIONAL)
    assert not dma_debug_state().entries and iommu_dma_live_iovas(dev) == 0
    assert dma_map_resource(dev, 0x20_0000, 8, DMA_TO_DEVICE) == DMA_MAPPING_ERROR
    assert take_warnings(k) == ["dma_map_resource of RAM"]


@pytest.mark.iommulab_allow("dma-debug")
def test_unmap_resource_of_a_single_mapping_is_reported(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    h = dma_map_resource(dev, pci_resource_start(dev, 0), 4, DMA_TO_DEVICE)
    dma_mapping_error(dev, h)
    from kernel.dma.mapping import dma_unmap_single

    dma_unmap_single(dev, h, 4, DMA_TO_DEVICE)
    assert "frees DMA memory with wrong function" in dma_debug_state().errors[0]
    take_warnings(k)


def test_need_sync_and_mapping_sizes(booted: tuple[Kernel, PciDev]) -> None:
    _k, dev = booted
    assert dma_need_sync(dev, 0x1000) is False
    assert dma_max_mapping_size(dev) == SIZE_MAX
    assert dma_opt_mapping_size(dev) == (128 * 1024 if dev.dma_iommu else SIZE_MAX)


def test_get_sgtable_describes_a_coherent_buffer(booted: tuple[Kernel, PciDev]) -> None:
    _k, dev = booted
    vaddr, handle = dma_alloc_coherent(dev, 5000, GFP_KERNEL)
    assert vaddr is not None
    sgt = dma_get_sgtable(dev, vaddr, handle, 5000)
    assert sgt.orig_nents == 1 and sgt.sgl[0].phys == virt_to_phys(vaddr)
    assert sgt.sgl[0].length == 2 * PAGE_SIZE
    with pytest.raises(ENXIO):
        dma_get_sgtable(dev, 0x1000, handle, 5000)
    dma_free_coherent(dev, 5000, vaddr, handle)


# --------------------------------------------------------------------------- fail_nth


def _scenario() -> list[str]:
    inj = injector()
    was, inj.active = inj.active, False
    k = boot_kernel()
    dev = pdev_at(EDU_BDF)
    pages, spacers = _discontiguous_pages(16)
    baseline = {(a.kind, a.addr) for a in k.mm.live()}
    inj.active = was
    with suppress(KernelError):
        _body(dev, pages)
    inj.active = False
    problems = []
    if iommu_dma_live_iovas(dev):
        problems.append("IOVA leaked")
    iommu_release_device(dev)  # the domain's page-table pages go with it
    live = {(a.kind, a.addr) for a in k.mm.live()}
    if live - baseline:
        problems.append(f"leaked: {sorted(live - baseline)}")
    if dma_debug_state().entries or dma_debug_state().error_count:
        problems.append(f"DMA-API debug: {dma_debug_state().errors}")
    problems += [w.message for w in k.warnings()]
    for p in pages + spacers:
        __free_pages(p, 0)
    k.shutdown()
    inj.active = was
    return problems


def _body(dev: PciDev, pages: list[Page]) -> None:
    sgl = _sg_of(pages)
    if dma_map_sg(dev, sgl, len(sgl), DMA_TO_DEVICE):
        dma_unmap_sg(dev, sgl, len(sgl), DMA_TO_DEVICE)
    page, handle = dma_alloc_pages(dev, 2 * PAGE_SIZE, DMA_BIDIRECTIONAL, GFP_KERNEL)
    if page is not None:
        dma_free_pages(dev, 2 * PAGE_SIZE, page, handle, DMA_BIDIRECTIONAL)
    h = dma_map_resource(dev, pci_resource_start(dev, 0), 64, DMA_FROM_DEVICE)
    if not dma_mapping_error(dev, h):
        dma_unmap_resource(dev, h, 64, DMA_FROM_DEVICE)
    state = DmaIovaState()
    if dma_iova_try_alloc(dev, state, pages[0].phys, len(pages) * PAGE_SIZE):
        linked = 0
        for i, p in enumerate(pages):
            if dma_iova_link(dev, state, p.phys, i * PAGE_SIZE, PAGE_SIZE, DMA_TO_DEVICE):
                break
            linked += PAGE_SIZE
        if linked == len(pages) * PAGE_SIZE:
            dma_iova_sync(dev, state, 0, linked)
        dma_iova_destroy(dev, state, linked, DMA_TO_DEVICE)
    pool = dma_pool_create("t", dev, 64, 64, 0)
    assert pool is not None
    blocks = [dma_pool_alloc(pool, GFP_KERNEL) for _ in range(100)]
    for vaddr, dma in blocks:
        if vaddr is not None:
            dma_pool_free(pool, vaddr, dma)
    dma_pool_destroy(pool)


def _count() -> int:
    with patch.dict(hw_machine.DEVICE_KINDS, PASID_EDU_KIND):
        return len(count_points(_scenario))


POINTS = _count()


@pytest.mark.parametrize("nth", range(1, POINTS + 1))
def test_failure_in_new_dma_paths_unwinds_cleanly(nth: int) -> None:
    inj = injector()
    inj.arm(nth)
    try:
        problems = _scenario()
        site = inj.injected_at
    finally:
        inj.disarm()
    assert site is not None
    assert problems == []
