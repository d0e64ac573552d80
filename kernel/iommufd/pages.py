"""drivers/iommu/iommufd/pages.c (Linux 6.12): ``struct iopt_pages``, the user memory
behind one or more areas, its pinning and its accounting.

An :class:`IoptPages` covers ``npages`` pages from a page-aligned user address. It
is pinned while at least one area that uses it is filled into a domain
(:func:`iopt_pages_pin` / :func:`iopt_pages_unpin` count those areas) and the pinned
pages are charged to the file's user (``locked_vm`` against ``RLIMIT_MEMLOCK``,
ENOMEM past it, unless the task has CAP_IPC_LOCK), as ``iopt_pages_update_pinned``
does in the USER and MM accounting modes.

Departures: Linux pins the page ranges each area needs, keeps them in the first
domain (the storage domain) or an xarray, and charges each page once however many
areas use it; here a pages object is pinned as a whole when its first area is
filled and released with its last, with the same charge-once rule. Pinned pages are
kept as physically contiguous runs (``user.pin_user_pages_fast``).
"""

from __future__ import annotations

from attrs import define, field

from kernel.errno import ENOMEM
from kernel.fault_inject import should_fail
from kernel.iommufd import user
from kernel.iommufd.main import IOPT_PAGES_ACCOUNT_NONE, IommufdUser
from kernel.mm import PAGE_SIZE


@define(eq=False)
class IoptPages:
    """``struct iopt_pages``."""

    uptr: int
    """Page-aligned user address of the first page."""
    npages: int
    writable: bool
    account_mode: int
    source_user: IommufdUser = field(repr=False)
    users: int = 0
    """Areas that use these pages (the kref)."""
    pin_users: int = 0
    """Of those, the areas filled into at least one domain."""
    runs: list[tuple[int, int]] = field(factory=list)
    """Pinned ``(phys, npages)`` runs, in user order (empty when unpinned)."""
    last_npinned: int = 0


def iopt_alloc_pages(
    uptr: int, length: int, writable: bool, account_mode: int, u: IommufdUser
) -> tuple[IoptPages, int]:
    """``iopt_alloc_user_pages``: the pages for ``[uptr, uptr + length)`` and the
    byte offset of ``uptr`` in its first page."""
    if should_fail("kmalloc"):
        raise ENOMEM("iopt_pages (injected)")
    start = uptr & ~(PAGE_SIZE - 1)
    end = (uptr + length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    return IoptPages(start, (end - start) // PAGE_SIZE, writable, account_mode, u), uptr - start


def _account(pages: IoptPages, npages: int) -> None:
    """``iopt_pages_update_pinned`` / ``incr_user_locked_vm``."""
    if pages.account_mode == IOPT_PAGES_ACCOUNT_NONE:
        return
    u = pages.source_user
    new = u.locked_vm + npages
    if npages > 0 and not u.cap_ipc_lock and new > u.rlimit_memlock:
        raise ENOMEM(f"pinning {npages} pages exceeds RLIMIT_MEMLOCK ({u.rlimit_memlock} pages)")
    u.locked_vm = new


def iopt_pages_pin(pages: IoptPages) -> None:
    """One more filled area uses ``pages``: pin and charge them on the first."""
    if pages.pin_users == 0:
        _account(pages, pages.npages)
        try:
            pages.runs = user.pin_user_pages_fast(pages.uptr, pages.npages, pages.writable)
        except Exception:
            _account(pages, -pages.npages)
            raise
        pages.last_npinned = pages.npages
    pages.pin_users += 1


def iopt_pages_unpin(pages: IoptPages) -> None:
    """One filled area less: unpin and uncharge with the last."""
    pages.pin_users -= 1
    if pages.pin_users == 0:
        user.unpin_user_pages(pages.runs)
        pages.runs = []
        _account(pages, -pages.last_npinned)
        pages.last_npinned = 0


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
