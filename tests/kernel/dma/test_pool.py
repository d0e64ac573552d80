"""dma_pool (mm/dmapool.c): block layout within the boundary, reuse, poison checks,
and the reports Linux prints for misuse (foreign pointer, double free, busy destroy)."""

from __future__ import annotations

import pytest

from kernel.boot import Kernel
from kernel.dma.debug import dma_debug_state
from kernel.dma.pool import (
    POOL_POISON_ALLOCATED,
    dma_pool_alloc,
    dma_pool_create,
    dma_pool_destroy,
    dma_pool_free,
    dma_pool_zalloc,
)
from kernel.mm import GFP_KERNEL, PAGE_SIZE, memory_read, memory_write, virt_to_phys
from kernel.pci import PciDev
from tests.kernel.conftest import EDU_BDF, KernelFactory, pdev_at


@pytest.fixture(params=[False, True], ids=["direct", "iommu"])
def booted(request: pytest.FixtureRequest, make_kernel: KernelFactory) -> tuple[Kernel, PciDev]:
    k = make_kernel(iommu=request.param)
    return k, pdev_at(EDU_BDF)


@pytest.mark.parametrize(
    ("size", "align", "boundary"),
    [(0, 8, 0), (64, 3, 0), (100, 4, 64), (64, 8, 96)],
    ids=["zero-size", "align-not-pow2", "boundary-below-size", "boundary-not-pow2"],
)
def test_create_refuses_bad_geometry(
    booted: tuple[Kernel, PciDev], size: int, align: int, boundary: int
) -> None:
    _k, dev = booted
    assert dma_pool_create("bad", dev, size, align, boundary) is None


def test_blocks_never_cross_the_boundary_and_fill_each_page(
    booted: tuple[Kernel, PciDev],
) -> None:
    k, dev = booted
    pool = dma_pool_create("b", dev, 100, 4, 256)
    assert pool is not None
    # per 256-byte window two 100-byte blocks fit (200 would end past 256)
    per_page = (PAGE_SIZE // 256) * 2
    blocks = [dma_pool_alloc(pool, GFP_KERNEL) for _ in range(per_page + 1)]
    assert len(pool.pages) == 2
    for vaddr, dma in blocks:
        assert vaddr is not None
        assert dma // 256 == (dma + 99) // 256
        assert any(vaddr - pg.vaddr == dma - pg.dma < PAGE_SIZE for pg in pool.pages)
        assert memory_read(vaddr, 100) == bytes([POOL_POISON_ALLOCATED]) * 100
    if not dev.dma_iommu:
        assert all(dma == virt_to_phys(v) for v, dma in blocks if v is not None)
    assert len({dma for _, dma in blocks}) == per_page + 1
    for vaddr, dma in blocks:
        assert vaddr is not None
        dma_pool_free(pool, vaddr, dma)
    dma_pool_destroy(pool)
    assert not dma_debug_state().entries and "dma_pool" not in k.dmesg()


def test_freed_block_is_handed_out_again_zeroed_on_request(booted: tuple[Kernel, PciDev]) -> None:
    _k, dev = booted
    pool = dma_pool_create("z", dev, 32, 32, 0)
    assert pool is not None
    v1, d1 = dma_pool_alloc(pool, GFP_KERNEL)
    assert v1 is not None
    dma_pool_free(pool, v1, d1)
    v2, d2 = dma_pool_zalloc(pool, GFP_KERNEL)
    assert (v2, d2) == (v1, d1) and memory_read(v1, 32) == bytes(32)
    dma_pool_free(pool, v1, d1)
    dma_pool_destroy(pool)


def test_write_after_free_is_reported_as_corrupted(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    pool = dma_pool_create("c", dev, 64, 8, 0)
    assert pool is not None
    v, d = dma_pool_alloc(pool, GFP_KERNEL)
    assert v is not None
    dma_pool_free(pool, v, d)
    memory_write(v + 20, b"\x01")
    v2, d2 = dma_pool_alloc(pool, GFP_KERNEL)
    assert v2 == v
    assert f"dma_pool_alloc c, {v:#x} (corrupted)" in k.dmesg()
    dma_pool_free(pool, v, d2)
    dma_pool_destroy(pool)


def test_free_of_a_foreign_block_is_reported_and_ignored(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    a = dma_pool_create("a", dev, 64, 8, 0)
    b = dma_pool_create("b", dev, 64, 8, 0)
    assert a is not None and b is not None
    va, da = dma_pool_alloc(a, GFP_KERNEL)
    vb, db = dma_pool_alloc(b, GFP_KERNEL)
    assert va is not None and vb is not None
    dma_pool_free(a, vb, db)
    assert f"dma_pool_free a, {vb:#x}/{db:#x} (bad dma)" in k.dmesg()
    assert a.nr_active == 1 and b.nr_active == 1
    dma_pool_free(a, va + 8, da)  # dma in the pool but the CPU address is not its block
    assert "(bad vaddr)" in k.dmesg() and a.nr_active == 1
    dma_pool_free(a, va, da)
    dma_pool_free(a, va, da)
    assert f"dma_pool_free a, dma {da:#x} already free" in k.dmesg()
    assert a.nr_active == 0
    dma_pool_free(b, vb, db)
    dma_pool_destroy(a)
    dma_pool_destroy(b)
    assert not dma_debug_state().entries


@pytest.mark.iommulab_allow(
    "leak", "dma-debug", "warn:mock: domain freed with mappings left"
)  # Linux leaks the busy pool's pages and their mapping
def test_destroy_with_live_blocks_is_busy_and_keeps_the_pages(
    booted: tuple[Kernel, PciDev],
) -> None:
    k, dev = booted
    pool = dma_pool_create("busy", dev, 64, 8, 0)
    assert pool is not None
    v, _d = dma_pool_alloc(pool, GFP_KERNEL)
    assert v is not None
    page = pool.pages[0]
    dma_pool_destroy(pool)
    assert "dma_pool_destroy busy busy" in k.dmesg()
    # Linux leaks the page on purpose: the coherent allocation is still live
    (entry,) = [e for lst in dma_debug_state().entries.values() for e in lst]
    assert entry.dev_addr == page.dma and entry.size == PAGE_SIZE
    dma_pool_destroy(None)


def test_destroy_frees_every_page(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    pool = dma_pool_create("big", dev, 3000, 0, 0)
    assert pool is not None and pool.allocation == PAGE_SIZE
    blocks = [dma_pool_alloc(pool, GFP_KERNEL) for _ in range(3)]
    assert len(pool.pages) == 3
    page_addrs = {pg.vaddr for pg in pool.pages}
    for v, d in blocks:
        assert v is not None
        dma_pool_free(pool, v, d)
    dma_pool_destroy(pool)
    assert not page_addrs & {a.addr for a in k.mm.live()} and not dma_debug_state().entries
