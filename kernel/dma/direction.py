"""DMA directions, attributes and the mapping-error cookie (include/linux/dma-direction.h,
include/linux/dma-mapping.h)."""

from __future__ import annotations

DMA_BIDIRECTIONAL = 0
DMA_TO_DEVICE = 1
DMA_FROM_DEVICE = 2
DMA_NONE = 3

DIR2NAME = ("DMA_BIDIRECTIONAL", "DMA_TO_DEVICE", "DMA_FROM_DEVICE", "DMA_NONE")

DMA_ATTR_WEAK_ORDERING = 1 << 1
DMA_ATTR_WRITE_COMBINE = 1 << 2
DMA_ATTR_NO_KERNEL_MAPPING = 1 << 4
DMA_ATTR_SKIP_CPU_SYNC = 1 << 5
DMA_ATTR_FORCE_CONTIGUOUS = 1 << 6
DMA_ATTR_ALLOC_SINGLE_PAGES = 1 << 7
DMA_ATTR_NO_WARN = 1 << 8
DMA_ATTR_PRIVILEGED = 1 << 9
DMA_ATTR_MMIO = 1 << 10

DMA_MAPPING_ERROR = (1 << 64) - 1


VALID_DMA_DIRECTIONS = (DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE)


def valid_dma_direction(dir: int) -> bool:
    return dir in VALID_DMA_DIRECTIONS


def DMA_BIT_MASK(n: int) -> int:
    return (1 << n) - 1
