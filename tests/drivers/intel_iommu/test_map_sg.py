"""``dma_map_sg`` through dma-iommu on VT-d goes to the core's ``iommu_map_sg``: one
``__iommu_map`` per run of physically contiguous entries, ONE ``iotlb_sync_map``
over the whole IOVA range (on a caching-mode unit that is one page-selective IOTLB
invalidation, not one per run), and any failure unmaps what the call mapped."""

from __future__ import annotations

from itertools import accumulate
from typing import Any
from unittest.mock import patch

import pytest

from kernel.dma.direction import DMA_MAPPING_ERROR, DMA_TO_DEVICE
from kernel.dma.mapping import dma_map_sg, dma_unmap_sg
from kernel.dma.scatterlist import Scatterlist, sg_init_table, sg_set_page
from kernel.errno import EIO, ENOMEM
from kernel.fault_inject import count_points, injector
from kernel.iommu.dma_iommu import iommu_dma_live_iovas
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.iommu_h import IOMMU_READ
from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_map_sg, iommu_unmap
from kernel.mm import (
    GFP_ATOMIC,
    GFP_KERNEL,
    PAGE_SIZE,
    Page,
    __free_pages,
    alloc_pages,
    memory_write,
    phys_to_virt,
)
from kernel.trace import TraceEvent, capture
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory

QI_IOTLB = 2  # VT-d 6.5.2.3: IOTLB invalidate descriptor
CM_SECOND_STAGE = {"cm": True, "flts": False}
"""A caching-mode unit without first-stage tables (QEMU's ``caching-mode=on``): the
driver must flush even non-present-to-present changes, in ``iotlb_sync_map``."""


def _pairs(nblocks: int) -> tuple[list[Scatterlist], list[Page]]:
    """``2 * nblocks`` one-page entries, two from each order-1 block (physically
    contiguous), with a spacer page allocated after each block; where the allocator
    still puts blocks side by side the runs are longer, so tests derive the runs from
    the physical addresses (:func:`_runs`). Returns the list and the pages to give
    back with :func:`_free`."""
    pages: list[Page] = []
    for _ in range(nblocks):
        block, spacer = alloc_pages(GFP_KERNEL, 1), alloc_pages(GFP_KERNEL, 0)
        assert block is not None and spacer is not None
        pages += [block, spacer]
    sgl = sg_init_table(2 * nblocks)
    for i, sg in enumerate(sgl):
        sg_set_page(sg, pages[i // 2 * 2], PAGE_SIZE, (i % 2) * PAGE_SIZE)
    return sgl, pages


def _free(pages: list[Page]) -> None:
    for i, p in enumerate(pages):
        __free_pages(p, 1 - i % 2)


def _runs(phys: list[int]) -> list[tuple[int, int]]:
    """Reference coalescing: (start, length) of each physically contiguous run."""
    runs: list[tuple[int, int]] = []
    for p in phys:
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + PAGE_SIZE)
        else:
            runs.append((p, PAGE_SIZE))
    return runs


def _iotlb_range(e: TraceEvent) -> tuple[int, int]:
    """(address, bytes) of a page-selective IOTLB invalidation (ADDR, AM in qw1)."""
    qw1 = e.fields["qw"][1]
    return qw1 & ~0xFFF, PAGE_SIZE << (qw1 & 0x3F)


def test_caching_mode_syncs_once_over_the_whole_sg_range(make_vtd: VtdFactory) -> None:
    v = make_vtd(config=CM_SECOND_STAGE)
    sgl, blocks = _pairs(8)
    phys = [sg.phys for sg in sgl]
    for i, p in enumerate(phys):
        memory_write(phys_to_virt(p), bytes([i]) * 8)
    with capture("*") as events:
        assert dma_map_sg(v.edu, sgl, 16, DMA_TO_DEVICE) == 1
    base = sgl[0].dma_address
    assert sgl[0].dma_length == 16 * PAGE_SIZE
    maps = [(e.fields["paddr"], e.fields["size"]) for e in events if e.name == "iommu:map"]
    assert maps == _runs(phys)  # one __iommu_map per contiguous run, not per page
    flushes = [
        _iotlb_range(e)
        for e in events
        if e.name == "hw_vtd:qi_descriptor" and e.fields["type"] == QI_IOTLB
    ]
    assert flushes == [(base, 16 * PAGE_SIZE)]
    for i in range(16):
        data, fault = v.dma_read(v.edu, base + i * PAGE_SIZE, 8)
        assert fault is None and data == bytes([i]) * 8
    dma_unmap_sg(v.edu, sgl, 16, DMA_TO_DEVICE)
    assert iommu_dma_live_iovas(v.edu) == 0
    _free(blocks)


def _map_failing_at(v: Vtd, nth: int) -> tuple[int, int, list[int]]:
    """Map 520 entries (crossing into a second leaf table at entry 512) with the nth
    allocation point failed; check the unwind left nothing behind. Returns the pages
    mapped (whole ``__iommu_map`` calls) and unmapped on the way, and the index of
    the first entry of each physically contiguous run."""
    sgl, blocks = _pairs(260)
    starts = list(
        accumulate([0] + [size // PAGE_SIZE for _, size in _runs([sg.phys for sg in sgl])])
    )
    before = [(sg.offset, sg.length) for sg in sgl]
    injector().arm(nth)
    try:
        with capture("iommu:*") as events:
            assert dma_map_sg(v.edu, sgl, len(sgl), DMA_TO_DEVICE) == 0
    finally:
        site = injector().injected_at
        injector().disarm()
    assert site is not None
    assert [(sg.offset, sg.length) for sg in sgl] == before
    assert all(sg.dma_address == DMA_MAPPING_ERROR and not sg.dma_length for sg in sgl)
    assert iommu_dma_live_iovas(v.edu) == 0

    def pages(name: str, size: str) -> set[int]:
        return {
            e.fields["iova"] + off
            for e in events
            if e.name == name
            for off in range(0, e.fields[size], PAGE_SIZE)
        }

    # a run that fails part-way is unmapped by __iommu_map without a map event
    mapped, unmapped = pages("iommu:map", "size"), pages("iommu:unmap", "unmapped_size")
    assert mapped <= unmapped
    dom = iommu_get_domain_for_dev(v.edu)
    assert dom is not None
    assert all(iommu_iova_to_phys(dom, iova) == 0 for iova in unmapped)
    # the kernel is whole: the same list maps once nothing is failed
    n = dma_map_sg(v.edu, sgl, len(sgl), DMA_TO_DEVICE)
    assert n >= 1
    dma_unmap_sg(v.edu, sgl, len(sgl), DMA_TO_DEVICE)
    _free(blocks)
    return len(mapped), len(unmapped), starts[:-1]


def _points(make_vtd: VtdFactory) -> list[str]:
    v = make_vtd()
    sgl, blocks = _pairs(260)
    seen = count_points(lambda: dma_map_sg(v.edu, sgl, len(sgl), DMA_TO_DEVICE))
    dma_unmap_sg(v.edu, sgl, len(sgl), DMA_TO_DEVICE)
    _free(blocks)
    return seen


@pytest.mark.parametrize("which", ["first-table", "first-run", "second-leaf-table", "last-run"])
def test_fail_nth_over_map_sg_unwinds_with_nothing_mapped(make_vtd: VtdFactory, which: str) -> None:
    """Each kind of point the map passes that fails it: the leaf table of the first
    run, the first run's PTEs, the leaf table the list crosses into after 256 runs were
    mapped (so those must be unmapped), the last run's last PTE."""
    seen = _points(make_vtd)
    tables = [i for i, s in enumerate(seen) if s == "alloc_pages"]
    ptes = [i for i, s in enumerate(seen) if s == "iommu_pgtable"]  # one per page
    assert len(ptes) == 520 and seen[ptes[0] - 1] == "alloc_pages"
    assert ptes[511] < tables[-1] < ptes[512]
    index = {
        "first-table": ptes[0] - 1,
        "first-run": ptes[0],
        "second-leaf-table": tables[-1],
        "last-run": ptes[-1],
    }[which]
    mapped, unmapped, starts = _map_failing_at(make_vtd(), index + 1)
    # the failing run's own pages before the failed one are unrolled by __iommu_map
    failed_page = {"first-table": 0, "first-run": 0, "second-leaf-table": 512, "last-run": 519}
    at = failed_page[which]
    assert (mapped, unmapped) == (max(s for s in starts if s <= at), at)


def test_failed_sync_map_unmaps_every_run(make_vtd: VtdFactory) -> None:
    """``iotlb_sync_map`` may fail (an int since Linux 6.7): ``iommu_map_sg`` then
    unmaps all it mapped and returns the driver's errno."""
    v = make_vtd(config=CM_SECOND_STAGE)
    dom = iommu_get_domain_for_dev(v.edu)
    assert dom is not None
    sgl, blocks = _pairs(3)
    iova = 0x4000_0000

    def failing(domain: Any, at: int, size: int) -> None:
        assert (at, size) == (iova, 6 * PAGE_SIZE)
        raise EIO("sync refused")

    with patch.object(type(dom.ops), "iotlb_sync_map", staticmethod(failing)):
        assert iommu_map_sg(dom, iova, sgl, 6, IOMMU_READ, GFP_ATOMIC) == -EIO.errno
    assert all(iommu_iova_to_phys(dom, iova + i * PAGE_SIZE) == 0 for i in range(6))
    assert iommu_map_sg(dom, iova, sgl, 6, IOMMU_READ, GFP_ATOMIC) == 6 * PAGE_SIZE
    assert [iommu_iova_to_phys(dom, iova + i * PAGE_SIZE) for i in range(6)] == [
        sg.phys for sg in sgl
    ]
    assert iommu_map_sg(dom, iova, sgl, 0, IOMMU_READ, GFP_ATOMIC) == 0
    assert iommu_unmap(dom, iova, 6 * PAGE_SIZE) == 6 * PAGE_SIZE
    _free(blocks)


def test_map_sg_of_an_unmappable_run_is_enomem_and_keeps_earlier_runs_unmapped(
    make_vtd: VtdFactory,
) -> None:
    """The errno of the failing ``__iommu_map`` comes back; earlier runs are gone."""
    v = make_vtd()
    dom = iommu_get_domain_for_dev(v.edu)
    assert dom is not None
    sgl, blocks = _pairs(2)
    iova = 0x4000_0000
    assert iommu_map_sg(dom, iova, sgl, 4, IOMMU_READ, GFP_ATOMIC) == 4 * PAGE_SIZE
    iommu_unmap(dom, iova, 4 * PAGE_SIZE)  # the tables stay: one point per PTE now
    pts = count_points(lambda: iommu_map_sg(dom, iova, sgl, 4, IOMMU_READ, GFP_ATOMIC))
    iommu_unmap(dom, iova, 4 * PAGE_SIZE)
    assert pts == ["iommu_pgtable"] * 4
    injector().arm(4)  # the second run's last PTE
    try:
        assert iommu_map_sg(dom, iova, sgl, 4, IOMMU_READ, GFP_ATOMIC) == -ENOMEM.errno
    finally:
        injector().disarm()
    assert all(iommu_iova_to_phys(dom, iova + i * PAGE_SIZE) == 0 for i in range(4))
    _free(blocks)
