"""Page faults and PFN mappings (mm/memory.c, mm/gup.c).

:func:`handle_mm_fault` resolves a fault at ``address`` in ``vma``: a missing
anonymous page is allocated zeroed and mapped with the VMA's attributes
(``do_anonymous_page``); a write to a present read-only PTE of a writable VMA
makes it writable (``do_wp_page`` for an exclusive anonymous page); a present
PTE is a spurious fault. The result is a ``vm_fault_t``: 0 or VM_FAULT_* bits.
:func:`remap_pfn_range` maps device memory (a DSA portal) into a VMA.

Differences from Linux: the access check the arch fault handler (or
``iommu_sva_handle_mm``) makes is repeated here, so a write to a non-writable VMA
returns VM_FAULT_SIGSEGV instead of relying on every caller; no zero page, no
THP, no swap, no page cache; VM_FAULT_RETRY never happens (no ``mmap_lock``).
"""

from __future__ import annotations

from kernel.errno import EINVAL, KernelError
from kernel.mm import (
    __GFP_ZERO,
    GFP_KERNEL,
    PAGE_MASK,
    PAGE_SIZE,
    __free_pages,
    alloc_pages,
    current_mm,
)
from kernel.mm_types import MmStruct, VmAreaStruct
from kernel.mmap import (
    VM_ACCESS_FLAGS,
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_EXEC,
    VM_IO,
    VM_PFNMAP,
    VM_WRITE,
    vma_lookup,
)
from kernel.pgtable import _PAGE_DIRTY, _PAGE_RW, PAGE_4K, pte_pfn_phys

FAULT_FLAG_WRITE = 1 << 0
FAULT_FLAG_MKWRITE = 1 << 1
FAULT_FLAG_ALLOW_RETRY = 1 << 2
FAULT_FLAG_RETRY_NOWAIT = 1 << 3
FAULT_FLAG_KILLABLE = 1 << 4
FAULT_FLAG_TRIED = 1 << 5
FAULT_FLAG_USER = 1 << 6
FAULT_FLAG_REMOTE = 1 << 7
FAULT_FLAG_INSTRUCTION = 1 << 8

VM_FAULT_OOM = 0x000001
VM_FAULT_SIGBUS = 0x000002
VM_FAULT_MAJOR = 0x000004
VM_FAULT_HWPOISON = 0x000010
VM_FAULT_SIGSEGV = 0x000040
VM_FAULT_NOPAGE = 0x000100
VM_FAULT_RETRY = 0x000400
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV | VM_FAULT_HWPOISON


def handle_mm_fault(vma: VmAreaStruct, address: int, flags: int) -> int:
    """``handle_mm_fault``: make ``address`` accessible as ``flags`` ask; returns
    0 or VM_FAULT_* (SIGSEGV for an access the VMA does not allow or an address
    outside it, SIGBUS for a hole in a PFN mapping, OOM without memory)."""
    if not vma.vm_start <= address < vma.vm_end:
        return VM_FAULT_SIGSEGV
    write = bool(flags & FAULT_FLAG_WRITE)
    if write and not vma.vm_flags & VM_WRITE:
        return VM_FAULT_SIGSEGV
    if flags & FAULT_FLAG_INSTRUCTION and not vma.vm_flags & VM_EXEC:
        return VM_FAULT_SIGSEGV
    if not vma.vm_flags & VM_ACCESS_FLAGS:
        return VM_FAULT_SIGSEGV
    pt = vma.vm_mm.pgd
    addr = address & PAGE_MASK
    hit = pt.walk(addr)
    if hit is not None:
        entry, size = hit
        if write and not entry & _PAGE_RW:
            start = addr & ~(size - 1)
            pt.protect(start, size, _PAGE_RW | _PAGE_DIRTY, 0)
        return 0
    if vma.vm_flags & VM_PFNMAP:
        return VM_FAULT_SIGBUS
    page = alloc_pages(GFP_KERNEL | __GFP_ZERO, 0)
    if page is None:
        return VM_FAULT_OOM
    try:
        pt.map(addr, page.phys, PAGE_4K, vma.vm_page_prot)
    except KernelError:
        __free_pages(page, 0)
        return VM_FAULT_OOM
    return 0


def populate_vma_page_range(vma: VmAreaStruct, start: int, end: int) -> int:
    """``populate_vma_page_range`` (MAP_POPULATE, ``mm_populate``): fault every page
    of ``[start, end)`` in, for write when the VMA is writable; returns the first
    fault's VM_FAULT_* bits or 0."""
    flags = FAULT_FLAG_WRITE if vma.vm_flags & VM_WRITE else 0
    for addr in range(start, end, PAGE_SIZE):
        ret = handle_mm_fault(vma, addr, flags)
        if ret & VM_FAULT_ERROR:
            return ret
    return 0


def remap_pfn_range(vma: VmAreaStruct, addr: int, pfn: int, size: int, prot: int) -> None:
    """``remap_pfn_range`` (``io_remap_pfn_range`` on x86): map ``size`` bytes of
    physical frames from ``pfn`` at ``addr``; the VMA becomes VM_IO|VM_PFNMAP.
    EINVAL when the range leaves the VMA; ENOMEM for a table page."""
    if addr < vma.vm_start or addr + size > vma.vm_end or size <= 0:
        raise EINVAL(f"remap_pfn_range {addr:#x}+{size:#x} outside the VMA")
    vma.vm_flags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP
    vma.vm_mm.pgd.map(addr, pfn << 12, (size + PAGE_SIZE - 1) & PAGE_MASK, prot)


def access_remote_vm(mm: MmStruct, addr: int, buf: bytearray, write: bool) -> int:
    """``access_remote_vm``: copy between ``buf`` and ``mm``'s memory at ``addr``,
    faulting pages in as the CPU would (``FAULT_FLAG_REMOTE``); returns the bytes
    copied, fewer when an address has no VMA or refuses the access. A write from
    ``buf`` when ``write``, a read into it otherwise."""
    mem = current_mm().mem
    done = 0
    size = len(buf)
    flags = FAULT_FLAG_REMOTE | (FAULT_FLAG_WRITE if write else 0)
    while done < size:
        va = addr + done
        vma = vma_lookup(mm, va)
        if vma is None or handle_mm_fault(vma, va, flags) & VM_FAULT_ERROR:
            break
        hit = mm.pgd.walk(va)
        if hit is None:  # pragma: no cover - the fault just mapped it
            break
        entry, pgsize = hit
        pa = pte_pfn_phys(entry, pgsize, va)
        n = min(size - done, pgsize - (va & (pgsize - 1)))
        if write:
            mem.write(pa, bytes(buf[done : done + n]))
        else:
            buf[done : done + n] = mem.read(pa, n)
        done += n
    return done
