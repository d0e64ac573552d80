"""Address-space lifetime (kernel/fork.c): ``mm_alloc``, ``mmget``/``mmput`` (users
of the address space) and ``mmgrab``/``mmdrop`` (holders of the struct).

The last ``mmput`` runs ``exit_mmap`` (notifier release, every VMA unmapped, the
page tables freed); the last ``mmdrop`` runs ``__mmdrop``, which gives back the
mm's PASID (``mm_pasid_drop``). An SVA domain holds ``mmgrab`` for as long as it
exists, so a process may exit with its device bonds still open (``do_exit`` runs
``exit_mm`` before ``exit_files``) and its PASID stays allocated until the last
bond goes.

Differences from Linux: no ``dup_mm`` (processes are created empty, not forked).
"""

from __future__ import annotations

from kernel.bug import WARN_ON
from kernel.mm_types import MmStruct
from kernel.mmap import exit_mmap
from kernel.pgtable import pgd_alloc


def mm_alloc() -> MmStruct | None:
    """``mm_alloc``: an empty address space with its own PML4; None without memory."""
    pgd = pgd_alloc()
    if pgd is None:
        return None
    return MmStruct(pgd)


def mmgrab(mm: MmStruct) -> None:
    """``mmgrab``: pin the struct (not the address space)."""
    mm.mm_count += 1


def mmdrop(mm: MmStruct) -> None:
    """``mmdrop``: the last reference frees the struct and its PASID (``__mmdrop``)."""
    if WARN_ON(mm.mm_count <= 0, "mmdrop of a freed mm"):
        return
    mm.mm_count -= 1
    if mm.mm_count == 0:
        # iommu-sva.c's mm_pasid_drop; imported here because SVA itself pins mms.
        from kernel.iommu.iommu_sva import mm_pasid_drop

        mm_pasid_drop(mm)


def mmget(mm: MmStruct) -> None:
    """``mmget``: one more user of the address space."""
    mm.mm_users += 1


def mmget_not_zero(mm: MmStruct) -> bool:
    """``mmget_not_zero``: a user reference unless the address space is gone."""
    if mm.mm_users == 0:
        return False
    mm.mm_users += 1
    return True


def mmput(mm: MmStruct) -> None:
    """``mmput``: the last user tears the address space down (``exit_mmap``) and
    drops the users' hold on the struct."""
    if WARN_ON(mm.mm_users <= 0, "mmput of a dead mm"):
        return
    mm.mm_users -= 1
    if mm.mm_users == 0:
        exit_mmap(mm)
        mmdrop(mm)
