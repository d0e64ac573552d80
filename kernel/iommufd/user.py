"""User memory as iommufd reaches it: ``copy_from_user``, ``copy_to_user``,
``clear_user`` and ``pin_user_pages_fast`` (include/linux/uaccess.h, mm/gup.c).

Departure, until processes are modelled: a "user pointer" is an address of the
kernel's direct map (memory a test or the docs' VMM got from ``alloc_pages_exact``),
so pinning resolves it with ``virt_to_phys`` and keeps no page reference. An address
outside the direct map is a bad user pointer: ``EFAULT``, as for an unmapped user
address. Everything iommufd does with user memory goes through this module, so a
process model replaces only these functions.
"""

from __future__ import annotations

from kernel.context import current
from kernel.errno import EFAULT, ENOMEM
from kernel.fault_inject import should_fail
from kernel.mm import PAGE_OFFSET, PAGE_SIZE, memory_read, memory_write, virt_to_phys


def access_ok(uptr: int, size: int) -> bool:
    """Whether ``[uptr, uptr + size)`` is user memory the kernel may touch: inside
    one RAM range of the direct map (checked by its ends, not per page)."""
    if size == 0:
        return True
    first = uptr - PAGE_OFFSET
    last = first + size - 1
    mm = current.kernel.mm
    if first < 0 or last >= mm.mem.size:
        return False
    ram = mm.ram
    return len(ram) == 1 or any(b <= first and last < b + n for b, n in ram)


def copy_from_user(uptr: int, size: int) -> bytes:
    """``copy_from_user``: the bytes, or EFAULT for a bad pointer."""
    if not access_ok(uptr, size):
        raise EFAULT(f"copy_from_user({uptr:#x}, {size})")
    return memory_read(uptr, size) if size else b""


def copy_to_user(uptr: int, data: bytes) -> None:
    """``copy_to_user``: EFAULT for a bad pointer."""
    if not access_ok(uptr, len(data)):
        raise EFAULT(f"copy_to_user({uptr:#x}, {len(data)})")
    if data:
        memory_write(uptr, data)


def clear_user(uptr: int, size: int) -> None:
    """``clear_user``."""
    copy_to_user(uptr, bytes(size))


def pin_user_pages_fast(uptr: int, npages: int, writable: bool) -> list[tuple[int, int]]:
    """``pin_user_pages_fast`` from the page at ``uptr`` (page aligned): the pages as
    physically contiguous runs ``(phys, npages)`` (C returns a page array; runs keep a
    2 MiB pin one entry). EFAULT for a bad range, ENOMEM when fault injection fails
    the pin (site ``pin_user_pages``)."""
    if should_fail("pin_user_pages"):
        raise ENOMEM("pin_user_pages_fast (injected)")
    if not access_ok(uptr, npages * PAGE_SIZE):
        raise EFAULT(f"pin_user_pages_fast({uptr:#x}, {npages})")
    return [(virt_to_phys(uptr), npages)]


def unpin_user_pages(runs: list[tuple[int, int]]) -> None:
    """``unpin_user_pages``: nothing to drop in the stand-in (no page references)."""
    del runs
