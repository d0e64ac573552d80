"""drivers/iommu/iommufd/pages.c (Linux 6.12): ``struct iopt_pages``, the user memory
behind one or more areas, its pinning and its accounting.

An :class:`IoptPages` covers ``npages`` pages of the calling task's address space
from a page-aligned user address (``iopt_alloc_pages``: it keeps the mm, the task
and the task's user, and the accounting mode — none for a task with CAP_IPC_LOCK,
else the user's ``locked_vm``, or the mm's under IOMMU_OPTION_RLIMIT_MODE). The
pages are pinned with ``pin_user_pages_fast`` (``pin_user_pages_remote`` when
another context fills a domain) (:mod:`kernel.gup`: FOLL_PIN |
FOLL_LONGTERM, FOLL_WRITE for a writable map; missing pages are faulted in) while
at least one area that uses them is filled into a domain (:func:`iopt_pages_pin` /
:func:`iopt_pages_unpin` count those areas). As upstream, the pin comes first and
the charge after it (``pfn_reader_user_update_pinned``): the user's
``locked_vm`` against the task's RLIMIT_MEMLOCK (``incr_user_locked_vm``), or the
mm's (``__account_locked_vm``), ENOMEM past it with everything unpinned again;
``mm->pinned_vm`` counts the pages in every mode.

Fault injection, as ``iommufd_should_fail()``: before pinning (EFAULT, site
``pin_user_pages``) and before charging (ENOMEM, site ``update_pinned``).

Departures: Linux pins the page ranges each area needs, keeps them in the first
domain (the storage domain) or an xarray, and charges each page once however many
areas use it; here a pages object is pinned as a whole when its first area is
filled and released with its last, with the same charge-once rule. Pinned pages are
kept in user order and handed out as physically contiguous runs.
"""

from __future__ import annotations

from attrs import define, field

from kernel.bug import WARN_ON
from kernel.errno import BY_ERRNO, EFAULT, EINVAL, ENOMEM, KernelError
from kernel.fault_inject import should_fail
from kernel.fork import mmdrop, mmget_not_zero, mmgrab, mmput
from kernel.gup import (
    FOLL_LONGTERM,
    FOLL_WRITE,
    pin_user_pages_fast,
    pin_user_pages_remote,
    unpin_user_pages,
)
from kernel.iommufd.main import (
    IOPT_PAGES_ACCOUNT_MM,
    IOPT_PAGES_ACCOUNT_NONE,
    IOPT_PAGES_ACCOUNT_USER,
)
from kernel.mm import PAGE_SHIFT, PAGE_SIZE, Page
from kernel.mm_types import MmStruct
from kernel.sched import (
    CAP_IPC_LOCK,
    RLIMIT_MEMLOCK,
    TaskStruct,
    UserStruct,
    capable,
    get_current,
    task_rlimit,
)

SIZE_MAX = (1 << 64) - 1


@define(eq=False)
class IoptPages:
    """``struct iopt_pages``."""

    uptr: int
    """Page-aligned user address of the first page."""
    npages: int
    writable: bool
    account_mode: int
    source_mm: MmStruct = field(repr=False)
    source_task: TaskStruct = field(repr=False)
    source_user: UserStruct = field(repr=False)
    users: int = 0
    """Areas that use these pages (the kref)."""
    pin_users: int = 0
    """Of those, the areas filled into at least one domain."""
    pinned: list[Page] = field(factory=list, repr=False)
    """The pinned pages in user order (empty when unpinned)."""
    runs: list[tuple[int, int]] = field(factory=list)
    """The pinned pages as physically contiguous ``(phys, npages)`` runs."""
    npinned: int = 0
    last_npinned: int = 0
    """Pages charged (``pages->last_npinned``)."""


def iopt_alloc_pages(uptr: int, length: int, writable: bool) -> tuple[IoptPages, int]:
    """``iopt_alloc_pages``: the pages for ``[uptr, uptr + length)`` of the current
    task and the byte offset of ``uptr`` in its first page. EINVAL for a length of 0
    or one that would overflow, EFAULT when no process is calling."""
    if length == 0 or length > SIZE_MAX - PAGE_SIZE:
        raise EINVAL(f"user range of {length:#x} bytes")
    task = get_current()
    if task is None or task.mm is None:
        raise EFAULT("no user address space to map from")
    if should_fail("kmalloc"):
        raise ENOMEM("iopt_pages (injected)")
    start = uptr & ~(PAGE_SIZE - 1)
    end = (uptr + length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    mode = IOPT_PAGES_ACCOUNT_NONE if capable(CAP_IPC_LOCK) else IOPT_PAGES_ACCOUNT_USER
    mmgrab(task.mm)
    pages = IoptPages(start, (end - start) // PAGE_SIZE, writable, mode, task.mm, task, task.user)
    return pages, uptr - start


def iopt_release_pages(pages: IoptPages) -> None:
    """``iopt_release_pages``: the last user is gone; the mm is let go."""
    WARN_ON(pages.npinned != 0, "iopt_pages released while pinned")
    mmdrop(pages.source_mm)


def iopt_put_pages(pages: IoptPages) -> None:
    """One area less uses ``pages`` (``kref_put(&pages->kref, iopt_release_pages)``)."""
    pages.users -= 1
    if pages.users == 0:
        iopt_release_pages(pages)


def _lock_limit(pages: IoptPages) -> int:
    return task_rlimit(pages.source_task, RLIMIT_MEMLOCK) >> PAGE_SHIFT


def do_update_pinned(pages: IoptPages, npages: int, inc: bool) -> None:
    """``do_update_pinned``: charge or uncharge ``npages`` in the pages' accounting
    mode (ENOMEM past RLIMIT_MEMLOCK), then ``mm->pinned_vm``."""
    if pages.account_mode == IOPT_PAGES_ACCOUNT_USER:
        user = pages.source_user
        if inc:  # incr_user_locked_vm
            if user.locked_vm + npages > _lock_limit(pages):
                raise ENOMEM(f"pinning {npages} pages exceeds RLIMIT_MEMLOCK (user)")
            user.locked_vm += npages
        elif not WARN_ON(user.locked_vm < npages, "user locked_vm underflow"):
            user.locked_vm -= npages
    elif pages.account_mode == IOPT_PAGES_ACCOUNT_MM:
        mm = pages.source_mm
        if inc:  # __account_locked_vm
            if mm.locked_vm + npages > _lock_limit(pages):
                raise ENOMEM(f"pinning {npages} pages exceeds RLIMIT_MEMLOCK (mm)")
            mm.locked_vm += npages
        else:
            mm.locked_vm -= min(npages, mm.locked_vm)
    pages.last_npinned = pages.npinned
    pages.source_mm.pinned_vm += npages if inc else -npages


def _runs(pinned: list[Page]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    start = prev = -2
    for page in pinned:
        pfn = page.pfn
        if pfn != prev + 1:
            if start >= 0:
                runs.append((start << PAGE_SHIFT, prev - start + 1))
            start = pfn
        prev = pfn
    if start >= 0:
        runs.append((start << PAGE_SHIFT, prev - start + 1))
    return runs


def _pin(pages: IoptPages) -> list[Page]:
    """``pfn_reader_user_pin`` over the whole range: every page, or an errno with
    nothing left pinned. From the mm's own task ``pin_user_pages_fast``; from
    another context (an attach made by another process, a release)
    ``pin_user_pages_remote`` under ``mmget_not_zero`` (EFAULT once the address
    space is gone)."""
    mm = pages.source_mm
    task = get_current()
    remote = task is None or task.mm is not mm
    if remote and not mmget_not_zero(mm):
        raise EFAULT("the address space of the mapped memory is gone")
    try:
        if should_fail("pin_user_pages"):
            raise EFAULT("pin_user_pages_fast (injected)")
        flags = FOLL_LONGTERM | (FOLL_WRITE if pages.writable else 0)
        got: list[Page] = []
        while len(got) < pages.npages:
            uptr, left = pages.uptr + len(got) * PAGE_SIZE, pages.npages - len(got)
            if remote:
                rc = pin_user_pages_remote(mm, uptr, left, flags, got)
            else:
                rc = pin_user_pages_fast(uptr, left, flags, got)
            if rc <= 0:
                unpin_user_pages(got)
                err = BY_ERRNO.get(-rc, EFAULT) if rc else EFAULT
                raise err(f"pin_user_pages at {uptr:#x}")
    finally:
        if remote:
            mmput(mm)
    return got


def iopt_pages_pin(pages: IoptPages) -> None:
    """One more filled area uses ``pages``: pin and charge them on the first."""
    if pages.pin_users == 0:
        pinned = _pin(pages)
        pages.npinned = len(pinned)
        try:
            if should_fail("update_pinned"):
                raise ENOMEM("iopt_pages pin accounting (injected)")
            do_update_pinned(pages, pages.npinned - pages.last_npinned, True)
        except KernelError:
            unpin_user_pages(pinned)
            pages.npinned = 0
            raise
        pages.pinned = pinned
        pages.runs = _runs(pinned)
    pages.pin_users += 1


def iopt_pages_unpin(pages: IoptPages) -> None:
    """One filled area less: unpin and uncharge with the last."""
    pages.pin_users -= 1
    if pages.pin_users == 0:
        unpin_user_pages(pages.pinned)
        pages.pinned = []
        pages.runs = []
        pages.npinned = 0
        do_update_pinned(pages, pages.last_npinned, False)


def iopt_pages_phys_runs(pages: IoptPages, first: int, npages: int) -> list[tuple[int, int]]:
    """The pinned pages ``first .. first + npages - 1`` as ``(phys, npages)`` runs."""
    out: list[tuple[int, int]] = []
    at = 0
    for phys, n in pages.runs:
        lo, hi = max(first, at), min(first + npages, at + n)
        if lo < hi:
            out.append((phys + (lo - at) * PAGE_SIZE, hi - lo))
        at += n
    return out
