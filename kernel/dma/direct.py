"""dma-direct (kernel/dma/direct.c): DMA address = physical address.

Used when no IOMMU translates the device or its default domain is the identity
domain. On x86 memory is coherent, so syncs have nothing to do. Differences from
Linux: no swiotlb — a buffer the device cannot reach is refused with the
``dev_WARN_ONCE`` Linux prints when bouncing is unavailable.
"""

from __future__ import annotations

from kernel.bug import WARN_ON_ONCE
from kernel.device import Device
from kernel.dma.direction import DMA_BIT_MASK, DMA_MAPPING_ERROR
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
    """``dma_direct_map_phys``."""
    if not dma_capable(dev, phys, size):
        WARN_ON_ONCE(
            True,
            f"{dev.dev_prefix()}: DMA addr 0x{phys:016x}+{size} overflow "
            f"(mask {dev.dma_mask:x}, bus limit 0).",
        )
        return DMA_MAPPING_ERROR
    return phys


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
