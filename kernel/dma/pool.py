"""DMA pools (mm/dmapool.c): small fixed-size coherent blocks carved from
``dma_alloc_coherent`` pages.

A pool hands out blocks of ``size`` bytes (rounded up to ``align``, at least the
16-byte ``struct dma_block``) from pages of ``allocation = max(size, PAGE_SIZE)``
bytes. No block crosses a ``boundary`` (a power of two, at least ``size``): a block
that would is skipped to the next boundary, as ``pool_initialise_page`` lays them
out. Freed blocks go on a LIFO free list and are handed out again before a new
page is allocated.

The checks of a DMAPOOL_DEBUG kernel are always on: a freed block is poisoned
with 0xa7 and checked when handed out again ("corrupted" if the CPU or a device
wrote it after the free); a free whose DMA address is not in one of the pool's
pages is reported as "bad dma" and ignored; a double free is reported as "already
free" and ignored. ``dma_pool_destroy`` with blocks still in use prints "busy"
and, as Linux does, leaves the pages allocated (a device may still write them).

Differences from Linux: the free list is a Python list rather than a pointer
chain threaded through the free blocks (the poison therefore covers the whole
block); there is no sysfs ``pools`` file.
"""

from __future__ import annotations

from attrs import define, field

from kernel.device import Device
from kernel.dma.mapping import dma_alloc_coherent, dma_free_coherent
from kernel.mm import __GFP_ZERO, PAGE_SIZE, memory_read, memset
from kernel.printk import dev_err

POOL_POISON_FREED = 0xA7
POOL_POISON_ALLOCATED = 0xA9
DMA_BLOCK_SIZE = 16
"""``sizeof(struct dma_block)`` on 64-bit: the smallest block."""
INT_MAX = (1 << 31) - 1


@define(eq=False)
class DmaPage:
    """``struct dma_page``: one coherent allocation of the pool."""

    vaddr: int
    dma: int


@define(eq=False)
class DmaPool:
    """``struct dma_pool``."""

    name: str
    dev: Device
    size: int
    allocation: int
    boundary: int
    pages: list[DmaPage] = field(factory=list)
    free_blocks: list[tuple[int, int]] = field(factory=list)
    """Free ``(vaddr, dma)`` blocks, the next one to hand out last."""
    nr_blocks: int = 0
    nr_active: int = 0


def _is_power_of_2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def dma_pool_create(
    name: str, dev: Device | None, size: int, align: int, boundary: int
) -> DmaPool | None:
    """``dma_pool_create``: None (C's NULL) for a zero or oversized ``size``, an
    ``align`` that is not a power of two, or a ``boundary`` that is not a power of
    two at least as large as the rounded-up ``size``."""
    if dev is None:
        return None
    if align == 0:
        align = 1
    elif not _is_power_of_2(align):
        return None
    if size == 0 or size > INT_MAX or size < 0:
        return None
    size = max(size, DMA_BLOCK_SIZE)
    size = (size + align - 1) & ~(align - 1)
    allocation = max(size, PAGE_SIZE)
    if not boundary:
        boundary = allocation
    elif boundary < size or not _is_power_of_2(boundary):
        return None
    boundary = min(boundary, allocation)
    return DmaPool(name, dev, size, allocation, boundary)


def _initialise_page(pool: DmaPool, page: DmaPage) -> None:
    """``pool_initialise_page``: lay the page's blocks out so none crosses the
    boundary, lowest address handed out first."""
    blocks: list[tuple[int, int]] = []
    offset = 0
    next_boundary = pool.boundary
    while offset + pool.size <= pool.allocation:
        if offset + pool.size > next_boundary:
            offset = next_boundary
            next_boundary += pool.boundary
            continue
        blocks.append((page.vaddr + offset, page.dma + offset))
        offset += pool.size
    memset(page.vaddr, POOL_POISON_FREED, pool.allocation)
    pool.free_blocks.extend(reversed(blocks))
    pool.nr_blocks += len(blocks)


def _alloc_page(pool: DmaPool, gfp: int) -> bool:
    """``pool_alloc_page``: one more coherent allocation for the pool."""
    vaddr, dma = dma_alloc_coherent(pool.dev, pool.allocation, gfp)
    if vaddr is None:
        return False
    page = DmaPage(vaddr, dma)
    _initialise_page(pool, page)
    pool.pages.append(page)
    return True


def _check_block(pool: DmaPool, vaddr: int) -> None:
    """``pool_check_block``: a free block must still carry the free poison."""
    data = memory_read(vaddr, pool.size)
    for i, b in enumerate(data):
        if b != POOL_POISON_FREED:
            dev_err(pool.dev, f"dma_pool_alloc {pool.name}, {vaddr:#x} (corrupted)")
            dev_err(pool.dev, f"  offset {i}: {data[i : i + 16].hex(' ')}")
            return


def dma_pool_alloc(pool: DmaPool, gfp: int) -> tuple[int | None, int]:
    """``dma_pool_alloc``: ``(vaddr, dma_handle)``, ``(None, 0)`` when no page could
    be allocated. ``__GFP_ZERO`` zeroes the block; otherwise it holds the
    allocated-block poison 0xa9."""
    if not pool.free_blocks and not _alloc_page(pool, gfp):
        return None, 0
    vaddr, dma = pool.free_blocks.pop()
    pool.nr_active += 1
    _check_block(pool, vaddr)
    memset(vaddr, 0 if gfp & __GFP_ZERO else POOL_POISON_ALLOCATED, pool.size)
    return vaddr, dma


def dma_pool_zalloc(pool: DmaPool, gfp: int) -> tuple[int | None, int]:
    """``dma_pool_zalloc``."""
    return dma_pool_alloc(pool, gfp | __GFP_ZERO)


def _find_page(pool: DmaPool, dma: int) -> DmaPage | None:
    """``pool_find_page``."""
    for page in pool.pages:
        if page.dma <= dma < page.dma + pool.allocation:
            return page
    return None


def dma_pool_free(pool: DmaPool, vaddr: int, dma: int) -> None:
    """``dma_pool_free`` with ``pool_block_err``: a block of another pool (or no
    pool), a ``vaddr`` that does not match ``dma``, or a double free is reported
    and the block is left alone."""
    page = _find_page(pool, dma)
    if page is None:
        dev_err(pool.dev, f"dma_pool_free {pool.name}, {vaddr:#x}/{dma:#x} (bad dma)")
        return
    off = dma - page.dma
    if vaddr != page.vaddr + off or (off % pool.size and pool.boundary == pool.allocation):
        dev_err(pool.dev, f"dma_pool_free {pool.name}, {vaddr:#x} (bad vaddr)/{dma:#x}")
        return
    if (vaddr, dma) in pool.free_blocks:
        dev_err(pool.dev, f"dma_pool_free {pool.name}, dma {dma:#x} already free")
        return
    memset(vaddr, POOL_POISON_FREED, pool.size)
    pool.free_blocks.append((vaddr, dma))
    pool.nr_active -= 1


def dma_pool_destroy(pool: DmaPool | None) -> None:
    """``dma_pool_destroy``: free every page, unless blocks are still in use: then
    "busy" is printed and the pages stay allocated (leaked on purpose, as Linux
    does, since a device may still be writing them)."""
    if pool is None:
        return
    busy = pool.nr_active > 0
    if busy:
        dev_err(pool.dev, f"dma_pool_destroy {pool.name} busy")
    else:
        for page in pool.pages:
            dma_free_coherent(pool.dev, pool.allocation, page.vaddr, page.dma)
    pool.pages.clear()
    pool.free_blocks.clear()
