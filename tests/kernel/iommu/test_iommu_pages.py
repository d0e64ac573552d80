"""IOMMU page-table pages (iommu-pages.h): zeroed, known as page-table pages while
allocated, and the only pages :func:`kernel.mm.pgtable_write64` stores into."""

from __future__ import annotations

from hw.memory import Memory
from kernel.iommu.iommu_pages import (
    iommu_alloc_page,
    iommu_alloc_pages,
    iommu_free_page,
    iommu_free_pages,
    iommu_put_pages_list,
    is_iommu_pgtable_page,
)
from kernel.mm import (
    GFP_KERNEL,
    MAX_PAGE_ORDER,
    PAGE_OFFSET,
    MemoryManager,
    memory_read,
    pgtable_words,
    pgtable_write64,
    read64,
)
from tests.kernel.conftest import KernelFactory


def test_pages_are_zeroed_page_table_pages_until_freed(make_kernel: KernelFactory) -> None:
    make_kernel()
    table = iommu_alloc_pages(GFP_KERNEL, 1)
    assert table is not None and not table & 0x1FFF  # order 1: two aligned pages
    assert memory_read(table, 8192) == bytes(8192)
    assert is_iommu_pgtable_page(table) and is_iommu_pgtable_page(table + 4096)
    assert pgtable_write64(table + 4096 + 8, 0x1003) and read64(table + 4096 + 8) == 0x1003
    iommu_free_pages(table, 1)
    assert not is_iommu_pgtable_page(table) and not is_iommu_pgtable_page(table + 4096)


def test_a_page_list_is_freed_and_emptied(make_kernel: KernelFactory) -> None:
    make_kernel()
    pages = [iommu_alloc_page(GFP_KERNEL) for _ in range(3)]
    assert all(p is not None for p in pages)
    free = [p for p in pages if p is not None]
    iommu_put_pages_list(free)
    assert free == [] and not any(is_iommu_pgtable_page(p) for p in pages if p is not None)


def test_bad_orders_and_null_are_refused_quietly(make_kernel: KernelFactory) -> None:
    make_kernel()
    assert iommu_alloc_pages(GFP_KERNEL, -1) is None
    assert iommu_alloc_pages(GFP_KERNEL, MAX_PAGE_ORDER + 1) is None
    iommu_free_page(None)  # like iommu_free_page(NULL): nothing happens
    iommu_free_page(0)


def test_page_table_words_read_the_entries_the_sanitizer_stored(make_kernel: KernelFactory) -> None:
    """``pgtable_words()[phys >> 3]`` is ``read64`` of the entry, before and after
    stores into a page-table page, and 0 again once the page is freed and reused."""
    make_kernel()
    table = iommu_alloc_page(GFP_KERNEL)
    assert table is not None
    words = pgtable_words()
    base = (table - PAGE_OFFSET) >> 3
    assert [words[base + i] for i in range(512)] == [0] * 512
    for i, value in enumerate((0x1003, 1 << 63 | 0x7, 0xFFFF_FFFF_FFFF_FFFF)):
        assert pgtable_write64(table + 8 * i, value)
        assert words[base + i] == read64(table + 8 * i) == value
    iommu_free_page(table)
    again = iommu_alloc_page(GFP_KERNEL)  # the allocator hands the zeroed page out again
    assert again == table and words[base] == words[base + 2] == 0
    iommu_free_page(again)


class _NoWordView:
    """A PhysMemory with the accessors only (no ``qwords``)."""

    def __init__(self, mem: Memory) -> None:
        self.mem = mem
        self.size = mem.size

    def read_u64(self, addr: int) -> int:
        return self.mem.read_u64(addr)


def test_page_table_words_fall_back_to_read_u64_without_a_word_view() -> None:
    mem = Memory(1 << 21)
    mem.write_u64(0x10_0008, 0xABCD)
    mm = MemoryManager(_NoWordView(mem))  # type: ignore[arg-type]
    assert mm.words[0x10_0008 >> 3] == 0xABCD and mm.words[0] == 0
