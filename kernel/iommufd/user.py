"""User memory as iommufd reaches it: ``copy_from_user``, ``copy_to_user`` and
``clear_user`` (include/linux/uaccess.h) raising EFAULT, as the ioctl handlers use
them (``if (copy_to_user(...)) return -EFAULT``).

A user pointer is an address of the calling task's address space
(:func:`kernel.sched.get_current`): the copies go through :mod:`kernel.uaccess`,
which faults pages in as the CPU would; an address with no VMA, or one the VMA
does not allow (a write to read-only memory), is EFAULT, and so is any copy made
with no process current. Pinning user pages for DMA is :mod:`kernel.gup`
(``pin_user_pages_fast``), called by :mod:`kernel.iommufd.pages`.

The vendor-data helpers of include/linux/iommu.h (``struct iommu_user_data``,
``iommu_copy_struct_from_user`` and its array form) live here too: they are how a
driver reads a user struct that iommufd passes it by pointer.
"""

from __future__ import annotations

from typing import TypeVar

from attrs import define

from kernel import uaccess
from kernel.errno import E2BIG, EFAULT, EINVAL
from kernel.uapi.iommufd import UapiStruct

S = TypeVar("S", bound=UapiStruct)


def copy_from_user(uptr: int, size: int) -> bytes:
    """``copy_from_user``: the bytes, or EFAULT when any of them is not readable."""
    if not size:
        return b""
    data, left = uaccess.copy_from_user(uptr, size)
    if left:
        raise EFAULT(f"copy_from_user({uptr:#x}, {size}): {left} bytes not readable")
    return data


def copy_to_user(uptr: int, data: bytes | bytearray) -> None:
    """``copy_to_user``: EFAULT when any byte is not writable."""
    if not data:
        return
    left = uaccess.copy_to_user(uptr, data)
    if left:
        raise EFAULT(f"copy_to_user({uptr:#x}, {len(data)}): {left} bytes not writable")


def clear_user(uptr: int, size: int) -> None:
    """``clear_user``."""
    copy_to_user(uptr, bytes(size))


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
