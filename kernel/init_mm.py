"""The kernel's own address space, ``init_mm`` (mm/init-mm.c), with its x86-64 page
tables in RAM: the direct map (arch/x86/mm/init_64.c ``kernel_physical_mapping_init``)
and vmalloc space (mm/vmalloc.c ``vmap_pages_range``/``vunmap_range``), changed by
``set_memory_ro``/``set_memory_rw`` (arch/x86/mm/pat/set_memory.c).

The tables are :class:`kernel.pgtable.PgTable`, the same code and entry format as a
process's ``mm->pgd`` and an IOMMU's first-stage tables; the kernel's non-leaf
entries carry no U/S (``_KERNPG_TABLE``) and its leaves are ``PAGE_KERNEL``
(present, R/W, accessed, dirty, XD).

**Built only when ``iommu.pasid_api=kernel-sva`` is selected** (by
``iommu_subsys_init``), because the only reader in the model is an IOMMU walking
``init_mm.pgd`` for a supervisor-mode PASID; the CPU side of the model reaches
memory through :class:`kernel.mm.MemoryManager`'s direct map and vmalloc page list,
which these tables are kept equal to. Every other boot pays nothing. The direct map
uses 1 GiB pages for every whole, aligned GiB of a RAM range and 2 MiB pages for the
rest (4 KiB only for a tail that is not 2 MiB-aligned), as Linux does with
``gbpages``: a 256 MiB machine's direct map takes three table pages (PML4, PDPT,
PD), the first vmalloc region three more.

Every change flushes the CPU's TLB (:func:`flush_tlb_kernel_range`, counted in
:attr:`InitMm.tlb_flushes`) and tells no one else: ``init_mm`` has no mmu notifier.
That is exactly the gap 5.15's supervisor SVA left open.

Differences from Linux: no kernel text, modules, fixmap or KASAN shadow; the direct
map covers only e820 RAM ranges; ``set_memory_*`` of a vmalloc address changes that
mapping only, not its direct-map alias (Linux changes both); with the tables not
built, ``set_memory_*`` only checks its arguments.
"""

from __future__ import annotations

from attrs import define

from kernel.context import KernelSlot, current
from kernel.errno import EINVAL, ENOMEM, KernelError
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.mm import PAGE_OFFSET, PAGE_SHIFT, PAGE_SIZE, VMALLOC_SIZE, VMALLOC_START
from kernel.pgtable import (
    _KERNPG_TABLE,
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_NX,
    _PAGE_RW,
    PAGE_1G,
    PAGE_2M,
    PAGE_4K,
    PgTable,
    pgd_alloc,
    pte_pfn_phys,
)
from kernel.printk import pr_err, pr_info

PAGE_KERNEL = _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_NX
"""``PAGE_KERNEL`` without the global bit (no PTI here): present is added by the map."""
PAGE_KERNEL_RO = PAGE_KERNEL & ~_PAGE_RW


@define(eq=False)
class InitMm:
    """``struct mm_struct init_mm``: the page tables and the 5.15 SVA fields
    (``pasid`` and the reference count of its ioasid), plus counters of the CPU TLB
    flushes kernel page-table changes made."""

    pgd: PgTable | None = None
    pasid: int = IOMMU_PASID_INVALID
    pasid_refs: int = 0
    tlb_flushes: int = 0
    """``flush_tlb_kernel_range`` calls (the CPU's TLB; no IOMMU is told)."""

    @property
    def pgd_phys(self) -> int:
        """``__pa(init_mm.pgd)``: what a first-stage PASID entry points at."""
        assert self.pgd is not None
        return self.pgd.root_phys

    def lookup_address(self, va: int) -> tuple[int, int] | None:
        """``lookup_address``: the leaf mapping ``va`` as ``(physical address, page
        size)``, or None."""
        if self.pgd is None:
            return None
        leaf = self.pgd.walk(_linear(self.pgd, va))
        if leaf is None:
            return None
        entry, size = leaf
        return pte_pfn_phys(entry, size, va), size

    # -- vmalloc space (kernel.mm.KernelPageTables) ------------------------------------
    def vmap(self, addr: int, pfns: list[int]) -> None:
        """``vmap_pages_range``: one ``PAGE_KERNEL`` leaf per page; ENOMEM when a table
        page cannot be had, with the leaves already set cleared again. A new
        mapping needs no flush (nothing could have cached a not-present entry)."""
        pgd = self.pgd
        assert pgd is not None
        lin = _linear(pgd, addr)
        try:
            for i, pfn in enumerate(pfns):
                pgd.map(lin + i * PAGE_SIZE, pfn << PAGE_SHIFT, PAGE_SIZE, PAGE_KERNEL)
        except KernelError:
            pgd.unmap(lin, len(pfns) * PAGE_SIZE)
            raise

    def vunmap(self, addr: int, size: int) -> None:
        """``vunmap_range``: clear the leaves, then ``flush_tlb_kernel_range``."""
        pgd = self.pgd
        assert pgd is not None
        pgd.unmap(_linear(pgd, addr), size)
        flush_tlb_kernel_range(addr, addr + size)


_STATE: KernelSlot[InitMm] = KernelSlot("init_mm", InitMm)


def init_mm() -> InitMm:
    """This kernel's ``init_mm``."""
    return _STATE.get()


def _linear(pgd: PgTable, va: int) -> int:
    """A canonical kernel address as the table indexes it (the sign-extension bits
    dropped: the tables see the low ``va_bits``)."""
    return va & ((1 << pgd.va_bits) - 1)


def flush_tlb_kernel_range(start: int, end: int) -> None:
    """``flush_tlb_kernel_range``: the CPU's TLB only (``flush_tlb_all`` on every CPU
    in Linux). No mmu notifier runs for ``init_mm``, so IOMMUs keep what they cached."""
    init_mm().tlb_flushes += 1


def _direct_map_pieces(base: int, size: int) -> list[tuple[int, int, int]]:
    """``(phys, size, page size)`` runs covering ``[base, base+size)``, each address
    with the largest page that fits (``kernel_physical_mapping_init`` with gbpages)."""
    runs: list[tuple[int, int, int]] = []
    addr, end = base, base + size
    while addr < end:
        pg = next(p for p in (PAGE_1G, PAGE_2M, PAGE_4K) if addr % p == 0 and addr + p <= end)
        if runs and runs[-1][2] == pg and runs[-1][0] + runs[-1][1] == addr:
            runs[-1] = (runs[-1][0], runs[-1][1] + pg, pg)
        else:
            runs.append((addr, pg, pg))
        addr += pg
    return runs


def paging_init_kernel_tables() -> None:
    """Build ``init_mm``'s tables (``init_mem_mapping`` + the vmalloc areas that
    exist already, such as the init task's stack) and hook them into vmalloc/vfree.
    A failure leaves the kernel without them (kernel-sva binds then fail)."""
    k = current.kernel
    state = init_mm()
    if state.pgd is not None:
        return
    pgd = pgd_alloc(4, _KERNPG_TABLE)
    if pgd is None:
        pr_err("init_mm: no memory for the kernel page tables")
        return
    state.pgd = pgd
    memmgr = k.mm
    try:
        for base, size in memmgr.ram:
            for phys, length, pg in _direct_map_pieces(base & ~(PAGE_SIZE - 1), size):
                pgd.map(_linear(pgd, PAGE_OFFSET + phys), phys, length, PAGE_KERNEL, pg)
        for area in memmgr.vmalloc_areas.values():
            state.vmap(area.addr, [p.pfn for p in area.pages])
    except KernelError:
        pr_err("init_mm: no memory for the kernel page tables")
        free_kernel_tables()
        return
    memmgr.kernel_pgtables = state
    pr_info(
        f"init_mm: kernel page tables at {pgd.root_phys:#x}: direct map, vmalloc space "
        f"{VMALLOC_START:#x}-{VMALLOC_START + VMALLOC_SIZE - 1:#x}"
    )


def free_kernel_tables() -> None:
    """Give the tables' pages back (kernel shutdown)."""
    state = init_mm()
    if state.pgd is None:
        return
    current.kernel.mm.kernel_pgtables = None
    state.pgd.free()
    state.pgd = None


def _change_page_attr(addr: int, numpages: int, set_bits: int, clear_bits: int) -> None:
    """``change_page_attr_set_clr``: EINVAL for an unaligned address or a negative
    count; a large page the range covers in part is split first; then the CPU TLB."""
    if addr % PAGE_SIZE or numpages < 0:
        raise EINVAL(f"set_memory: {addr:#x} x{numpages}")
    pgd = init_mm().pgd
    if pgd is None or numpages == 0:
        return
    size = numpages * PAGE_SIZE
    try:
        pgd.protect(_linear(pgd, addr), size, set_bits, clear_bits)
    except KernelError as err:
        raise ENOMEM(f"set_memory: {err}") from err
    flush_tlb_kernel_range(addr, addr + size)


def set_memory_ro(addr: int, numpages: int) -> None:
    """``set_memory_ro``: clear R/W on ``numpages`` pages at ``addr`` (EINVAL, ENOMEM
    when a split needs a table page it cannot get)."""
    _change_page_attr(addr, numpages, 0, _PAGE_RW)


def set_memory_rw(addr: int, numpages: int) -> None:
    """``set_memory_rw``: set R/W again."""
    _change_page_attr(addr, numpages, _PAGE_RW, 0)
