"""User memory access (include/linux/uaccess.h, arch/x86/lib/usercopy_64.c):
``copy_to_user``/``copy_from_user``/``put_user``/``get_user`` against the current
task's VMAs and page tables.

A missing page is faulted in as the CPU's page-fault handler would
(``handle_mm_fault`` with FAULT_FLAG_USER); an address outside any VMA or an
access the VMA refuses stops the copy there. As in C, the copies return how many
bytes were *not* copied.

Differences from Linux: no SMAP/STAC, no exception tables — the copy walks the
page tables in software.
"""

from __future__ import annotations

from kernel.memory import access_remote_vm
from kernel.sched import get_current


def copy_to_user(to: int, data: bytes | bytearray | memoryview) -> int:
    """``copy_to_user``: bytes left uncopied (0 on success)."""
    task = get_current()
    if task is None or task.mm is None:
        return len(data)
    buf = bytearray(data)
    return len(buf) - access_remote_vm(task.mm, to, buf, True)


def copy_from_user(frm: int, n: int) -> tuple[bytes, int]:
    """``copy_from_user``: the bytes read and how many were left uncopied (the
    unread tail is zero-filled, as C's ``copy_from_user`` does)."""
    task = get_current()
    buf = bytearray(n)
    if task is None or task.mm is None:
        return bytes(buf), n
    done = access_remote_vm(task.mm, frm, buf, False)
    return bytes(buf), n - done


def put_user(value: int, addr: int, size: int = 8) -> int:
    """``put_user``: 0 or -EFAULT (-14)."""
    return 0 if copy_to_user(addr, value.to_bytes(size, "little")) == 0 else -14


def get_user(addr: int, size: int = 8) -> tuple[int, int]:
    """``get_user``: (value, 0) or (0, -EFAULT)."""
    data, left = copy_from_user(addr, size)
    return (0, -14) if left else (int.from_bytes(data, "little"), 0)
