"""``struct mm_struct`` and ``struct vm_area_struct`` (include/linux/mm_types.h).

An :class:`MmStruct` is a process address space: its x86-64 page tables in RAM
(:class:`kernel.pgtable.PgTable`, ``mm->pgd``), its VMAs ordered by start address
(the maple tree ``mm->mm_mt``), the two reference counts (``mm_users`` for the
address space, ``mm_count`` for the struct), the mmu-notifier subscriptions, and
the IOMMU state SVA keeps per mm (``mm->iommu_mm``: the PASID, the SVA domains and
the device bonds).

Differences from Linux: one flat attribute set instead of the nested
``iommu_mm_data``; VMAs of one mm sit in a sorted dict keyed by ``vm_start``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import define, field
from sortedcontainers import SortedDict

from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.pgtable import PgTable

if TYPE_CHECKING:
    from kernel.mmu_notifier import MmuNotifier

TASK_SIZE = 1 << 47
"""``TASK_SIZE_MAX`` with 4-level paging: user addresses are below it."""


@define(eq=False)
class VmAreaStruct:
    """``struct vm_area_struct``: ``[vm_start, vm_end)`` with ``vm_flags`` (VM_*)
    and the leaf attribute bits those flags give (``vm_page_prot``)."""

    vm_mm: MmStruct
    vm_start: int
    vm_end: int
    vm_flags: int
    vm_page_prot: int
    vm_pgoff: int = 0
    vm_private_data: Any = None
    vm_ops: Any = None
    """``vm_operations_struct``: an optional ``close(vma)``."""
    vm_file: Any = None
    """The mapped file (a reference dropped when the VMA goes)."""


@define(eq=False)
class MmStruct:
    """``struct mm_struct``."""

    pgd: PgTable
    mm_mt: SortedDict[int, VmAreaStruct] = field(factory=SortedDict)
    """VMAs by ``vm_start`` (the maple tree)."""
    mmap_base: int = TASK_SIZE - (1 << 30)
    """Top of the top-down mmap area (below a 1 GiB stack gap)."""
    mm_users: int = 1
    mm_count: int = 1
    notifier_subscriptions: list[MmuNotifier] = field(factory=list)
    pasid: int = IOMMU_PASID_INVALID
    """``mm->iommu_mm->pasid`` (``mm_get_enqcmd_pasid``)."""
    sva_domains: list[Any] = field(factory=list)
    sva_handles: list[Any] = field(factory=list)
    locked_vm: int = 0
    """Pages charged as locked (``mm->locked_vm``: mlock, VFIO-style pin accounting)."""
    pinned_vm: int = 0
    """Pages pinned long-term by drivers (``mm->pinned_vm``)."""
    exited: bool = False
    """``exit_mmap`` ran: the address space is empty and its tables freed."""

    @property
    def pgd_phys(self) -> int:
        return self.pgd.root_phys

    def vmas(self) -> list[VmAreaStruct]:
        """Every VMA in address order (``for_each_vma``)."""
        return list(self.mm_mt.values())
