"""User-mode device-store instructions and the ENQCMD #GP fixup
(arch/x86/kernel/traps.c ``try_fixup_enqcmd_gp``, arch/x86/include/asm/special_insns.h).

A task runs ENQCMD (or MOVDIR64B) against a portal it mapped from a device's
character device: the CPU reads the 64-byte descriptor from user memory,
translates the destination through the task's page tables (it must be a present,
writable PFN mapping) and performs the store. ENQCMD replaces the descriptor's
PASID with IA32_PASID[19:0] and clears its privilege bit; while the MSR is not
valid the instruction faults with #GP, which the kernel fixes up once by loading
the mm's PASID into the MSR (``pasid_activated``) and retrying. ENQCMD reports
whether the device accepted the command (ZF=0) or asks for a retry (ZF=1).

Differences from Linux: a fault the kernel cannot fix (no PASID, an unmapped
source or destination) raises EFAULT naming the SIGSEGV the task would get.
"""

from __future__ import annotations

from kernel.errno import EFAULT
from kernel.io import IoMem, enqcmd, movdir64b
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.mmap import VM_PFNMAP, vma_lookup
from kernel.pgtable import _PAGE_RW, pte_pfn_phys
from kernel.sched import MSR_IA32_PASID_VALID, TaskStruct, get_current, use_task
from kernel.uaccess import copy_from_user

ENQCMD_ACCEPTED = 0
ENQCMD_RETRY = 1


def mm_valid_pasid(task: TaskStruct) -> bool:
    """``mm_valid_pasid``: the task's mm has a PASID (it was bound for SVA)."""
    return task.mm is not None and task.mm.pasid != IOMMU_PASID_INVALID


def try_fixup_enqcmd_gp() -> bool:
    """``try_fixup_enqcmd_gp``: on the first ENQCMD #GP of a task whose mm has a
    PASID, load IA32_PASID and let the instruction run again."""
    task = get_current()
    if task is None or not mm_valid_pasid(task) or task.pasid_activated:
        return False
    assert task.mm is not None
    task.ia32_pasid = MSR_IA32_PASID_VALID | task.mm.pasid
    task.pasid_activated = True
    return True


def _user_portal(task: TaskStruct, uaddr: int) -> IoMem:
    """The physical MMIO address a user store to ``uaddr`` reaches."""
    assert task.mm is not None
    vma = vma_lookup(task.mm, uaddr)
    hit = task.mm.pgd.walk(uaddr)
    if vma is None or not vma.vm_flags & VM_PFNMAP or hit is None or not hit[0] & _PAGE_RW:
        raise EFAULT(f"SIGSEGV: {task.comm}[{task.pid}] store to {uaddr:#x} is not a portal")
    entry, pgsize = hit
    return IoMem(pte_pfn_phys(entry, pgsize, uaddr), 64)


def _user_descriptor(task: TaskStruct, src: int) -> bytes:
    data, left = copy_from_user(src, 64)
    if left:
        raise EFAULT(f"SIGSEGV: {task.comm}[{task.pid}] descriptor at {src:#x} unreadable")
    return data


def user_enqcmd(task: TaskStruct, portal: int, src: int) -> int:
    """ENQCMD executed by ``task``: ENQCMD_ACCEPTED or ENQCMD_RETRY."""
    if task.mm is None:
        raise EFAULT(f"SIGSEGV: {task.comm}[{task.pid}] has no address space")
    with use_task(task):
        desc = _user_descriptor(task, src)
        dst = _user_portal(task, portal)
        if not task.ia32_pasid & MSR_IA32_PASID_VALID and not try_fixup_enqcmd_gp():
            raise EFAULT(f"SIGSEGV: {task.comm}[{task.pid}] ENQCMD #GP without a PASID")
        rc = enqcmd(dst, desc, task.ia32_pasid & 0xFFFFF)
    return ENQCMD_ACCEPTED if rc == 0 else ENQCMD_RETRY


def user_movdir64b(task: TaskStruct, portal: int, src: int) -> None:
    """MOVDIR64B executed by ``task`` (a dedicated WQ's posted submission)."""
    if task.mm is None:
        raise EFAULT(f"SIGSEGV: {task.comm}[{task.pid}] has no address space")
    with use_task(task):
        desc = _user_descriptor(task, src)
        movdir64b(_user_portal(task, portal), desc)
