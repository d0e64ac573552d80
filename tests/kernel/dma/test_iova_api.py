"""The two-step IOVA API (newer than 6.12) over the mock IOMMU: allocation, links
back to back in one range, partial unlink, destroy, the fallback signal without an
IOMMU, DMA-API debug tracking, bad input, and fail_nth over the link path."""

from __future__ import annotations

import pytest

from kernel.boot import current_kernel
from kernel.dma.debug import TYPE_IOVA, dma_debug_state
from kernel.dma.direction import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE
from kernel.dma.iova_api import (
    DMA_IOVA_USE_SWIOTLB,
    DmaIovaState,
    dma_iova_destroy,
    dma_iova_free,
    dma_iova_link,
    dma_iova_size,
    dma_iova_sync,
    dma_iova_try_alloc,
    dma_iova_unlink,
    dma_use_iova,
)
from kernel.errno import EINVAL, EIO, ENOMEM
from kernel.fault_inject import injector
from kernel.iommu.dma_iommu import iommu_dma_live_iovas
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.iommu_map import iommu_iova_to_phys
from kernel.mm import GFP_KERNEL, PAGE_SIZE, Page, __free_pages, alloc_pages
from kernel.pci import PciDev
from tests.kernel.conftest import EDU_BDF, KernelFactory, pdev_at, take_warnings


def _pages(n: int) -> list[Page]:
    out = []
    for _ in range(n):
        p = alloc_pages(GFP_KERNEL, 0)
        assert p is not None
        out.append(p)
    return out


def _free(pages: list[Page]) -> None:
    for p in pages:
        __free_pages(p, 0)


@pytest.fixture
def dev(make_kernel: KernelFactory) -> PciDev:
    make_kernel(iommu=True)
    return pdev_at(EDU_BDF)


def _iova_entries() -> list[tuple[int, int]]:
    return sorted(
        (e.dev_addr, e.size)
        for lst in dma_debug_state().entries.values()
        for e in lst
        if e.type == TYPE_IOVA
    )


def test_links_land_back_to_back_and_unlink_keeps_the_range(dev: PciDev) -> None:
    pages = _pages(4)
    state = DmaIovaState()
    assert dma_iova_try_alloc(dev, state, pages[0].phys + 0x100, 4 * PAGE_SIZE - 0x100)
    assert dma_use_iova(state) and state.addr & 0xFFF == 0x100
    assert dma_iova_size(state) == 4 * PAGE_SIZE - 0x100
    assert dma_iova_link(dev, state, pages[0].phys + 0x100, 0, PAGE_SIZE - 0x100, 1) == 0
    for i in range(1, 4):
        off = i * PAGE_SIZE - 0x100
        assert dma_iova_link(dev, state, pages[i].phys, off, PAGE_SIZE - (i == 3) * 0x100, 1) == 0
    assert dma_iova_sync(dev, state, 0, dma_iova_size(state)) == 0
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    for i, p in enumerate(pages):
        assert iommu_iova_to_phys(dom, state.addr - 0x100 + i * PAGE_SIZE + 4) == p.phys + 4
    assert len(_iova_entries()) == 4
    base = state.addr - 0x100
    dma_iova_unlink(dev, state, 2 * PAGE_SIZE - 0x100, 2 * PAGE_SIZE - 0x100, DMA_TO_DEVICE)
    assert iommu_iova_to_phys(dom, base + 2 * PAGE_SIZE) == 0
    assert iommu_iova_to_phys(dom, base + PAGE_SIZE) == pages[1].phys
    assert dma_use_iova(state) and len(_iova_entries()) == 2
    dma_iova_destroy(dev, state, 2 * PAGE_SIZE - 0x100, DMA_TO_DEVICE)
    assert not dma_use_iova(state) and iommu_iova_to_phys(dom, base) == 0
    assert iommu_dma_live_iovas(dev) == 0 and not dma_debug_state().entries
    assert dma_debug_state().error_count == 0
    _free(pages)


def test_without_an_iommu_try_alloc_says_use_the_streaming_api(
    make_kernel: KernelFactory,
) -> None:
    make_kernel(iommu=False)
    state = DmaIovaState(addr=5, size_=7)
    assert not dma_iova_try_alloc(pdev_at(EDU_BDF), state, 0x10_0000, PAGE_SIZE)
    assert (state.addr, state.size_) == (0, 0) and not dma_use_iova(state)


@pytest.mark.iommulab_allow("dma-debug")
def test_linking_past_the_allocation_is_refused_and_reported(dev: PciDev) -> None:
    (page,) = _pages(1)
    state = DmaIovaState()
    assert dma_iova_try_alloc(dev, state, page.phys, PAGE_SIZE)
    assert dma_iova_link(dev, state, page.phys, PAGE_SIZE, PAGE_SIZE, 1) == -EINVAL.errno
    assert "links beyond the allocated IOVA range" in dma_debug_state().errors[0]
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None and iommu_iova_to_phys(dom, state.addr + PAGE_SIZE) == 0
    dma_iova_destroy(dev, state, 0, 1)
    assert iommu_dma_live_iovas(dev) == 0
    assert len(take_warnings(current_kernel())) == 1
    _free([page])


def test_unaligned_link_after_the_first_is_eio(dev: PciDev) -> None:
    (page,) = _pages(1)
    state = DmaIovaState()
    assert dma_iova_try_alloc(dev, state, page.phys, 2 * PAGE_SIZE)
    assert dma_iova_link(dev, state, page.phys + 0x80, PAGE_SIZE, 64, 1) == -EIO.errno
    dma_iova_free(dev, state)
    assert iommu_dma_live_iovas(dev) == 0
    assert take_warnings(current_kernel()) == ["dma_iova_link: unaligned link"]
    _free([page])


@pytest.mark.iommulab_allow("dma-debug", "warn")
def test_unlinking_what_was_not_linked_is_reported(dev: PciDev) -> None:
    pages = _pages(2)
    state = DmaIovaState()
    assert dma_iova_try_alloc(dev, state, pages[0].phys, 2 * PAGE_SIZE)
    assert dma_iova_link(dev, state, pages[0].phys, 0, PAGE_SIZE, DMA_FROM_DEVICE) == 0
    dma_iova_unlink(dev, state, PAGE_SIZE, PAGE_SIZE, DMA_FROM_DEVICE)
    errors = dma_debug_state().errors
    assert "tries to unlink IOVA it has not linked" in errors[0]
    dma_iova_unlink(dev, state, 0, PAGE_SIZE, DMA_BIDIRECTIONAL)
    assert "unlinks IOVA with different direction" in dma_debug_state().errors[1]
    dma_iova_destroy(dev, state, 0, DMA_FROM_DEVICE)
    assert iommu_dma_live_iovas(dev) == 0 and not _iova_entries()
    warns = take_warnings(current_kernel())
    assert warns[1] == "dma_iova_unlink: unmapped 0x0 of 0x1000"  # the WARN_ON Linux has
    _free(pages)


def test_bad_sizes_and_states_warn_and_change_nothing(dev: PciDev) -> None:
    k = current_kernel()
    state = DmaIovaState()
    assert not dma_iova_try_alloc(dev, state, 0, 0)
    assert not dma_iova_try_alloc(dev, state, 0, DMA_IOVA_USE_SWIOTLB)
    assert dma_iova_link(dev, state, 0x10_0000, 0, PAGE_SIZE, 1) == -EINVAL.errno
    assert dma_iova_sync(dev, state, 0, PAGE_SIZE) == -EINVAL.errno
    dma_iova_unlink(dev, state, 0, PAGE_SIZE, 1)
    dma_iova_free(dev, state)
    assert take_warnings(k) == [
        "dma_iova_try_alloc of size 0",
        "dma_iova_try_alloc: size too large",
        "dma_iova_link without an IOVA",
        "dma_iova_sync without an IOVA",
        "dma_iova_unlink without an IOVA",
        "dma_iova_free without an IOVA",
    ]
    assert iommu_dma_live_iovas(dev) == 0


@pytest.mark.parametrize("nth", range(1, 4))
def test_a_failed_link_unwinds_with_destroy(dev: PciDev, nth: int) -> None:
    pages = _pages(8)
    state = DmaIovaState()
    assert dma_iova_try_alloc(dev, state, pages[0].phys, 8 * PAGE_SIZE)
    injector().arm(nth, frozenset({"iommu_pgtable"}))
    linked = 0
    try:
        for i, p in enumerate(pages):
            # every link lands in a fresh 2 MiB-aligned table only when it has to;
            # at most the first few can need page-table pages
            ret = dma_iova_link(dev, state, p.phys, i * PAGE_SIZE, PAGE_SIZE, 1)
            if ret:
                assert ret == -ENOMEM.errno
                break
            linked += PAGE_SIZE
    finally:
        failed = injector().injected_at is not None
        injector().disarm()
    dma_iova_destroy(dev, state, linked, 1)
    assert iommu_dma_live_iovas(dev) == 0 and not dma_debug_state().entries
    assert failed or linked == 8 * PAGE_SIZE
    _free(pages)
