"""The two-step IOVA API (newer than 6.12) driving the DSA: a 1 MiB scatterlist of
4 KiB pages linked into one contiguous IOVA range on VT-d and moved by one memcpy
descriptor; unlink + free leave no mapping and no stale IOTLB entry (a second
transfer reusing the range reads the new pages); without an IOMMU the driver falls
back to the streaming API and the bytes still arrive."""

from __future__ import annotations

import pytest

from hw.machine import Machine
from hw.vtd.unit import VtdUnit
from iommulab.presets import PRESETS
from kernel.boot import Kernel
from kernel.dma.debug import dma_debug_state
from kernel.dma.direction import DMA_FROM_DEVICE, DMA_TO_DEVICE
from kernel.dma.dmaengine import (
    DMA_COMPLETE,
    DMA_PREP_INTERRUPT,
    DmaChan,
    dma_request_chan,
    dma_sync_wait,
    dmaengine_prep_dma_memcpy,
    dmaengine_submit,
)
from kernel.dma.iova_api import (
    DmaIovaState,
    dma_iova_destroy,
    dma_iova_link,
    dma_iova_sync,
    dma_iova_try_alloc,
    dma_iova_unlink,
    dma_use_iova,
)
from kernel.dma.mapping import (
    dma_map_sg,
    dma_map_single,
    dma_mapping_error,
    dma_unmap_sg,
    dma_unmap_single,
)
from kernel.dma.scatterlist import sg_init_table, sg_set_page
from kernel.iommu.dma_iommu import iommu_dma_flush_queue_pending, iommu_dma_live_iovas
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.iommu_map import iommu_iova_to_phys
from kernel.mm import (
    GFP_KERNEL,
    PAGE_SIZE,
    Page,
    __free_pages,
    alloc_pages,
    alloc_pages_exact,
    free_pages_exact,
    memory_read,
    memory_write,
    page_address,
)
from tests.drivers.idxd.conftest import Boot, dsa0

SZ_1M = 1 << 20
NPAGES = SZ_1M // PAGE_SIZE


def _pages(seed: int) -> tuple[list[Page], list[Page]]:
    """256 physically discontiguous pages, each filled with its own pattern."""
    pages, gaps = [], []
    for i in range(NPAGES):
        p, g = alloc_pages(GFP_KERNEL, 0), alloc_pages(GFP_KERNEL, 0)
        assert p is not None and g is not None
        memory_write(page_address(p), bytes([(seed + i) & 0xFF]) * PAGE_SIZE)
        pages.append(p)
        gaps.append(g)
    return pages, gaps


def _copy(chan: DmaChan, dst: int, src: int, size: int) -> None:
    tx = dmaengine_prep_dma_memcpy(chan, dst, src, size, DMA_PREP_INTERRUPT)
    assert tx is not None
    assert dma_sync_wait(chan, dmaengine_submit(tx)) == DMA_COMPLETE


def _move(chan: DmaChan, pages: list[Page]) -> tuple[bytes, bool]:
    """What a driver does: the IOVA API when it can, the streaming API otherwise.
    Returns the bytes that arrived and whether the IOVA API was used."""
    dev = chan.device.dev
    dst = alloc_pages_exact(SZ_1M, GFP_KERNEL)
    assert dst is not None
    dst_dma = dma_map_single(dev, dst, SZ_1M, DMA_FROM_DEVICE)
    assert not dma_mapping_error(dev, dst_dma)
    state = DmaIovaState()
    if dma_iova_try_alloc(dev, state, pages[0].phys, SZ_1M):
        for i, p in enumerate(pages):
            assert dma_iova_link(dev, state, p.phys, i * PAGE_SIZE, PAGE_SIZE, DMA_TO_DEVICE) == 0
        assert dma_iova_sync(dev, state, 0, SZ_1M) == 0
        _copy(chan, dst_dma, state.addr, SZ_1M)  # one descriptor for the whole range
        dma_iova_unlink(dev, state, 0, SZ_1M, DMA_TO_DEVICE)
        dma_iova_destroy(dev, state, 0, DMA_TO_DEVICE)
        used = True
    else:
        assert not dma_use_iova(state)
        sgl = sg_init_table(NPAGES)
        for sg, p in zip(sgl, pages, strict=True):
            sg_set_page(sg, p, PAGE_SIZE, 0)
        n = dma_map_sg(dev, sgl, NPAGES, DMA_TO_DEVICE)
        assert n > 0
        off = 0
        for sg in sgl[:n]:
            _copy(chan, dst_dma + off, sg.dma_address, sg.dma_length)
            off += sg.dma_length
        dma_unmap_sg(dev, sgl, NPAGES, DMA_TO_DEVICE)
        used = False
    dma_unmap_single(dev, dst_dma, SZ_1M, DMA_FROM_DEVICE)
    got = memory_read(dst, SZ_1M)
    free_pages_exact(dst, SZ_1M)
    return got, used


def _expected(seed: int) -> bytes:
    return b"".join(bytes([(seed + i) & 0xFF]) * PAGE_SIZE for i in range(NPAGES))


def _entries() -> int:
    return sum(len(lst) for lst in dma_debug_state().entries.values())


def _free(*lists: list[Page]) -> None:
    for lst in lists:
        for p in lst:
            __free_pages(p, 0)


def _vtd(k: Kernel) -> VtdUnit:
    m = k.machine
    assert isinstance(m, Machine)
    unit = m.iommus["dmar0"]
    assert isinstance(unit, VtdUnit)
    return unit


@pytest.mark.parametrize("strict", [False, True], ids=["lazy", "strict"])
def test_iova_link_moves_1mib_of_4k_pages_through_one_range_on_vtd(
    make_kernel: Boot, strict: bool
) -> None:
    k = make_kernel(
        dict(PRESETS["default"]), "iommu.strict=1" if strict else "iommu.strict=0", with_intel=True
    )
    wq = next(wq for wq in dsa0().wqs if wq.dma_chan is not None)
    assert wq.dma_chan is not None
    chan = dma_request_chan(None, wq.dma_chan.name)
    dev = chan.device.dev
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    iovas, entries = iommu_dma_live_iovas(dev), _entries()
    pages, gaps = _pages(1)
    got, used = _move(chan, pages)
    assert used and got == _expected(1)
    # only the streaming dst mapping may wait in a lazy domain's flush queue
    live = iommu_dma_live_iovas(dev) - iommu_dma_flush_queue_pending(dom)
    assert live == iovas and _entries() == entries
    # the range is free and unmapped: the next transfer gets the same IOVA and
    # must read the new pages, never a cached translation of the old ones
    state = DmaIovaState()
    assert dma_iova_try_alloc(dev, state, 0, SZ_1M)
    assert all(iommu_iova_to_phys(dom, state.addr + i * PAGE_SIZE) == 0 for i in range(NPAGES))
    dma_iova_destroy(dev, state, 0, DMA_TO_DEVICE)
    pages2, gaps2 = _pages(77)
    got2, _ = _move(chan, pages2)
    assert got2 == _expected(77)
    assert _vtd(k).stats.stale_uses == 0 and _vtd(k).stats.faults == 0
    assert dma_debug_state().error_count == 0
    _free(pages, gaps, pages2, gaps2)


def test_without_an_iommu_the_driver_falls_back_to_streaming(make_kernel: Boot) -> None:
    make_kernel()
    chan = dma_request_chan(None, "memcpy")
    entries = _entries()
    pages, gaps = _pages(5)
    got, used = _move(chan, pages)
    assert not used and got == _expected(5)
    assert _entries() == entries and dma_debug_state().error_count == 0
    _free(pages, gaps)
