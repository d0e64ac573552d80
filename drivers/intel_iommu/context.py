"""Root and context tables in RAM (the root/context helpers of drivers/iommu/intel/iommu.c:
``iommu_alloc_root_entry``, ``iommu_context_addr``, ``free_context_table`` and the
``context_*`` entry accessors of iommu.h).

The root table is one page of 256 16-byte entries indexed by bus. In legacy mode
each root entry points at a context table of 256 16-byte entries; in scalable mode
its low half points at the table for devfn 0x00-0x7F and its high half at the one
for 0x80-0xFF, each holding 128 32-byte entries (``(devfn & 0x7F) * 2`` in 16-byte
units, as Linux indexes them). Context tables are allocated when first needed
and freed with the root table.
"""

from __future__ import annotations

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.structs import IntelIommu
from kernel.errno import ENOMEM
from kernel.mm import GFP_ATOMIC, free_page, get_zeroed_page, phys_to_virt, read64, virt_to_phys
from kernel.mm import write64 as _write64
from kernel.printk import pr_err


def iommu_alloc_root_entry(iommu: IntelIommu) -> None:
    """``iommu_alloc_root_entry``: one zeroed page."""
    root = get_zeroed_page(GFP_ATOMIC)
    if root is None:
        pr_err(f"DMAR: Allocating root entry for {iommu.name} failed")
        raise ENOMEM("root entry")
    iommu.root_entry = root


def _root_slot(iommu: IntelIommu, bus: int, devfn: int) -> tuple[int, int]:
    """The root-entry word that covers ``devfn`` and the 16-byte index in its table."""
    slot = iommu.root_entry + bus * ir.ROOT_ENTRY_SIZE
    if iommu.sm:
        if devfn >= 0x80:
            devfn -= 0x80
            slot += 8
        devfn *= 2
    return slot, devfn


def iommu_context_addr(iommu: IntelIommu, bus: int, devfn: int, alloc: bool) -> int | None:
    """``iommu_context_addr``: the context entry of ``bus:devfn`` (a kernel address),
    allocating its table when ``alloc``; None when absent or out of memory."""
    slot, index = _root_slot(iommu, bus, devfn)
    entry = read64(slot)
    if entry & 1:
        table = phys_to_virt(entry & ir.VTD_PAGE_MASK)
    else:
        if not alloc:
            return None
        new = get_zeroed_page(GFP_ATOMIC)
        if new is None:
            return None
        _write64(slot, virt_to_phys(new) | 1)
        table = new
    return table + index * ir.CONTEXT_ENTRY_SIZE


def free_context_table(iommu: IntelIommu) -> None:
    """``free_context_table``: every context table, then the root table."""
    if not iommu.root_entry:
        return
    for bus in range(ir.ROOT_ENTRY_NR):
        for half in (0, 8) if iommu.sm else (0,):
            entry = read64(iommu.root_entry + bus * ir.ROOT_ENTRY_SIZE + half)
            if entry & 1:
                free_page(phys_to_virt(entry & ir.VTD_PAGE_MASK))
    free_page(iommu.root_entry)
    iommu.root_entry = 0


def context_lo(context: int) -> int:
    return read64(context)


def context_hi(context: int) -> int:
    return read64(context + 8)


def context_present(context: int) -> bool:
    return bool(read64(context) & ir.CONTEXT_PRESENT)


def context_set(context: int, lo: int, hi: int) -> None:
    """Write a context entry: the high word first, the low word (with P) last."""
    _write64(context + 8, hi)
    _write64(context, lo)


def context_clear_entry(context: int) -> None:
    """``context_clear_entry``: P cleared first, then the rest."""
    _write64(context, 0)
    _write64(context + 8, 0)
