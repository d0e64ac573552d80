"""The ``kernel-sva`` PASID API generation: the 5.15 SVA bind API (drivers/iommu/iommu.c
and drivers/iommu/iommu-sva-lib.c of Linux 5.15), kept to show what "Enable PASID for
DMA API users" replaced.

This generation follows 5.15 on purpose, not the 6.12 baseline: a driver binds an
address space with ``iommu_sva_bind_device(dev, mm, drvdata)``, where ``drvdata``
carries the vendor flags (``SVM_FLAG_SUPERVISOR_MODE``) and ``mm`` is None for the
kernel's own address space. The core checks the device and its group and hands the
rest to the IOMMU driver's ``sva_bind`` op; there is no SVA domain and nothing is
recorded in ``group.pasid_array`` (domains for SVA came with v6.2). The PASID is
the mm's (``iommu_sva_alloc_pasid``), taken from the same system-wide PASID space
upstream's ``iommu_alloc_global_pasid`` uses and reference counted per bond; 5.15's
``iommu_sva_free_pasid`` drops it on the last unbind.

For the kernel's address space no mmu notifier exists: ``vmalloc``/``vfree``/
``set_memory_*`` flush only the CPU's TLB (kernel/init_mm.py), so an IOMMU that
cached a translation of ``init_mm`` keeps using it. That is the flaw the series'
cover letter names ("lack of IOTLB synchronization upon kernel page table
updates"), and the reason this generation exists here.

Differences from 5.15: the ``IOMMU_DEV_FEAT_SVA`` feature dance before binding is
not modelled (the IOMMU driver enables PASID at probe, as 6.12 does); the PASID
comes from the global IDA rather than an ``ioasid_set``.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from attrs import define

from kernel.bitfield import BIT
from kernel.device import Device, dev_name
from kernel.errno import EINVAL, ENODEV, EOVERFLOW
from kernel.idr import ida_alloc_range, ida_free
from kernel.iommu.iommu import dev_iommu_ops, iommu_state
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID, has_optional_op

SVM_FLAG_SUPERVISOR_MODE = BIT(0)
"""``SVM_FLAG_SUPERVISOR_MODE`` (include/linux/intel-svm.h until v6.2): bind the
kernel's address space; requests must carry the privileged (supervisor) bit."""


class SvaMm(Protocol):
    """What 5.15 SVA keeps in ``struct mm_struct``: ``mm->pasid`` and the reference
    count of its ``ioasid`` (``init_mm`` has them too: supervisor binds keep their
    PASID there)."""

    pasid: int
    pasid_refs: int


@define(eq=False)
class IommuSva515:
    """The 5.15 ``struct iommu_sva``: the handle a bind returns; the vendor keeps
    its own per-device state in ``priv`` (VT-d: ``struct intel_svm_dev``)."""

    dev: Device
    mm: SvaMm
    priv: Any = None


class SupportsSvaBind(Protocol):
    """The 5.15 ``iommu_ops`` SVA members."""

    def sva_bind(self, dev: Device, mm: Any, drvdata: int) -> IommuSva515: ...

    def sva_unbind(self, handle: IommuSva515) -> None: ...

    def sva_get_pasid(self, handle: IommuSva515) -> int: ...


def iommu_sva_alloc_pasid(mm: SvaMm, pasid_min: int, pasid_max: int) -> int:
    """5.15 ``iommu_sva_alloc_pasid(mm, min, max)``: the mm keeps one PASID; a second
    bind takes another reference, or EOVERFLOW when the mm's PASID is outside the
    caller's range; EINVAL for an empty range; ENOSPC when none is left."""
    if pasid_min == 0 or pasid_max < pasid_min:
        raise EINVAL(f"PASID range [{pasid_min}, {pasid_max}]")
    if mm.pasid != IOMMU_PASID_INVALID:
        if not pasid_min <= mm.pasid <= pasid_max:
            raise EOVERFLOW(f"mm PASID {mm.pasid} outside [{pasid_min}, {pasid_max}]")
        mm.pasid_refs += 1
        return mm.pasid
    mm.pasid = ida_alloc_range(iommu_state().global_pasid_ida, pasid_min, pasid_max)
    mm.pasid_refs = 1
    return mm.pasid


def iommu_sva_free_pasid(mm: SvaMm) -> None:
    """5.15 ``iommu_sva_free_pasid``: ``ioasid_put``; the last reference frees it."""
    if mm.pasid == IOMMU_PASID_INVALID:
        return
    mm.pasid_refs -= 1
    if mm.pasid_refs == 0:
        ida_free(iommu_state().global_pasid_ida, mm.pasid)
        mm.pasid = IOMMU_PASID_INVALID


def _sva_ops(dev: Device) -> SupportsSvaBind:
    ops = dev_iommu_ops(dev)
    if not has_optional_op(ops, "sva_bind"):
        raise ENODEV(f"{dev_name(dev)}: the IOMMU driver has no sva_bind")
    return cast(SupportsSvaBind, ops)


def iommu_sva_bind_device(dev: Device, mm: Any, drvdata: int) -> IommuSva515:
    """5.15 ``iommu_sva_bind_device(dev, mm, drvdata)``: ENODEV without an IOMMU,
    an ``sva_bind`` op or a group; EINVAL when the group has more than one device
    (SVA did not support shared groups); then the driver's ``sva_bind`` under the
    group mutex."""
    if dev.iommu is None:
        raise ENODEV(f"{dev_name(dev)}: not behind an IOMMU")
    ops = _sva_ops(dev)
    group = dev.iommu_group
    if group is None:
        raise ENODEV(f"{dev_name(dev)}: no iommu group")
    with group.mutex:
        if len(group.devices) != 1:
            raise EINVAL(f"{dev_name(dev)}: SVA needs a group of one device")
        return ops.sva_bind(dev, mm, drvdata)


def iommu_sva_unbind_device(handle: IommuSva515) -> None:
    """5.15 ``iommu_sva_unbind_device``."""
    dev = handle.dev
    group = dev.iommu_group
    assert group is not None
    with group.mutex:
        _sva_ops(dev).sva_unbind(handle)


def iommu_sva_get_pasid(handle: IommuSva515) -> int:
    """5.15 ``iommu_sva_get_pasid``: IOMMU_PASID_INVALID when the driver has none."""
    return _sva_ops(handle.dev).sva_get_pasid(handle)
