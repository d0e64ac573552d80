"""Errors named by errno, as the kernel returns them (``-EINVAL`` ...).

Kernel functions that return ``-errno`` in C raise the matching :class:`KernelError`
subclass here; ``err.errno`` is the positive errno value and ``str(err)`` starts
with ``-ENAME``. Where the C convention itself is under test (``dma_map_single``
returning ``DMA_MAPPING_ERROR``) the C convention is kept instead.
"""

from __future__ import annotations

from typing import ClassVar


class KernelError(Exception):
    """Base of all errno errors; ``errno`` is positive, as in ``-errno`` returns."""

    errno: ClassVar[int] = 0

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    @property
    def name(self) -> str:
        return type(self).__name__

    def __str__(self) -> str:
        return f"-{self.name}: {self.message}" if self.message else f"-{self.name}"


def _errno(name: str, number: int, doc: str) -> type[KernelError]:
    return type(name, (KernelError,), {"errno": number, "__doc__": doc})


EPERM = _errno("EPERM", 1, "Operation not permitted")
ENOENT = _errno("ENOENT", 2, "No such file or directory")
EIO = _errno("EIO", 5, "I/O error")
ENXIO = _errno("ENXIO", 6, "No such device or address")
E2BIG = _errno("E2BIG", 7, "Argument list too long")
EBADF = _errno("EBADF", 9, "Bad file number")
EAGAIN = _errno("EAGAIN", 11, "Try again")
ENOMEM = _errno("ENOMEM", 12, "Out of memory")
EACCES = _errno("EACCES", 13, "Permission denied")
EFAULT = _errno("EFAULT", 14, "Bad address")
EBUSY = _errno("EBUSY", 16, "Device or resource busy")
EEXIST = _errno("EEXIST", 17, "File exists")
ENODEV = _errno("ENODEV", 19, "No such device")
EINVAL = _errno("EINVAL", 22, "Invalid argument")
ENOTTY = _errno("ENOTTY", 25, "Not a typewriter")
ENOSPC = _errno("ENOSPC", 28, "No space left on device")
ERANGE = _errno("ERANGE", 34, "Math result not representable")
EOVERFLOW = _errno("EOVERFLOW", 75, "Value too large for defined data type")
EMSGSIZE = _errno("EMSGSIZE", 90, "Message too long")
EOPNOTSUPP = _errno("EOPNOTSUPP", 95, "Operation not supported")
EADDRINUSE = _errno("EADDRINUSE", 98, "Address already in use")
ETIMEDOUT = _errno("ETIMEDOUT", 110, "Connection timed out")
EINPROGRESS = _errno("EINPROGRESS", 115, "Operation now in progress")
ENOTSUPP = _errno("ENOTSUPP", 524, "Operation is not supported (kernel-internal)")

BY_ERRNO: dict[int, type[KernelError]] = {
    cls.errno: cls
    for cls in (
        EPERM,
        ENOENT,
        EIO,
        ENXIO,
        E2BIG,
        EBADF,
        EAGAIN,
        ENOMEM,
        EACCES,
        EFAULT,
        EBUSY,
        EEXIST,
        ENODEV,
        EINVAL,
        ENOTTY,
        ENOSPC,
        ERANGE,
        EOVERFLOW,
        EMSGSIZE,
        EOPNOTSUPP,
        EADDRINUSE,
        ETIMEDOUT,
        EINPROGRESS,
        ENOTSUPP,
    )
}


def errno_name(err: int) -> str:
    """``-22`` or ``22`` -> ``"EINVAL"``."""
    cls = BY_ERRNO.get(abs(err))
    return cls.__name__ if cls else f"E{abs(err)}"
