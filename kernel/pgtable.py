"""x86-64 CPU page tables in RAM (arch/x86/mm/pgtable.c, include/linux/pgtable.h,
arch/x86/mm/pat/set_memory.c's large-page split).

One :class:`PgTable` is a root page (PML4, or PML5 with 5-level paging) plus every
table page hung below it. Entries are the x86-64 paging format whose bits have
their one home in :mod:`kernel.iommu.generic_pt.fmt.x86_64` (``_PAGE_PRESENT`` ...
below are those bits under their arch/x86 names), so the CPU view, a VT-d
first-stage walk of a process's ``mm->pgd`` and the kernel's own tables (``init_mm``)
read the same bytes.

The API is general: :meth:`PgTable.map` installs 4 KiB, 2 MiB or 1 GiB leaves,
:meth:`PgTable.unmap` clears and :meth:`PgTable.protect` changes the attribute
bits of every leaf in a range (splitting a large leaf the range covers only in part,
as ``split_large_page`` does), and :meth:`PgTable.walk` returns the leaf mapping
an address. Callers flush the TLBs (CPU and secondary) themselves.

Differences from Linux: table pages are never freed before :meth:`PgTable.free`
(Linux's ``free_pgtables`` frees empty ones at munmap); there is no PTI, no
accessed/dirty tracking by the CPU and no huge-page collapse.
"""

from __future__ import annotations

from collections.abc import Iterator

from attrs import define, field

from kernel.errno import EINVAL, ENOMEM
from kernel.iommu.generic_pt.fmt.x86_64 import (
    X86_64_FMT_A,
    X86_64_FMT_D,
    X86_64_FMT_OA,
    X86_64_FMT_P,
    X86_64_FMT_PS,
    X86_64_FMT_RW,
    X86_64_FMT_U,
    X86_64_FMT_XD,
)
from kernel.mm import __GFP_ZERO, GFP_KERNEL, Page, __free_pages, alloc_pages, current_mm

_TABLE_GFP = GFP_KERNEL | __GFP_ZERO
_free_table = __free_pages  # a plain name usable inside the class (no mangling)

_PAGE_PRESENT = X86_64_FMT_P
_PAGE_PWT = 1 << 3
_PAGE_PCD = 1 << 4
_PAGE_RW = X86_64_FMT_RW
_PAGE_USER = X86_64_FMT_U
_PAGE_ACCESSED = X86_64_FMT_A
_PAGE_DIRTY = X86_64_FMT_D
_PAGE_PSE = X86_64_FMT_PS
_PAGE_NX = X86_64_FMT_XD
PTE_PFN_MASK = X86_64_FMT_OA
_PAGE_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED
"""A user page table's non-leaf entries (``_PAGE_TABLE``)."""
_KERNPG_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY
"""The kernel's non-leaf entries (``_KERNPG_TABLE``): no U/S."""
_PAGE_FLAGS = ~PTE_PFN_MASK & ((1 << 64) - 1)

PTE_LEVEL = 0
PMD_LEVEL = 1
PUD_LEVEL = 2
PAGE_4K = 1 << 12
PAGE_2M = 1 << 21
PAGE_1G = 1 << 30
_LEVEL_OF_SIZE = {PAGE_4K: PTE_LEVEL, PAGE_2M: PMD_LEVEL, PAGE_1G: PUD_LEVEL}


def _shift(level: int) -> int:
    return 12 + 9 * level


@define(eq=False)
class PgTable:
    """A tree of x86-64 paging structures: ``root`` is what CR3 (or a PASID entry's
    first-stage pointer) holds; ``tables`` every page the tree owns."""

    root: Page
    levels: int = 4
    table_attrs: int = _PAGE_TABLE
    tables: list[Page] = field(factory=list)

    @property
    def root_phys(self) -> int:
        return self.root.phys

    @property
    def va_bits(self) -> int:
        return _shift(self.levels)

    # ------------------------------------------------------------------ internals
    def _check(self, va: int, size: int, align: int = PAGE_4K) -> None:
        if va % align or size <= 0 or size % align or va + size > 1 << self.va_bits:
            raise EINVAL(f"page table range {va:#x}+{size:#x} (alignment {align:#x})")

    def _slot(self, va: int, level: int, alloc: bool) -> int | None:
        """The physical address of the entry for ``va`` at ``level``: tables are made
        on the way down when ``alloc`` (ENOMEM when none is left), a large leaf in the
        way is split; without ``alloc`` None where a table is missing."""
        mem = current_mm().mem
        table = self.root.phys
        for lvl in range(self.levels - 1, level, -1):
            slot = table + ((va >> _shift(lvl)) & 0x1FF) * 8
            ent = mem.read_u64(slot)
            if not ent & _PAGE_PRESENT:
                if not alloc:
                    return None
                page = self._new_table()
                ent = page.phys | self.table_attrs
                mem.write_u64(slot, ent)
            elif lvl <= PUD_LEVEL and ent & _PAGE_PSE:
                ent = self._split(slot, ent, lvl)
            table = ent & PTE_PFN_MASK
        return table + ((va >> _shift(level)) & 0x1FF) * 8

    def _new_table(self) -> Page:
        page = alloc_pages(_TABLE_GFP, 0)
        if page is None:
            raise ENOMEM("page table page")
        self.tables.append(page)
        return page

    def _split(self, slot: int, ent: int, level: int) -> int:
        """``split_large_page``: a large leaf becomes a table of 512 leaves one level
        down carrying the same attributes."""
        page = self._new_table()
        base = ent & PTE_PFN_MASK & ~((1 << _shift(level)) - 1)
        attrs = ent & _PAGE_FLAGS & ~_PAGE_PSE & ~_PAGE_PRESENT
        sub = level - 1
        psize = 1 << _shift(sub)
        ps = _PAGE_PSE if sub else 0
        entries = [_PAGE_PRESENT | ps | attrs | (base + i * psize) for i in range(512)]
        mem = current_mm().mem
        mem.write_u64s(page.phys, entries)
        new = page.phys | self.table_attrs
        mem.write_u64(slot, new)
        return new

    def _leaves(self, va: int, size: int) -> Iterator[tuple[int, int, int, int]]:
        """Every present leaf in ``[va, va+size)`` as ``(slot, entry, addr, level)``,
        splitting large leaves the range only partly covers; empty ranges skipped."""
        mem = current_mm().mem
        end = va + size
        addr = va
        while addr < end:
            table = self.root.phys
            lvl = self.levels - 1
            while True:
                slot = table + ((addr >> _shift(lvl)) & 0x1FF) * 8
                ent = mem.read_u64(slot)
                step = 1 << _shift(lvl)
                if not ent & _PAGE_PRESENT:
                    addr = (addr | (step - 1)) + 1
                    break
                if lvl == PTE_LEVEL or (lvl <= PUD_LEVEL and ent & _PAGE_PSE):
                    if lvl and (addr % step or addr + step > end):
                        ent = self._split(slot, ent, lvl)
                        table = ent & PTE_PFN_MASK
                        lvl -= 1
                        continue
                    yield slot, ent, addr, lvl
                    addr += step
                    break
                table = ent & PTE_PFN_MASK
                lvl -= 1

    # ------------------------------------------------------------------ API
    def map(self, va: int, pa: int, size: int, attrs: int, pgsize: int = PAGE_4K) -> None:
        """Install present leaves of ``pgsize`` for ``[va, va+size)`` → ``pa`` with the
        attribute bits ``attrs`` (``_PAGE_RW | _PAGE_USER | _PAGE_NX`` ...), replacing
        whatever mapped the range. EINVAL for a misaligned range or page size, ENOMEM
        when a table page cannot be allocated (leaves set so far stay)."""
        level = _LEVEL_OF_SIZE.get(pgsize)
        if level is None:
            raise EINVAL(f"page size {pgsize:#x}")
        self._check(va, size, pgsize)
        if pa % pgsize or attrs & PTE_PFN_MASK:
            raise EINVAL(f"physical address {pa:#x} or attributes {attrs:#x}")
        mem = current_mm().mem
        ps = _PAGE_PSE if level else 0
        leaf = _PAGE_PRESENT | ps | attrs
        for off in range(0, size, pgsize):
            slot = self._slot(va + off, level, alloc=True)
            assert slot is not None
            mem.write_u64(slot, leaf | (pa + off))

    def unmap(self, va: int, size: int) -> list[tuple[int, int, int]]:
        """Clear every leaf in ``[va, va+size)``; returns the cleared mappings as
        ``(va, pa, pgsize)`` so the caller can free the pages after flushing TLBs."""
        self._check(va, size)
        mem = current_mm().mem
        gone: list[tuple[int, int, int]] = []
        for slot, ent, addr, lvl in self._leaves(va, size):
            mem.write_u64(slot, 0)
            gone.append((addr, ent & PTE_PFN_MASK & ~((1 << _shift(lvl)) - 1), 1 << _shift(lvl)))
        return gone

    def protect(self, va: int, size: int, set_bits: int, clear_bits: int) -> int:
        """Set and clear attribute bits of every present leaf in the range
        (``change_protection`` / ``change_page_attr_set_clr``); returns how many
        leaves changed."""
        self._check(va, size)
        if (set_bits | clear_bits) & (PTE_PFN_MASK | _PAGE_PRESENT | _PAGE_PSE):
            raise EINVAL(f"protect bits {set_bits:#x}/{clear_bits:#x}")
        mem = current_mm().mem
        changed = 0
        for slot, ent, _, _ in self._leaves(va, size):
            new = (ent & ~clear_bits) | set_bits
            if new != ent:
                mem.write_u64(slot, new)
                changed += 1
        return changed

    def walk(self, va: int) -> tuple[int, int] | None:
        """The leaf mapping ``va`` as ``(entry, page size)``, or None (``follow_pte``
        / ``lookup_address``)."""
        if not 0 <= va < 1 << self.va_bits:
            return None
        mem = current_mm().mem
        table = self.root.phys
        for lvl in range(self.levels - 1, -1, -1):
            ent = mem.read_u64(table + ((va >> _shift(lvl)) & 0x1FF) * 8)
            if not ent & _PAGE_PRESENT:
                return None
            if lvl == PTE_LEVEL or (lvl <= PUD_LEVEL and ent & _PAGE_PSE):
                return ent, 1 << _shift(lvl)
            table = ent & PTE_PFN_MASK
        return None  # pragma: no cover - level 0 always returns

    def free(self) -> None:
        """``pgd_free`` plus ``free_pgtables``: every table page goes back."""
        for page in self.tables:
            _free_table(page, 0)
        self.tables.clear()


def pgprot_noncached(prot: int) -> int:
    """``pgprot_noncached``: UC- memory type (PCD) for device memory."""
    return prot | _PAGE_PCD


def pte_pfn_phys(entry: int, pgsize: int, va: int) -> int:
    """The physical address ``va`` reaches through the leaf ``entry`` of ``pgsize``."""
    return (entry & PTE_PFN_MASK & ~(pgsize - 1)) | (va & (pgsize - 1))


def pgd_alloc(levels: int = 4, table_attrs: int = _PAGE_TABLE) -> PgTable | None:
    """``pgd_alloc``: an empty root table (4- or 5-level paging); None without memory."""
    if levels not in (4, 5):
        raise EINVAL(f"{levels}-level paging")
    root = alloc_pages(_TABLE_GFP, 0)
    if root is None:
        return None
    return PgTable(root, levels, table_attrs, [root])
