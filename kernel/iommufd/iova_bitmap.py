"""drivers/iommu/iommufd/iova_bitmap.c and the dirty-tracking part of
include/linux/iommu.h (Linux 6.12): the user's dirty bitmap and what a driver's
``read_and_clear_dirty`` records into it.

:class:`IovaBitmap` is one bit per ``page_size`` bytes of IOVA from ``iova``, in user
memory at ``data`` (bit ``n`` of byte ``n // 8``, little-endian 64-bit words as in
C). Bits are only ever set, never cleared: user space zeroes the bitmap. A driver
calls :func:`iommu_dirty_bitmap_record` for each dirty range it finds (and clears in
the page table); the range also goes into the IOTLB gather so that iommufd can flush
the cached translations whose dirty state was cleared.

A driver's dirty ops (``struct iommu_dirty_ops``, ``domain.dirty_ops``) are
:class:`IommuDirtyOps`.

Departure: Linux pins the user bitmap a window at a time and sets bits in place;
here the bits are gathered and OR-ed into user memory once per call.
"""

from __future__ import annotations

from typing import Protocol

from attrs import define, field

from kernel.iommu.iommu_h import IommuDomain, IommuIotlbGather, iommu_iotlb_gather_add_range
from kernel.iommufd import user

IOMMU_DIRTY_NO_CLEAR = 1 << 0
"""``read_and_clear_dirty`` flag: report without clearing."""


class IommuDirtyOps(Protocol):
    """``struct iommu_dirty_ops``."""

    def set_dirty_tracking(self, domain: IommuDomain, enabled: bool) -> None: ...
    def read_and_clear_dirty(
        self, domain: IommuDomain, iova: int, size: int, flags: int, dirty: IommuDirtyBitmap
    ) -> None: ...


@define(eq=False)
class IovaBitmap:
    """``struct iova_bitmap``."""

    iova: int
    length: int
    page_size: int
    data: int
    """User address of the bitmap."""
    dirty: set[int] = field(factory=set)
    """Indices of the bits set by this walk."""

    @property
    def nbits(self) -> int:
        return self.length // self.page_size


def iova_bitmap_set(bitmap: IovaBitmap, iova: int, length: int) -> None:
    """``iova_bitmap_set``: mark every page of ``[iova, iova + length)`` that falls
    inside the bitmap's range."""
    first = max(iova, bitmap.iova)
    last = min(iova + length, bitmap.iova + bitmap.length) - 1
    if first > last:
        return
    lo = (first - bitmap.iova) // bitmap.page_size
    hi = (last - bitmap.iova) // bitmap.page_size
    bitmap.dirty.update(range(lo, hi + 1))


def iova_bitmap_flush(bitmap: IovaBitmap) -> None:
    """OR the bits set by the walk into the user's bitmap (EFAULT for a bad one)."""
    nbytes = ((bitmap.nbits + 63) // 64) * 8
    if not bitmap.dirty:
        user.copy_from_user(bitmap.data, nbytes)  # the user's buffer must still be there
        return
    raw = bytearray(user.copy_from_user(bitmap.data, nbytes))
    for n in bitmap.dirty:
        raw[n // 8] |= 1 << (n % 8)
    user.copy_to_user(bitmap.data, bytes(raw))


@define(eq=False)
class IommuDirtyBitmap:
    """``struct iommu_dirty_bitmap``: where a driver records dirty ranges (the user
    bitmap, None when the caller only wants the bits cleared) and the gather the
    caller flushes."""

    bitmap: IovaBitmap | None
    gather: IommuIotlbGather


def iommu_dirty_bitmap_record(dirty: IommuDirtyBitmap, iova: int, length: int) -> None:
    """``iommu_dirty_bitmap_record``."""
    if dirty.bitmap is not None:
        iova_bitmap_set(dirty.bitmap, iova, length)
    iommu_iotlb_gather_add_range(dirty.gather, iova, length)
