"""The page allocator learns RAM from firmware's e820 map: it hands out every usable
page above the first megabyte and never one in a hole; boot prints the map as
Linux's ``BIOS-e820`` lines."""

from __future__ import annotations

import re

from hw.machine import build_machine
from hw.memory import Memory
from kernel.boot import boot
from kernel.mm import PAGE_OFFSET, PAGE_SHIFT, RESERVED_LOW, MemoryManager, virt_addr_valid

M = 1 << 20
G = 1 << 30
FOUR_G = 1 << 32
LAYOUT = ((0, 2 * M), (FOUR_G, 3 * M), (FOUR_G + 8 * M, M))


def _in_ram(pfn: int, npages: int) -> bool:
    start, end = pfn << PAGE_SHIFT, (pfn + npages) << PAGE_SHIFT
    return any(b <= start and end <= b + n for b, n in LAYOUT)


def test_every_page_handed_out_is_usable_ram_and_all_of_it_is_handed_out() -> None:
    mm = MemoryManager(Memory(LAYOUT), ram=LAYOUT)
    expected = (2 * M - RESERVED_LOW + 3 * M + M) >> PAGE_SHIFT
    assert mm.total_pages == mm.free_page_count == expected
    got = []
    while (page := mm.alloc_pages_n(1, 1, 0, "test")) is not None:
        got.append(page.pfn)
    assert len(got) == expected == len(set(got))
    assert all(_in_ram(pfn, 1) for pfn in got)


def test_a_block_never_spans_a_hole() -> None:
    mm = MemoryManager(Memory(LAYOUT), ram=LAYOUT)
    blocks = []
    while (page := mm.alloc_pages_n(64, 64, 0, "test")) is not None:
        blocks.append(page.pfn)
    assert blocks and all(_in_ram(pfn, 64) for pfn in blocks)
    # 256 KiB blocks: 4 fit in low RAM above 1 MiB, 12 in the 3 MiB range, 4 in the last
    assert len(blocks) == 4 + 12 + 4


def test_freed_pages_merge_back_only_within_their_range() -> None:
    mm = MemoryManager(Memory(LAYOUT), ram=LAYOUT)
    before = dict(mm.free)
    pages = [mm.alloc_pages_n(1, 1, 0, "t") for _ in range(600)]
    for p in pages:
        assert p is not None
        mm.free_pages_n(p, 1)
    assert dict(mm.free) == before


def test_boot_takes_the_map_from_firmware_and_prints_it() -> None:
    m = build_machine({"name": "big", "ram": "64G"})
    k = boot(m, "", modules=[], builtins=(), entry_points=False)
    try:
        assert k.mm.ram == ((0, 3 * G), (FOUR_G, 61 * G))
        lines = k.dmesg().splitlines()
        at = next(i for i, ln in enumerate(lines) if ln.endswith("BIOS-provided physical RAM map:"))
        e820 = [re.sub(r"^\[[ .0-9]+\] ", "", ln) for ln in lines[at + 1 : at + 3]]
        assert e820 == [
            "BIOS-e820: [mem 0x0000000000000000-0x00000000bfffffff] usable",
            "BIOS-e820: [mem 0x0000000100000000-0x000000103fffffff] usable",
        ]
        avail = (64 * G - RESERVED_LOW) >> 10
        assert any("Memory: " in ln and f"/{avail}K available" in ln for ln in lines)
    finally:
        k.shutdown()


def test_direct_map_addresses_in_the_hole_are_not_valid() -> None:
    m = build_machine({"name": "holey", "ram": "4G"})
    k = boot(m, "", modules=[], builtins=(), entry_points=False)
    try:
        assert virt_addr_valid(PAGE_OFFSET + 3 * G - 8)
        assert not virt_addr_valid(PAGE_OFFSET + 3 * G)
        assert not virt_addr_valid(PAGE_OFFSET + FOUR_G - 8)
        assert virt_addr_valid(PAGE_OFFSET + FOUR_G)
        assert not virt_addr_valid(PAGE_OFFSET + FOUR_G + G)
    finally:
        k.shutdown()
