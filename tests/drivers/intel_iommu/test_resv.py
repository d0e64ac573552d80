"""VT-d reserved regions: the interrupt window is reported as ``msi``, and the DMA API
never hands out an IOVA inside it or inside the PCI host-bridge window, even when a
device maps until its 32-bit IOVA space is exhausted."""

from __future__ import annotations

import itertools

from hw.machine import MMIO_WINDOW_BASE, MMIO_WINDOW_END
from kernel.dma.direction import DMA_BIT_MASK, DMA_TO_DEVICE
from kernel.dma.mapping import (
    dma_map_single,
    dma_mapping_error,
    dma_set_mask_and_coherent,
    dma_unmap_single,
)
from kernel.iommu.debugfs import render_iommu_groups
from kernel.iommu.iommu_resv import iommu_group_show_resv_regions
from kernel.mm import GFP_KERNEL, __get_free_pages, free_pages
from tests.drivers.intel_iommu.conftest import Vtd

MSI_LO, MSI_HI = 0xFEE0_0000, 0xFEEF_FFFF
SZ_2M = 1 << 21
SZ_4K = 1 << 12


def test_group_reserved_regions_list_the_interrupt_window(vtd: Vtd) -> None:
    group = vtd.edu.iommu_group
    assert group is not None
    assert iommu_group_show_resv_regions(group) == "0x00000000fee00000 0x00000000feefffff msi\n"
    text = render_iommu_groups(None)  # type: ignore[arg-type]
    assert f"/sys/kernel/iommu_groups/{group.id}/reserved_regions:" in text
    assert "  0x00000000fee00000 0x00000000feefffff msi" in text


def test_mapping_until_the_32bit_iova_space_is_exhausted_avoids_reserved_regions(
    vtd: Vtd,
) -> None:
    """2 MiB mappings of one buffer (to the device: DMA-API debug allows the overlap)
    until none fits, then 4 KiB ones until none fits: every IOVA
    below 4 GiB outside the reserved ranges (and IOVA page 0) is handed out exactly
    once, none inside them."""
    dev = vtd.edu
    dma_set_mask_and_coherent(dev, DMA_BIT_MASK(32))
    buf = __get_free_pages(GFP_KERNEL, 9)
    assert buf is not None
    maps: list[tuple[int, int]] = []
    for size in (SZ_2M, SZ_4K):
        while True:
            addr = dma_map_single(dev, buf, size, DMA_TO_DEVICE)
            if dma_mapping_error(dev, addr):
                break
            maps.append((addr, size))
    reserved = [(MSI_LO, MSI_HI), (MMIO_WINDOW_BASE, MMIO_WINDOW_END - 1)]
    for addr, size in maps:
        for lo, hi in reserved:
            assert addr + size - 1 < lo or addr > hi, hex(addr)
        assert addr + size <= 1 << 32
    maps.sort()
    for (a, sa), (b, _) in itertools.pairwise(maps):
        assert a + sa <= b  # no IOVA handed out twice
    free_space = (1 << 32) - SZ_4K - sum(hi - lo + 1 for lo, hi in reserved)
    assert sum(size for _, size in maps) == free_space
    # the window right above the interrupt window was reached from both sides
    assert any(a == MSI_HI + 1 for a, _ in maps)
    assert any(a + s == MSI_LO for a, s in maps)
    for addr, size in maps:
        dma_unmap_single(dev, addr, size, DMA_TO_DEVICE)
    free_pages(buf, 9)
