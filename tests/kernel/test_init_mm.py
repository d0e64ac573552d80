"""The kernel's own page tables (``init_mm``): built only under
``iommu.pasid_api=kernel-sva``, the direct map in large pages, vmalloc space kept in
step with vmalloc/vfree, set_memory_ro/rw splitting a large page, every change
flushing only the CPU's TLB; vmalloc reuses a freed range."""

from __future__ import annotations

import pytest

from kernel.errno import EINVAL
from kernel.fault_inject import injector
from kernel.init_mm import (
    _direct_map_pieces,
    init_mm,
    set_memory_ro,
    set_memory_rw,
)
from kernel.mm import PAGE_OFFSET, PAGE_SIZE, VMALLOC_START, vfree, virt_to_phys, vmalloc
from kernel.pgtable import _PAGE_NX, _PAGE_RW, _PAGE_USER, PAGE_1G, PAGE_2M, PAGE_4K
from tests.kernel.conftest import KernelFactory

KSVA = "iommu.pasid_api=kernel-sva"
MIB = 1 << 20


def test_direct_map_pieces_take_the_largest_page_that_fits() -> None:
    size = 3 * PAGE_1G + 4 * MIB + 2 * PAGE_4K
    assert _direct_map_pieces(0, size) == [
        (0, 3 * PAGE_1G, PAGE_1G),
        (3 * PAGE_1G, 4 * MIB, PAGE_2M),
        (3 * PAGE_1G + 4 * MIB, 2 * PAGE_4K, PAGE_4K),
    ]
    assert _direct_map_pieces(MIB, 5 * MIB) == [(MIB, MIB, PAGE_4K), (2 * MIB, 4 * MIB, PAGE_2M)]


def test_kernel_tables_exist_only_under_kernel_sva(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    assert init_mm().pgd is None and k.mm.kernel_pgtables is None
    assert init_mm().lookup_address(PAGE_OFFSET) is None


def test_direct_map_and_vmalloc_translate_as_the_cpu_sees_them(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel(KSVA)
    mm = init_mm()
    assert mm.pgd is not None and k.mm.kernel_pgtables is mm
    # PML4, PDPT and PD for 64 MiB in 2 MiB pages; PDPT, PD and PT for the init stack.
    assert len(mm.pgd.tables) == 6
    for phys in (0x10_0000, 0x123_4567, 64 * MIB - 8):
        assert mm.lookup_address(PAGE_OFFSET + phys) == (phys, PAGE_2M)
    assert mm.lookup_address(PAGE_OFFSET + 64 * MIB) is None  # no RAM there
    buf = vmalloc(3 * PAGE_SIZE)
    assert buf is not None
    for off in (0, PAGE_SIZE + 5, 3 * PAGE_SIZE - 1):
        assert mm.lookup_address(buf + off) == (virt_to_phys(buf + off), PAGE_4K)
    assert mm.lookup_address(buf + 3 * PAGE_SIZE) is None  # the guard page
    leaf = mm.pgd.walk(buf & ((1 << 48) - 1))
    assert leaf is not None
    entry = leaf[0]
    assert entry & _PAGE_RW and entry & _PAGE_NX and not entry & _PAGE_USER
    vfree(buf)


def test_vfree_unmaps_and_flushes_only_the_cpu_tlb_then_the_range_is_reused(
    make_kernel: KernelFactory,
) -> None:
    make_kernel(KSVA)
    mm = init_mm()
    buf = vmalloc(PAGE_SIZE)
    assert buf is not None
    old = virt_to_phys(buf)
    flushes = mm.tlb_flushes
    vfree(buf)
    assert mm.lookup_address(buf) is None and mm.tlb_flushes == flushes + 1
    again = vmalloc(PAGE_SIZE)
    assert again == buf
    assert mm.lookup_address(again) == (virt_to_phys(again), PAGE_4K)
    assert mm.tlb_flushes == flushes + 1  # a new mapping needs no flush
    vfree(again)
    del old


def test_vmalloc_reuses_the_lowest_freed_range_with_a_guard_page(
    make_kernel: KernelFactory,
) -> None:
    make_kernel()
    a, b = vmalloc(2 * PAGE_SIZE), vmalloc(PAGE_SIZE)
    assert a is not None and b is not None and a >= VMALLOC_START
    assert b == a + 3 * PAGE_SIZE
    vfree(a)
    c = vmalloc(PAGE_SIZE)
    assert c == a
    d = vmalloc(PAGE_SIZE)  # the rest of a's range is only one page: no room with a guard
    assert d == b + 2 * PAGE_SIZE
    for x in (b, c, d):
        vfree(x)


def test_set_memory_ro_splits_a_large_page_and_set_memory_rw_restores_it(
    make_kernel: KernelFactory,
) -> None:
    make_kernel(KSVA)
    mm = init_mm()
    assert mm.pgd is not None
    addr = PAGE_OFFSET + 2 * MIB + PAGE_SIZE
    flushes = mm.tlb_flushes
    set_memory_ro(addr, 1)

    def entry(va: int) -> tuple[int, int]:
        assert mm.pgd is not None
        leaf = mm.pgd.walk(va & ((1 << 48) - 1))
        assert leaf is not None
        return leaf

    ent, size = entry(addr)
    assert size == PAGE_4K and not ent & _PAGE_RW
    assert entry(addr - PAGE_SIZE)[0] & _PAGE_RW and entry(addr + PAGE_SIZE)[0] & _PAGE_RW
    assert mm.lookup_address(addr + 9) == (2 * MIB + PAGE_SIZE + 9, PAGE_4K)
    set_memory_rw(addr, 1)
    assert entry(addr)[0] & _PAGE_RW and mm.tlb_flushes == flushes + 2
    with pytest.raises(EINVAL):
        set_memory_ro(addr + 1, 1)
    with pytest.raises(EINVAL):
        set_memory_rw(addr, -1)


def test_vmalloc_unwinds_when_a_page_table_page_cannot_be_had(
    make_kernel: KernelFactory,
) -> None:
    """A vmalloc reaching a new 2 MiB region needs a page-table page: failing that
    one (the last page allocation) frees the area's pages and its range."""
    k = make_kernel(KSVA)
    npages = 600  # after the init stack's 4+1 pages: crosses into a second 2 MiB region
    before = {(a.kind, a.addr) for a in k.mm.live()}
    injector().arm(npages + 1, frozenset({"alloc_pages"}))  # pages, then the table
    try:
        assert vmalloc(npages * PAGE_SIZE) is None
        assert injector().injected_at is not None
    finally:
        injector().disarm()
    assert {(a.kind, a.addr) for a in k.mm.live()} == before
    buf = vmalloc(PAGE_SIZE)
    assert buf is not None and init_mm().lookup_address(buf) is not None
    vfree(buf)
