"""dma-direct (kernel/dma/direct.c): DMA address = physical address.

Used when no IOMMU translates the device or its default domain is the identity
domain. On x86 memory is coherent, so syncs only matter for swiotlb bounce
buffers (kernel/dma/swiotlb.py): a buffer the device cannot reach is bounced when
the pool exists, and refused with the ``dev_WARN_ONCE`` Linux prints otherwise.
"""

from __future__ import annotations

from kernel.bug import WARN_ON_ONCE
from kernel.device import Device
from kernel.dma.direction import DMA_BIT_MASK, DMA_MAPPING_ERROR
from kernel.dma.swiotlb import (
    io_tlb_default_mem,
    is_swiotlb_buffer,
    swiotlb_map,
    swiotlb_sync_single_for_cpu,
    swiotlb_sync_single_for_device,
    swiotlb_tbl_unmap_single,
)
from kernel.mm import (
    __GFP_ZERO,
    PAGE_OFFSET,
    alloc_pages_exact,
    current_mm,
    free_pages_exact,
)

ZONE_DMA_BITS = 24


def dma_capable(dev: Device, addr: int, size: int) -> bool:
    """``dma_capable``: the whole buffer below the device's DMA mask."""
    return size == 0 or addr + size - 1 <= dev.dma_mask


def dma_direct_map_phys(dev: Device, phys: int, size: int, dir: int, attrs: int) -> int:
    """``dma_direct_map_phys``: the physical address, or a swiotlb bounce slot
    when bouncing is forced or the device's mask cannot reach the buffer."""
    mem = io_tlb_default_mem()
    if mem is not None and mem.force_bounce:
        return swiotlb_map(dev, phys, size, dir, attrs)
    if not dma_capable(dev, phys, size):
        if mem is not None:
            return swiotlb_map(dev, phys, size, dir, attrs)
        WARN_ON_ONCE(
            True,
            f"{dev.dev_prefix()}: DMA addr 0x{phys:016x}+{size} overflow "
            f"(mask {dev.dma_mask:x}, bus limit 0).",
        )
        return DMA_MAPPING_ERROR
    return phys


def dma_direct_unmap_phys(dev: Device, addr: int, size: int, dir: int, attrs: int) -> None:
    """``dma_direct_unmap_phys``: release a bounce slot (copying back first)."""
    if is_swiotlb_buffer(dev, addr):
        swiotlb_tbl_unmap_single(dev, addr, size, dir, attrs)


def dma_direct_sync_single_for_cpu(dev: Device, addr: int, size: int, dir: int) -> None:
    """``dma_direct_sync_single_for_cpu``: only a bounce buffer has work to do."""
    if is_swiotlb_buffer(dev, addr):
        swiotlb_sync_single_for_cpu(dev, addr, size, dir)


def dma_direct_sync_single_for_device(dev: Device, addr: int, size: int, dir: int) -> None:
    """``dma_direct_sync_single_for_device``."""
    if is_swiotlb_buffer(dev, addr):
        swiotlb_sync_single_for_device(dev, addr, size, dir)


def dma_direct_map_resource(dev: Device, paddr: int, size: int, dir: int, attrs: int) -> int:
    """``dma_direct_map_resource``: the bus address is the physical address, if the
    device's mask reaches it."""
    if not dma_capable(dev, paddr, size):
        WARN_ON_ONCE(
            True,
            f"{dev.dev_prefix()}: DMA addr 0x{paddr:016x}+{size} overflow "
            f"(mask {dev.dma_mask:x}, bus limit 0).",
        )
        return DMA_MAPPING_ERROR
    return paddr


def dma_direct_supported(dev: Device, mask: int) -> bool:
    """``dma_direct_supported``: the mask must reach ZONE_DMA (or all of RAM)."""
    ram_end = current_mm().mem.size
    min_mask = min(DMA_BIT_MASK(ZONE_DMA_BITS), ram_end - 1)
    return mask >= min_mask


def dma_direct_alloc(dev: Device, size: int, gfp: int) -> tuple[int | None, int]:
    """``dma_direct_alloc``: zeroed pages below the coherent mask."""
    vaddr = alloc_pages_exact(size, gfp | __GFP_ZERO)
    if vaddr is None:
        return None, DMA_MAPPING_ERROR
    phys = vaddr - PAGE_OFFSET
    if phys + size - 1 > dev.coherent_dma_mask:
        free_pages_exact(vaddr, size)
        return None, DMA_MAPPING_ERROR
    return vaddr, phys


def dma_direct_free(dev: Device, size: int, cpu_addr: int, dma_addr: int) -> None:
    free_pages_exact(cpu_addr, size)
