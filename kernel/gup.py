"""Pinning user pages (mm/gup.c): ``pin_user_pages_fast``, ``pin_user_pages_remote``
and ``unpin_user_pages``.

:func:`pin_user_pages_fast` pins pages of the current task's address space for
DMA: each page's reference count grows by ``GUP_PIN_COUNTING_BIAS``
(:mod:`kernel.page_ref`), so the page outlives its mapping (``munmap`` or the
process's exit drops only the mapping's reference) until
:func:`unpin_user_pages`. The VMA must allow the access (``check_vma_flags``:
FOLL_WRITE needs VM_WRITE, a read VM_READ; VM_IO/VM_PFNMAP device memory is
refused): EFAULT otherwise, as for an address with no VMA. A page that is not
present, or present read-only for a FOLL_WRITE pin, is faulted in through
:func:`kernel.memory.handle_mm_fault` (``faultin_page``); VM_FAULT_OOM becomes
ENOMEM, the other errors EFAULT (``vm_fault_to_errno``).

As in C the return is the number of pages pinned, possibly fewer than asked when
the range runs into a hole after its first page, or a negative errno when not
even the first page could be pinned.

Differences from Linux: the lockless fast walk and the slow path are one loop (a
present range of PTEs is taken from one read of its table, a hole or a
write-protected PTE goes to the fault handler); FOLL_LONGTERM has nothing to
migrate (no ZONE_MOVABLE or CMA); no FOLL_FORCE, no huge-page folios.
"""

from __future__ import annotations

import struct

from kernel.errno import EFAULT, EINVAL, ENOMEM
from kernel.memory import FAULT_FLAG_WRITE, VM_FAULT_ERROR, VM_FAULT_OOM, handle_mm_fault
from kernel.mm import PAGE_SHIFT, PAGE_SIZE, Page, current_mm
from kernel.mm_types import MmStruct, VmAreaStruct
from kernel.mmap import VM_IO, VM_PFNMAP, VM_READ, VM_WRITE, vma_lookup
from kernel.page_ref import GUP_PIN_COUNTING_BIAS, folios_put_refs, pages_ref_add, put_page_refs
from kernel.pgtable import _PAGE_PRESENT, _PAGE_PSE, _PAGE_RW, _PAGE_USER, PTE_PFN_MASK
from kernel.sched import get_current

FOLL_WRITE = 1 << 0
FOLL_GET = 1 << 1
FOLL_FORCE = 1 << 3
FOLL_NOFAULT = 1 << 5
FOLL_LONGTERM = 1 << 8
FOLL_PIN = 1 << 17
"""mm/internal.h: set by the pin_user_pages*() entry points, never by callers."""

_ENTRIES = 512
_U64 = struct.Struct("<Q")


def check_vma_flags(vma: VmAreaStruct, gup_flags: int) -> int:
    """``check_vma_flags``: 0 or the errno a pin of ``vma`` gets."""
    flags = vma.vm_flags
    if flags & (VM_IO | VM_PFNMAP):
        return EFAULT.errno
    if gup_flags & FOLL_WRITE:
        if not flags & VM_WRITE:
            return EFAULT.errno
    elif not flags & VM_READ:
        return EFAULT.errno
    return 0


def _present_run(mm: MmStruct, addr: int, nr: int, write: bool) -> list[Page]:
    """The pages of the present user PTEs from ``addr`` on (at most ``nr``,
    within one last-level table), stopping at the first missing one or, for a
    write, the first read-only one (``gup_fast_pte_range``)."""
    mem = current_mm().mem
    pgd = mm.pgd
    table = pgd.root_phys
    for level in range(pgd.levels - 1, 0, -1):
        shift = PAGE_SHIFT + 9 * level
        ent = mem.read_u64(table + ((addr >> shift) & 0x1FF) * 8)
        if not ent & _PAGE_PRESENT or not ent & _PAGE_USER:
            return []
        if ent & _PAGE_PSE:  # large leaves map device memory only (VM_PFNMAP)
            return []
        table = ent & PTE_PFN_MASK
    first = (addr >> PAGE_SHIFT) & (_ENTRIES - 1)
    count = min(nr, _ENTRIES - first)
    need = _PAGE_PRESENT | _PAGE_USER | (_PAGE_RW if write else 0)
    out: list[Page] = []
    for (ent,) in _U64.iter_unpack(mem.read(table + first * 8, count * 8)):
        if ent & need != need:
            break
        out.append(Page((ent & PTE_PFN_MASK) >> PAGE_SHIFT))
    return out


def __get_user_pages(mm: MmStruct, start: int, nr_pages: int, gup_flags: int) -> list[Page] | int:
    """``__get_user_pages`` with FOLL_PIN: the pinned pages, or a negative errno
    when the first page failed."""
    write = bool(gup_flags & FOLL_WRITE)
    pfns: list[Page] = []
    faulted_at = -1
    while len(pfns) < nr_pages:
        addr = start + len(pfns) * PAGE_SIZE
        vma = vma_lookup(mm, addr)
        err = EFAULT.errno if vma is None else check_vma_flags(vma, gup_flags)
        if err:
            break
        assert vma is not None
        room = min(nr_pages - len(pfns), (vma.vm_end - addr) >> PAGE_SHIFT)
        run = _present_run(mm, addr, room, write)
        if run:
            pages_ref_add(run, GUP_PIN_COUNTING_BIAS)
            pfns.extend(run)
            continue
        if faulted_at == addr or gup_flags & FOLL_NOFAULT:
            err = EFAULT.errno
            break
        faulted_at = addr
        ret = handle_mm_fault(vma, addr, FAULT_FLAG_WRITE if write else 0)
        if ret & VM_FAULT_ERROR:
            err = ENOMEM.errno if ret & VM_FAULT_OOM else EFAULT.errno
            break
    if not pfns and nr_pages:
        return -err
    return pfns


def pin_user_pages_fast(start: int, nr_pages: int, gup_flags: int, pages: list[Page]) -> int:
    """``pin_user_pages_fast``: pin ``nr_pages`` pages of the current task from the
    page-aligned ``start``, appending them to ``pages``; returns how many were
    pinned or a negative errno (EINVAL for a caller passing FOLL_PIN/FOLL_GET or an
    unaligned start, EFAULT without a process)."""
    if gup_flags & (FOLL_PIN | FOLL_GET) or start & (PAGE_SIZE - 1):
        return -EINVAL.errno
    task = get_current()
    if task is None or task.mm is None:
        return -EFAULT.errno
    got = __get_user_pages(task.mm, start, nr_pages, gup_flags | FOLL_PIN)
    if isinstance(got, int):
        return got
    pages.extend(got)
    return len(got)


def pin_user_pages_remote(
    mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: list[Page]
) -> int:
    """``pin_user_pages_remote``: as :func:`pin_user_pages_fast` on the address space
    ``mm`` of another task (the caller holds a user reference on it)."""
    if gup_flags & (FOLL_PIN | FOLL_GET) or start & (PAGE_SIZE - 1):
        return -EINVAL.errno
    got = __get_user_pages(mm, start, nr_pages, gup_flags | FOLL_PIN)
    if isinstance(got, int):
        return got
    pages.extend(got)
    return len(got)


def unpin_user_page(page: Page) -> None:
    """``unpin_user_page``: the page is freed if that was its last reference."""
    put_page_refs(page, GUP_PIN_COUNTING_BIAS)


def unpin_user_pages(pages: list[Page]) -> None:
    """``unpin_user_pages``."""
    folios_put_refs(pages, GUP_PIN_COUNTING_BIAS)
