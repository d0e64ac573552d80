"""User memory as iommufd reaches it: ``copy_from_user``, ``copy_to_user``,
``clear_user`` and ``pin_user_pages_fast`` (include/linux/uaccess.h, mm/gup.c).

Departure, until processes are modelled: a "user pointer" is an address of the
kernel's direct map (memory a test or the docs' VMM got from ``alloc_pages_exact``),
so pinning resolves it with ``virt_to_phys`` and keeps no page reference. An address
outside the direct map is a bad user pointer: ``EFAULT``, as for an unmapped user
address. Everything iommufd does with user memory goes through this module, so a
process model replaces only these functions.

The vendor-data helpers of include/linux/iommu.h (``struct iommu_user_data``,
``iommu_copy_struct_from_user`` and its array form) live here too: they are how a
driver reads a user struct that iommufd passes it by pointer.
"""

from __future__ import annotations

from typing import TypeVar

from attrs import define

from kernel.context import current
from kernel.errno import E2BIG, EFAULT, EINVAL, ENOMEM
from kernel.fault_inject import should_fail
from kernel.mm import PAGE_OFFSET, PAGE_SIZE, memory_read, memory_write, virt_to_phys
from kernel.uapi.iommufd import UapiStruct

S = TypeVar("S", bound=UapiStruct)


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


# --------------------------------------------------------------------------- vendor data


@define(frozen=True)
class IommuUserData:
    """``struct iommu_user_data`` (include/linux/iommu.h): a vendor struct of type
    ``type`` in user memory, as IOMMU_HWPT_ALLOC hands it to the driver."""

    type: int
    uptr: int
    len: int


@define
class IommuUserDataArray:
    """``struct iommu_user_data_array``: ``entry_num`` entries of ``entry_len`` bytes;
    the driver sets ``entry_num`` to the number it handled."""

    type: int
    uptr: int
    entry_len: int
    entry_num: int


def copy_struct_from_user(st: type[S], uptr: int, usize: int) -> S:
    """``copy_struct_from_user`` into a ``st``: a shorter user struct is zero-extended,
    a longer one must have only zero bytes past ``st`` (E2BIG otherwise); EFAULT for
    a bad pointer."""
    ksize = st.SIZE
    if usize > ksize and any(copy_from_user(uptr + ksize, usize - ksize)):
        raise E2BIG(f"{st.__name__}: non-zero bytes past its {ksize} bytes")
    data = copy_from_user(uptr, min(ksize, usize))
    return st.from_bytes(data + bytes(ksize - len(data)))


def iommu_copy_struct_from_user(st: type[S], user_data: IommuUserData, data_type: int) -> S:
    """``iommu_copy_struct_from_user`` (its ``min_len`` is the whole struct, as
    every caller passes the last member, ``__reserved``): EINVAL for another type
    or a shorter length."""
    if user_data.type != data_type:
        raise EINVAL(f"user data type {user_data.type}, expected {data_type}")
    if user_data.len < st.SIZE:
        raise EINVAL(f"user data of {user_data.len} bytes < {st.SIZE}")
    return copy_struct_from_user(st, user_data.uptr, user_data.len)


def iommu_copy_struct_from_user_array(
    st: type[S], array: IommuUserDataArray, data_type: int, index: int
) -> S:
    """``iommu_copy_struct_from_user_array``: entry ``index`` of ``array``."""
    if index >= array.entry_num:
        raise EINVAL(f"entry {index} of {array.entry_num}")
    entry = IommuUserData(array.type, array.uptr + array.entry_len * index, array.entry_len)
    return iommu_copy_struct_from_user(st, entry, data_type)
