"""x86-64 CPU page tables (kernel/pgtable.py): 4 KiB/2 MiB/1 GiB leaves, large-page
splits, protect and walk, checked against a page-granular reference dictionary;
bad ranges and out-of-memory."""

from __future__ import annotations

import random
from bisect import bisect_left

import pytest

from kernel.errno import EINVAL, ENOMEM
from kernel.fault_inject import injector
from kernel.mm import current_mm
from kernel.pgtable import (
    _KERNPG_TABLE,
    _PAGE_NX,
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_RW,
    _PAGE_USER,
    PAGE_1G,
    PAGE_2M,
    PAGE_4K,
    PTE_PFN_MASK,
    PgTable,
    pgd_alloc,
    pte_pfn_phys,
)
from tests.kernel.conftest import KernelFactory

U = _PAGE_USER


def _pgd(levels: int = 4) -> PgTable:
    pt = pgd_alloc(levels)
    assert pt is not None
    return pt


def _raw(addr: int) -> int:
    return current_mm().mem.read_u64(addr)


def test_a_4k_leaf_sits_at_the_sdm_indices_of_a_4_level_walk(make_kernel: KernelFactory) -> None:
    make_kernel()
    pt = _pgd()
    va = (3 << 39) | (5 << 30) | (7 << 21) | (9 << 12)
    pt.map(va, 0x1234_5000, PAGE_4K, U | _PAGE_RW)
    pml4e = _raw(pt.root_phys + 3 * 8)
    pdpte = _raw((pml4e & PTE_PFN_MASK) + 5 * 8)
    pde = _raw((pdpte & PTE_PFN_MASK) + 7 * 8)
    pte = _raw((pde & PTE_PFN_MASK) + 9 * 8)
    assert pml4e & 7 == 7 and not pde & _PAGE_PSE
    assert pte == 0x1234_5000 | _PAGE_PRESENT | U | _PAGE_RW
    assert pt.walk(va + 0x123) == (pte, PAGE_4K)
    assert pt.walk(va + PAGE_4K) is None and pt.walk(1 << 48) is None
    assert len(pt.tables) == 4
    pt.free()
    assert not pt.tables


def test_large_leaves_carry_ps_and_split_when_partly_changed(make_kernel: KernelFactory) -> None:
    make_kernel()
    pt = _pgd(levels=5)
    pt.map(PAGE_1G, 0x4000_0000, PAGE_1G, U, PAGE_1G)
    pt.map(4 * PAGE_1G, 0x20_0000, 2 * PAGE_2M, U | _PAGE_RW, PAGE_2M)
    entry, size = pt.walk(PAGE_1G + 0x12345) or (0, 0)
    assert size == PAGE_1G and entry & _PAGE_PSE
    assert pte_pfn_phys(entry, size, PAGE_1G + 0x12345) == 0x4001_2345
    # protect one 4K page in the middle of the 1 GiB leaf: 1G -> 2M tables -> 4K table
    assert pt.protect(PAGE_1G + PAGE_2M + PAGE_4K, PAGE_4K, _PAGE_NX, 0) == 1
    assert pt.walk(PAGE_1G + PAGE_2M + PAGE_4K) == (
        (0x4000_0000 + PAGE_2M + PAGE_4K) | _PAGE_PRESENT | U | _PAGE_NX,
        PAGE_4K,
    )
    nxt = pt.walk(PAGE_1G + 2 * PAGE_2M)
    assert nxt is not None and nxt[1] == PAGE_2M and not nxt[0] & _PAGE_NX
    # unmap a whole 2M leaf: reported with its size, neighbours stay
    assert pt.unmap(4 * PAGE_1G, PAGE_2M) == [(4 * PAGE_1G, 0x20_0000, PAGE_2M)]
    assert pt.walk(4 * PAGE_1G) is None and pt.walk(4 * PAGE_1G + PAGE_2M) is not None
    pt.free()


def test_kernel_tables_have_no_user_bit_in_their_table_entries(make_kernel: KernelFactory) -> None:
    make_kernel()
    pt = pgd_alloc(4, _KERNPG_TABLE)
    assert pt is not None
    pt.map(0xFFFF_8880_0000_0000 & ((1 << 48) - 1), 0, PAGE_2M, _PAGE_RW, PAGE_2M)
    assert not _raw(pt.root_phys + 0x111 * 8) & _PAGE_USER
    pt.free()


def test_bad_ranges_sizes_and_bits_are_einval(make_kernel: KernelFactory) -> None:
    make_kernel()
    pt = _pgd()
    bad_maps = [
        (0x1001, 0, PAGE_4K, 0, PAGE_4K),
        (0x1000, 0x10, PAGE_4K, 0, PAGE_4K),
        (0x1000, 0, 0, 0, PAGE_4K),
        (PAGE_4K, 0, PAGE_2M, 0, PAGE_2M),
        (0, 0, PAGE_4K, 0, 0x3000),
        (0, 0, PAGE_4K, 0x5000, PAGE_4K),
        ((1 << 48) - PAGE_4K, 0, 2 * PAGE_4K, 0, PAGE_4K),
    ]
    for va, pa, size, attrs, pgsize in bad_maps:
        with pytest.raises(EINVAL):
            pt.map(va, pa, size, attrs, pgsize)
    with pytest.raises(EINVAL):
        pt.protect(0, PAGE_4K, _PAGE_PRESENT, 0)
    with pytest.raises(EINVAL):
        pt.unmap(0x10, PAGE_4K)
    with pytest.raises(EINVAL):
        pgd_alloc(3)
    pt.free()


def test_out_of_memory_for_a_table_page_is_enomem(make_kernel: KernelFactory) -> None:
    make_kernel()
    injector().arm(1, frozenset({"alloc_pages"}))
    try:
        assert pgd_alloc() is None
    finally:
        injector().disarm()
    pt = _pgd()
    injector().arm(2, frozenset({"alloc_pages"}))
    try:
        with pytest.raises(ENOMEM):
            pt.map(0, 0, PAGE_4K, U)
    finally:
        injector().disarm()
    assert pt.walk(0) is None
    pt.free()


def test_random_operations_match_a_page_granular_reference(make_kernel: KernelFactory) -> None:
    """Random map (every page size), unmap and protect over a 4 GiB window: a fixed
    set of probe pages walks to what an independent per-page dictionary says."""
    make_kernel()
    rng = random.Random(14)
    pt = _pgd()
    window = 4 * PAGE_1G
    probes = sorted(
        {rng.randrange(0, window // PAGE_4K) * PAGE_4K for _ in range(1500)}
        | {k * PAGE_2M + d for k in range(0, window // PAGE_2M, 97) for d in (0, PAGE_2M - PAGE_4K)}
    )
    ref: dict[int, tuple[int, int]] = {}  # probe page VA -> (PA, attribute bits)

    def inside(va: int, size: int) -> list[int]:
        return probes[bisect_left(probes, va) : bisect_left(probes, va + size)]

    for _ in range(150):
        op = rng.choice(("map", "map", "unmap", "protect"))
        if op == "map":
            pgsize = rng.choice((PAGE_4K, PAGE_2M, PAGE_1G))
        else:
            pgsize = rng.choice((PAGE_4K, PAGE_2M))
        count = rng.randint(1, 3)
        va = rng.randrange(0, window // pgsize - count) * pgsize
        size = count * pgsize
        if op == "map":
            pa = rng.randrange(0, 64) * PAGE_1G // pgsize * pgsize
            attrs = rng.choice((U, U | _PAGE_RW, U | _PAGE_NX))
            pt.map(va, pa, size, attrs, pgsize)
            for p in inside(va, size):
                ref[p] = (pa + p - va, attrs)
        elif op == "unmap":
            pt.unmap(va, size)
            for p in inside(va, size):
                ref.pop(p, None)
        else:
            pt.protect(va, size, _PAGE_NX, _PAGE_RW)
            for p in inside(va, size):
                if p in ref:
                    pa, attrs = ref[p]
                    ref[p] = (pa, (attrs | _PAGE_NX) & ~_PAGE_RW)
    assert len(ref) > 100
    for va in probes:
        hit = pt.walk(va + 0x10)
        if va not in ref:
            assert hit is None, hex(va)
            continue
        assert hit is not None, hex(va)
        entry, size = hit
        pa, attrs = ref[va]
        assert pte_pfn_phys(entry, size, va + 0x10) == pa + 0x10, hex(va)
        assert entry & (_PAGE_RW | _PAGE_USER | _PAGE_NX) == attrs, hex(va)
    pt.free()
