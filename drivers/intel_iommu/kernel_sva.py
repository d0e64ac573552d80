"""Supervisor SVA as drivers/iommu/intel/svm.c of Linux 5.15 did it: the ``sva_bind``
ops of the ``kernel-sva`` generation (``intel_svm_bind``, ``intel_svm_bind_mm``,
``intel_svm_unbind``/``intel_svm_unbind_mm``, ``intel_svm_get_pasid``).

This module follows 5.15 on purpose, not the 6.12 baseline (whose svm.c is
drivers/intel_iommu/svm.py): 6.2 removed ``SVM_FLAG_SUPERVISOR_MODE`` (942fd5435dcc)
and 6.4 SRE support, because of the flaw this generation is kept to show.

``intel_svm_bind(dev, NULL, SVM_FLAG_SUPERVISOR_MODE)`` binds ``init_mm``: the device
gets the mm's PASID, and its PASID entry is first-stage with the root at
``init_mm.pgd``, SRE and WPE set, tagged ``FLPT_DEFAULT_DID``. A supervisor bind
registers no mmu notifier (5.15: ``if (!(flags & SVM_FLAG_SUPERVISOR_MODE))
mmu_notifier_register(...)``), so nothing ever flushes the IOTLB when the kernel's
page tables change; only unbind's PASID tear-down does.

Differences from 5.15: one ``intel_svm`` per PASID in a per-kernel dict (5.15's
``pasid_private`` xarray); no page requests (``intel_svm_drain_prq`` is the
tear-down's empty drain); no ``SVM_FLAG_GUEST_MODE``; a user ``mm`` is refused with
EINVAL here: process SVA is the 6.12 path (drivers/intel_iommu/svm.py).
"""

from __future__ import annotations

from typing import Any

from attrs import define, field

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.domain import dev_info_of
from drivers.intel_iommu.pasid import (
    PASID_FLAG_SUPERVISOR_MODE,
    intel_pasid_setup_first_level,
    intel_pasid_tear_down_entry,
)
from drivers.intel_iommu.structs import VTD_FLAG_SVM_CAPABLE
from kernel.context import KernelSlot
from kernel.device import Device, dev_name
from kernel.errno import EINVAL, ENOMEM, EOPNOTSUPP, KernelError
from kernel.init_mm import InitMm, init_mm
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.iommu.kernel_sva import (
    SVM_FLAG_SUPERVISOR_MODE,
    IommuSva515,
    iommu_sva_alloc_pasid,
    iommu_sva_free_pasid,
)
from kernel.mm import GFP_KERNEL, kfree, kzalloc
from kernel.pci import PciDev, pci_max_pasids
from kernel.printk import dev_err

PASID_MIN = 1


@define(eq=False)
class IntelSvmDev:
    """5.15 ``struct intel_svm_dev``: one device bound to a PASID."""

    dev: Device
    sid: int
    did: int
    users: int = 1
    kmem: int = 0
    sva: IommuSva515 | None = None


@define(eq=False)
class IntelSvm:
    """5.15 ``struct intel_svm``: one bound mm and its PASID."""

    mm: InitMm
    pasid: int
    flags: int
    devs: list[IntelSvmDev] = field(factory=list)
    kmem: int = 0


_SVMS: KernelSlot[dict[int, IntelSvm]] = KernelSlot("intel_svm_515", dict)


def _svms() -> dict[int, IntelSvm]:
    return _SVMS.get()


def intel_svm_bind_mm(dev: Device, flags: int, mm: InitMm) -> IommuSva515:
    """5.15 ``intel_svm_bind_mm``: reuse the device's bond to the mm's PASID (one more
    user), else a new ``intel_svm`` (first device on the PASID) and
    ``intel_svm_dev``, and the first-stage PASID entry at ``mm.pgd`` with
    ``PASID_FLAG_SUPERVISOR_MODE``; ENOMEM and the entry's errors unwind both."""
    info = dev_info_of(dev)
    iommu = info.iommu
    svms = _svms()
    svm = svms.get(mm.pasid)
    if svm is not None:
        for sdev in svm.devs:
            if sdev.dev is dev:
                sdev.users += 1
                assert sdev.sva is not None
                return sdev.sva
    new_svm = svm is None
    if svm is None:
        kmem = kzalloc(64, GFP_KERNEL)
        if kmem is None:
            raise ENOMEM("intel_svm")
        svm = IntelSvm(mm, mm.pasid, flags, kmem=kmem)
    skmem = kzalloc(96, GFP_KERNEL)
    if skmem is None:
        if new_svm:
            kfree(svm.kmem)
        raise ENOMEM("intel_svm_dev")
    sdev = IntelSvmDev(dev, info.sid, ir.FLPT_DEFAULT_DID, kmem=skmem)
    sflags = PASID_FLAG_SUPERVISOR_MODE if flags & SVM_FLAG_SUPERVISOR_MODE else 0
    try:
        intel_pasid_setup_first_level(iommu, dev, mm.pgd_phys, mm.pasid, sdev.did, sflags)
    except KernelError:
        kfree(skmem)
        if new_svm:
            kfree(svm.kmem)
        raise
    # Supervisor mode: no mmu_notifier_register -- init_mm changes are never flushed.
    sdev.sva = IommuSva515(dev, mm, priv=sdev)
    svm.devs.append(sdev)
    svms[mm.pasid] = svm
    return sdev.sva


def intel_svm_bind(dev: Device, mm: Any, drvdata: int) -> IommuSva515:
    """5.15 ``intel_svm_bind``: a supervisor bind needs ECAP.SRS (EOPNOTSUPP,
    "Supervisor PASID not supported") and no user mm (EINVAL); it binds ``init_mm``.
    The mm's PASID comes from ``intel_svm_alloc_pasid`` (``[1, max_pasids)`` of the
    device) and is dropped again if the bind fails."""
    info = dev_info_of(dev)
    iommu = info.iommu
    if not drvdata & SVM_FLAG_SUPERVISOR_MODE:
        raise EINVAL(f"{dev_name(dev)}: kernel-sva binds the kernel's address space only")
    if not ir.ecap_srs(iommu.ecap):
        dev_err(dev, f"{iommu.name}: Supervisor PASID not supported")
        raise EOPNOTSUPP(f"{iommu.name}: no supervisor requests")
    if mm is not None:
        dev_err(dev, f"{iommu.name}: Supervisor PASID with user provided mm")
        raise EINVAL(f"{dev_name(dev)}: supervisor bind with a user mm")
    if not iommu.flags & VTD_FLAG_SVM_CAPABLE or not info.pasid_enabled:
        raise EOPNOTSUPP(f"{dev_name(dev)}: no SVA on {iommu.name}")
    kmm = init_mm()
    if kmm.pgd is None:
        raise EOPNOTSUPP("init_mm has no page tables (built only with iommu.pasid_api=kernel-sva)")
    assert isinstance(dev, PciDev)
    iommu_sva_alloc_pasid(kmm, PASID_MIN, pci_max_pasids(dev) - 1)
    try:
        return intel_svm_bind_mm(dev, drvdata, kmm)
    except KernelError:
        iommu_sva_free_pasid(kmm)
        raise


def intel_svm_unbind(handle: IommuSva515) -> None:
    """5.15 ``intel_svm_unbind`` -> ``intel_svm_unbind_mm``: one user less; the last
    tears the PASID entry down (PASID cache, P_IOTLB, device-TLB: the only IOTLB
    flush supervisor SVA ever makes) and frees the bond, the last device frees the
    ``intel_svm``; every unbind drops one reference of the mm's PASID."""
    sdev = handle.priv
    assert isinstance(sdev, IntelSvmDev)
    mm = handle.mm
    assert isinstance(mm, InitMm)
    svm = _svms()[mm.pasid]
    sdev.users -= 1
    if not sdev.users:
        svm.devs.remove(sdev)
        intel_pasid_tear_down_entry(dev_info_of(sdev.dev).iommu, sdev.dev, svm.pasid, False)
        kfree(sdev.kmem)
        if not svm.devs:
            del _svms()[svm.pasid]
            kfree(svm.kmem)
    iommu_sva_free_pasid(mm)


def intel_svm_get_pasid(handle: IommuSva515) -> int:
    """5.15 ``intel_svm_get_pasid``."""
    sdev = handle.priv
    if not isinstance(sdev, IntelSvmDev):
        return IOMMU_PASID_INVALID
    return handle.mm.pasid
