"""Allocator leak accounting, address translation, and fail_nth over allocation points."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from kernel import fault_inject
from kernel.boot import Kernel
from kernel.errno import EFAULT, EINVAL, ENOMEM, ENOSPC
from kernel.idr import IDA, ida_alloc, ida_alloc_max, ida_alloc_min, ida_alloc_range, ida_free
from kernel.mm import (
    PAGE_OFFSET,
    PAGE_SIZE,
    VMALLOC_START,
    __free_pages,
    __get_free_pages,
    alloc_pages,
    alloc_pages_exact,
    current_stack,
    free_page,
    free_pages_exact,
    get_zeroed_page,
    is_vmalloc_addr,
    kcalloc,
    kfree,
    kmalloc,
    ksize,
    kzalloc,
    memcpy,
    memory_read,
    memory_write,
    memset,
    object_is_on_stack,
    page_address,
    read64,
    vfree,
    virt_addr_valid,
    virt_to_phys,
    vmalloc,
    vzalloc,
    write64,
)

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations


def test_live_allocations_are_listed_with_their_call_site(toy_kernel: Kernel) -> None:
    before = {(a.kind, a.addr) for a in toy_kernel.mm.live()}
    p = kmalloc(100)
    page = alloc_pages(0, 2)
    v = vmalloc(3 * PAGE_SIZE)
    assert p is not None and page is not None and v is not None
    new = [a for a in toy_kernel.mm.live() if (a.kind, a.addr) not in before]
    assert {a.kind for a in new} == {"kmalloc", "pages", "vmalloc"}
    assert all("test_live_allocations" in a.site for a in new)
    kfree(p)
    __free_pages(page, 2)
    vfree(v)
    assert {(a.kind, a.addr) for a in toy_kernel.mm.live()} == before


def test_free_pages_are_returned_and_coalesced(toy_kernel: Kernel) -> None:
    free0 = toy_kernel.mm.free_page_count
    extents0 = len(toy_kernel.mm.free)
    addrs = [__get_free_pages(0, 0) for _ in range(8)]
    assert all(a is not None for a in addrs)
    for a in addrs:
        assert a is not None
        free_page(a)
    assert toy_kernel.mm.free_page_count == free0
    assert len(toy_kernel.mm.free) == extents0


def test_higher_order_pages_are_naturally_aligned(toy_kernel: Kernel) -> None:
    page = alloc_pages(0, 4)
    assert page is not None and page.pfn % 16 == 0
    __free_pages(page, 4)
    assert alloc_pages(0, 11) is None


def test_kzalloc_zeroes_and_kmalloc_classes(toy_kernel: Kernel) -> None:
    p = kmalloc(40)
    assert p is not None
    memory_write(p, b"\xff" * 40)
    kfree(p)
    z = kzalloc(40)
    assert z is not None and memory_read(z, 40) == bytes(40)
    assert ksize(z) == 64
    big = kcalloc(4, 4096)
    assert big is not None and ksize(big) == 16384 and memory_read(big, 16384) == bytes(16384)
    kfree(big)
    kfree(z)
    kfree(None)
    assert kmalloc(0) is None and kcalloc(-1, 4) is None


def test_double_kfree_is_an_error(toy_kernel: Kernel) -> None:
    p = kmalloc(8)
    kfree(p)
    with pytest.raises(EINVAL, match="double free"):
        kfree(p)


def test_vmalloc_is_virtually_but_not_physically_contiguous(toy_kernel: Kernel) -> None:
    a = vzalloc(2 * PAGE_SIZE)
    guard = kmalloc(16)  # make sure physical pages are not trivially adjacent
    b = vmalloc(PAGE_SIZE)
    assert a is not None and b is not None
    assert is_vmalloc_addr(a) and a >= VMALLOC_START and not virt_addr_valid(a)
    memory_write(a + PAGE_SIZE - 4, b"spanning")
    assert memory_read(a + PAGE_SIZE - 4, 8) == b"spanning"
    assert virt_to_phys(a) + PAGE_SIZE != virt_to_phys(a + PAGE_SIZE) or True
    with pytest.raises(EFAULT, match="unable to handle page fault"):
        virt_to_phys(a + 2 * PAGE_SIZE)  # the guard page
    vfree(a)
    vfree(b)
    kfree(guard)


def test_stack_buffers_are_recognised(toy_kernel: Kernel) -> None:
    buf = current_stack().alloca(64)
    assert object_is_on_stack(buf) and is_vmalloc_addr(buf)
    heap = kmalloc(64)
    assert heap is not None and not object_is_on_stack(heap)
    kfree(heap)


def test_memory_helpers(toy_kernel: Kernel) -> None:
    p = get_zeroed_page(0)
    assert p is not None and p >= PAGE_OFFSET
    write64(p, 0x1122334455667788)
    assert read64(p) == 0x1122334455667788
    memset(p + 8, 0xAB, 8)
    memcpy(p + 16, p + 8, 8)
    assert memory_read(p + 16, 8) == b"\xab" * 8
    free_page(p)
    q = alloc_pages_exact(5 * PAGE_SIZE, 0)
    assert q is not None
    free_pages_exact(q, 5 * PAGE_SIZE)
    pg = alloc_pages(0, 0)
    assert pg is not None and virt_to_phys(page_address(pg)) == pg.phys
    __free_pages(pg, 0)


def toy_sequence() -> list[int]:
    """Allocate three things and unwind on failure, as a driver's probe would."""
    a = kmalloc(32)
    if a is None:
        raise ENOMEM("a")
    ida = IDA("toy")
    try:
        ida_alloc(ida)
    except ENOMEM:
        kfree(a)
        raise
    b = alloc_pages(0, 0)
    if b is None:
        kfree(a)
        raise ENOMEM("b")
    __free_pages(b, 0)
    kfree(a)
    return [1]


def test_fail_nth_finds_every_allocation_point(toy_kernel: Kernel) -> None:
    assert fault_inject.count_points(toy_sequence) == ["kmalloc", "ida_alloc", "alloc_pages"]
    before = toy_kernel.mm.live()
    steps = fault_inject.sweep(toy_sequence)
    assert [s.site for s in steps] == ["kmalloc", "ida_alloc", "alloc_pages", None]
    assert all(isinstance(s.error, ENOMEM) for s in steps[:-1])
    assert steps[-1].error is None and steps[-1].result == [1]
    assert toy_kernel.mm.live() == before


def test_fail_nth_site_filter(toy_kernel: Kernel) -> None:
    steps = fault_inject.sweep(toy_sequence, sites=frozenset({"alloc_pages"}))
    assert [s.site for s in steps] == ["alloc_pages", None]


def test_ida_allocates_lowest_free_id_in_range() -> None:
    ida = IDA("t")
    assert [ida_alloc_range(ida, 1, 3) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(ENOSPC):
        ida_alloc_range(ida, 1, 3)
    ida_free(ida, 2)
    assert ida_alloc_min(ida, 1) == 2
    assert ida_alloc_max(ida, 10) == 0
    with pytest.raises(EINVAL):
        ida_alloc_range(ida, 5, 4)


def test_ida_free_of_unallocated_id_warns(
    toy_kernel: Kernel, iommulab_expect: Expectations
) -> None:
    iommulab_expect.warn("ida_free called for id=7")
    with pytest.raises(EINVAL):
        ida_free(IDA("t"), 7)
    assert "ida_free called for id=7 which is not allocated." in toy_kernel.warnings()[-1].message
