"""Process address-space layout (mm/mmap.c, mm/vma.c, mm/mprotect.c): ``mmap``,
``munmap``, ``mprotect``, ``find_vma``/``vma_lookup`` and ``exit_mmap``.

VMAs carry the ``VM_*`` flags and the leaf attribute bits those give
(:func:`vm_get_page_prot`). Anonymous memory is demand-zero: ``mmap`` installs no
PTE (unless ``MAP_POPULATE``), the first touch goes through
:func:`kernel.memory.handle_mm_fault`. A file mapping calls the file's ``mmap``
operation with the new VMA (as ``call_mmap``), which typically
``remap_pfn_range``\\ s device memory into it.

Changes that clear or downgrade PTEs (``munmap``, ``mprotect``) flush the CPU TLB
and, through :func:`kernel.mmu_notifier.mmu_notifier_arch_invalidate_secondary_tlbs`,
every secondary TLB (the IOMMU's PASID-tagged IOTLB and device TLBs) before the
unmapped pages lose the mapping's reference, as x86's ``flush_tlb_mm_range`` does;
a page pinned for DMA (:mod:`kernel.gup`) stays allocated until it is unpinned.

Differences from Linux: adjacent VMAs are never merged; private writable mappings
map anonymous pages writable at first touch (no zero-page/COW step, no fork);
``PROT_NONE`` mprotect is refused with EOPNOTSUPP (the PROT_NONE PTE encoding is
not modelled); no rlimits, no ``mmap_lock``.
"""

from __future__ import annotations

from typing import Any

from kernel.errno import EACCES, EINVAL, ENOMEM, EOPNOTSUPP, KernelError
from kernel.mm import PAGE_MASK, PAGE_SIZE, Page
from kernel.mm_types import TASK_SIZE, MmStruct, VmAreaStruct
from kernel.mmu_notifier import (
    __mmu_notifier_release,
    mmu_notifier_arch_invalidate_secondary_tlbs,
)
from kernel.page_ref import put_page
from kernel.pgtable import _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_NX, _PAGE_RW, _PAGE_USER, PAGE_4K

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_POPULATE = 0x8000

VM_NONE = 0x0
VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_MAYREAD = 0x10
VM_MAYWRITE = 0x20
VM_MAYEXEC = 0x40
VM_MAYSHARE = 0x80
VM_PFNMAP = 0x400
VM_IO = 0x4000
VM_DONTCOPY = 0x20000
VM_DONTEXPAND = 0x40000
VM_DONTDUMP = 0x0400_0000
VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC


def calc_vm_prot_bits(prot: int) -> int:
    """``calc_vm_prot_bits``: PROT_* → VM_READ/WRITE/EXEC."""
    return prot & (PROT_READ | PROT_WRITE | PROT_EXEC)


def vm_get_page_prot(vm_flags: int) -> int:
    """``vm_get_page_prot``: the leaf attribute bits a VMA's flags give — user,
    accessed; writable also R/W and dirty; not executable NX."""
    prot = _PAGE_USER | _PAGE_ACCESSED
    if vm_flags & VM_WRITE:
        prot |= _PAGE_RW | _PAGE_DIRTY
    if not vm_flags & VM_EXEC:
        prot |= _PAGE_NX
    return prot


def find_vma(mm: MmStruct, addr: int) -> VmAreaStruct | None:
    """``find_vma``: the first VMA ending above ``addr`` (it may start above it)."""
    idx = mm.mm_mt.bisect_right(addr)
    if idx:
        vma: VmAreaStruct = mm.mm_mt.peekitem(idx - 1)[1]
        if vma.vm_end > addr:
            return vma
    if idx < len(mm.mm_mt):
        nxt: VmAreaStruct = mm.mm_mt.peekitem(idx)[1]
        return nxt
    return None


def vma_lookup(mm: MmStruct, addr: int) -> VmAreaStruct | None:
    """``vma_lookup``: the VMA containing ``addr``, or None."""
    vma = find_vma(mm, addr)
    if vma is None or vma.vm_start > addr:
        return None
    return vma


def get_unmapped_area(mm: MmStruct, length: int) -> int:
    """``arch_get_unmapped_area_topdown``: the highest gap below ``mmap_base``."""
    top = mm.mmap_base
    for vma in reversed(mm.vmas()):
        if vma.vm_start >= top:
            top = min(top, vma.vm_start)
            continue
        if vma.vm_end + length <= top:
            return top - length
        top = vma.vm_start
    if top - length >= PAGE_SIZE:
        return top - length
    raise ENOMEM(f"no {length:#x}-byte gap in the address space")


def _insert(mm: MmStruct, vma: VmAreaStruct) -> None:
    mm.mm_mt[vma.vm_start] = vma


def _split(mm: MmStruct, addr: int) -> None:
    """``split_vma``: the VMA straddling ``addr`` becomes two."""
    vma = vma_lookup(mm, addr)
    if vma is None or vma.vm_start == addr:
        return
    tail = VmAreaStruct(
        mm,
        addr,
        vma.vm_end,
        vma.vm_flags,
        vma.vm_page_prot,
        vma.vm_pgoff + ((addr - vma.vm_start) >> 12),
        vma.vm_private_data,
        vma.vm_ops,
        vma.vm_file,
    )
    if vma.vm_file is not None:
        vma.vm_file.f_count += 1
    vma.vm_end = addr
    _insert(mm, tail)


def _range_vmas(mm: MmStruct, start: int, end: int) -> list[VmAreaStruct]:
    return [v for v in mm.vmas() if v.vm_start < end and v.vm_end > start]


def _zap(mm: MmStruct, vmas: list[VmAreaStruct], start: int, end: int) -> None:
    """``unmap_region``: clear the PTEs, flush the TLBs (CPU and secondary), then
    give the anonymous pages back (``tlb_finish_mmu``)."""
    freed: list[int] = []
    cleared = False
    for vma in vmas:
        s, e = max(start, vma.vm_start), min(end, vma.vm_end)
        gone = mm.pgd.unmap(s, e - s)
        cleared = cleared or bool(gone)
        if not vma.vm_flags & VM_PFNMAP:
            freed.extend(pa for _, pa, size in gone if size == PAGE_4K)
    if cleared:
        mmu_notifier_arch_invalidate_secondary_tlbs(mm, start, end)
    for pa in freed:
        put_page(Page(pa >> 12))  # a pinned page stays until unpinned


def _close(vma: VmAreaStruct) -> None:
    """``remove_vma``: the VMA's ``close`` op, then its file reference goes."""
    close = getattr(vma.vm_ops, "close", None)
    if close is not None:
        close(vma)
    if vma.vm_file is not None:
        from kernel.fs import fput  # the VFS sits above mmap

        filp, vma.vm_file = vma.vm_file, None
        fput(filp)


def do_munmap(mm: MmStruct, start: int, length: int) -> None:
    """``do_vmi_munmap``: unmap ``[start, start+len)``; EINVAL for a misaligned or
    empty range or one beyond TASK_SIZE. Unmapping nothing is not an error."""
    if start & ~PAGE_MASK or length <= 0 or start + length > TASK_SIZE:
        raise EINVAL(f"munmap({start:#x}, {length:#x})")
    end = start + ((length + PAGE_SIZE - 1) & PAGE_MASK)
    _split(mm, start)
    _split(mm, end)
    vmas = _range_vmas(mm, start, end)
    for vma in vmas:
        del mm.mm_mt[vma.vm_start]
    _zap(mm, vmas, start, end)
    for vma in vmas:
        _close(vma)


def vm_mmap(
    mm: MmStruct,
    addr: int,
    length: int,
    prot: int,
    flags: int,
    file: Any = None,
    pgoff: int = 0,
) -> int:
    """``vm_mmap`` / ``do_mmap``: a new VMA of ``length`` bytes; returns its start.
    Anonymous (``MAP_ANONYMOUS``) memory is demand-zero; with ``file`` the file's
    ``mmap(file, vma)`` populates it. EINVAL for a bad length/flags/alignment,
    ENOMEM when no gap is left; a failing file ``mmap`` leaves no VMA."""
    if length <= 0 or length > TASK_SIZE:
        raise EINVAL(f"mmap length {length:#x}")
    if flags & (MAP_SHARED | MAP_PRIVATE) not in (MAP_SHARED, MAP_PRIVATE):
        raise EINVAL(f"mmap flags {flags:#x}: exactly one of MAP_SHARED/MAP_PRIVATE")
    if file is None and not flags & MAP_ANONYMOUS:
        raise EINVAL("mmap without a file needs MAP_ANONYMOUS")
    length = (length + PAGE_SIZE - 1) & PAGE_MASK
    if flags & MAP_FIXED:
        if addr & ~PAGE_MASK or addr + length > TASK_SIZE:
            raise EINVAL(f"MAP_FIXED at {addr:#x}")
        do_munmap(mm, addr, length)
    else:
        addr = get_unmapped_area(mm, length)
    vm_flags = calc_vm_prot_bits(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if flags & MAP_SHARED:
        vm_flags |= VM_SHARED | VM_MAYSHARE
    vma = VmAreaStruct(mm, addr, addr + length, vm_flags, vm_get_page_prot(vm_flags), pgoff)
    _insert(mm, vma)
    if file is not None:
        try:
            file.mmap(file, vma)
        except KernelError:
            del mm.mm_mt[addr]
            mm.pgd.unmap(addr, length)
            raise
    elif flags & MAP_POPULATE:
        from kernel.memory import populate_vma_page_range

        populate_vma_page_range(vma, addr, addr + length)
    return addr


def do_mprotect(mm: MmStruct, start: int, length: int, prot: int) -> None:
    """``do_mprotect_pkey``: new access rights for ``[start, start+len)``; present
    PTEs follow at once and the secondary TLBs are flushed when any changed.
    EINVAL for a misaligned range, ENOMEM when part of it is unmapped, EACCES when
    a VMA may not get the asked right (``VM_MAY*``)."""
    if start & ~PAGE_MASK or length <= 0 or start + length > TASK_SIZE:
        raise EINVAL(f"mprotect({start:#x}, {length:#x})")
    if not prot & (PROT_READ | PROT_WRITE | PROT_EXEC):
        raise EOPNOTSUPP("mprotect(PROT_NONE) is not modelled")
    end = start + ((length + PAGE_SIZE - 1) & PAGE_MASK)
    vmas = _range_vmas(mm, start, end)
    covered = start
    for vma in vmas:
        if vma.vm_start > covered:
            break
        covered = vma.vm_end
    if covered < end:
        raise ENOMEM(f"mprotect: {covered:#x} is not mapped")
    want = calc_vm_prot_bits(prot)
    for vma in vmas:
        if (want << 4) & ~vma.vm_flags & (VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC):
            raise EACCES(f"mprotect: {vma.vm_start:#x} may not become {prot:#x}")
    _split(mm, start)
    _split(mm, end)
    changed = 0
    for vma in _range_vmas(mm, start, end):
        vma.vm_flags = (vma.vm_flags & ~VM_ACCESS_FLAGS) | want
        vma.vm_page_prot = vm_get_page_prot(vma.vm_flags)
        bits = _PAGE_RW | _PAGE_DIRTY | _PAGE_NX
        new = vma.vm_page_prot & bits
        changed += mm.pgd.protect(vma.vm_start, vma.vm_end - vma.vm_start, new, bits & ~new)
    if changed:
        mmu_notifier_arch_invalidate_secondary_tlbs(mm, start, end)


def exit_mmap(mm: MmStruct) -> None:
    """``exit_mmap``: subscribers are released first (an IOMMU stops walking the
    tables), then every VMA is unmapped and the page tables freed."""
    __mmu_notifier_release(mm)
    vmas = mm.vmas()
    mm.mm_mt.clear()
    for vma in vmas:
        gone = mm.pgd.unmap(vma.vm_start, vma.vm_end - vma.vm_start)
        if not vma.vm_flags & VM_PFNMAP:
            for _, pa, size in gone:
                if size == PAGE_4K:
                    put_page(Page(pa >> 12))
        _close(vma)
    mm.pgd.free()
    mm.exited = True
