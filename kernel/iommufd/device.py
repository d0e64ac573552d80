"""drivers/iommu/iommufd/device.c (Linux 6.12): binding a device to an iommufd and
attaching it to page tables.

:func:`iommufd_device_bind` makes the DEVICE object: the device must be cache
coherent behind its IOMMU (EINVAL otherwise) and its group is claimed for user DMA
(``iommu_device_claim_dma_owner``: EBUSY while a kernel driver uses it, EPERM when
another iommufd owns it); the group moves to the blocking domain. The binding holds a
reference, so IOMMU_DESTROY of a bound device is EBUSY; :func:`iommufd_device_unbind`
ends it.

Attach, replace and detach work per IOMMU group (``struct iommufd_group``): the
first device attaches the group's domain, the others join. Attaching to an IOAS
finds a compatible auto-domain HWPT of that IOAS or makes one; a device's reserved
regions are reserved in the IOAS first (EADDRINUSE if something is mapped there).
Attaching a second, different HWPT to an attached device is EINVAL (that is a
replace), replacing an unattached device is EINVAL.

PASID attach (:func:`iommufd_device_pasid_attach`) is 6.15's design, newer than the
baseline: only a HWPT allocated with IOMMU_HWPT_ALLOC_PASID may be attached to a
PASID (EINVAL otherwise), through ``iommu_attach_device_pasid``.

Departures: MSI isolation (``iommu_group_has_isolated_msi``, the
``allow_unsafe_interrupts`` parameter) and the SW_MSI cookie are not modelled;
cache-coherency enforcement on the domain is not requested.
"""

from __future__ import annotations

from attrs import define, field

from kernel.context import KernelSlot
from kernel.device import Device, dev_name
from kernel.errno import EBUSY, EINVAL, ENODEV, KernelError
from kernel.iommu.iommu import (
    iommu_attach_group,
    iommu_detach_group,
    iommu_device_claim_dma_owner,
    iommu_device_release_dma_owner,
    iommu_group_replace_domain,
)
from kernel.iommu.iommu_h import IOMMU_CAP_CACHE_COHERENCY, IommuGroup
from kernel.iommu.pasid import iommu_attach_device_pasid, iommu_detach_device_pasid
from kernel.iommufd.fault import (
    iommufd_fault_attach_prepare,
    iommufd_fault_detach_finish,
    iommufd_fault_iopf_disable,
    iommufd_fault_replace,
    iommufd_fault_replace_abort,
)
from kernel.iommufd.hw_pagetable import (
    IommufdHwPagetable,
    IommufdHwptNested,
    IommufdHwptPaging,
    device_iommu_capable,
    iommufd_hwpt_paging_alloc,
)
from kernel.iommufd.io_pagetable import (
    iopt_remove_reserved_iova,
    iopt_table_enforce_dev_resv_regions,
)
from kernel.iommufd.ioas import IommufdIoas
from kernel.iommufd.main import (
    IOMMUFD_OBJ_ANY,
    IOMMUFD_OBJ_DEVICE,
    IommufdCtx,
    IommufdObject,
    iommufd_get_object,
    iommufd_object_alloc,
    iommufd_object_finalize,
    iommufd_object_remove,
    iommufd_put_object,
)


@define(eq=False)
class IommufdGroup:
    """``struct iommufd_group``: the bound devices of one IOMMU group and the HWPT
    the group is attached to."""

    group: IommuGroup
    hwpt: IommufdHwPagetable | None = field(default=None, repr=False)
    devices: list[IommufdDevice] = field(factory=list, repr=False)
    """Attached devices (``device_list``)."""
    users: int = 0


_GROUPS: KernelSlot[dict[int, IommufdGroup]] = KernelSlot("iommufd_groups", dict)


@define(eq=False)
class IommufdDevice(IommufdObject):
    """``struct iommufd_device``."""

    dev: Device | None = None
    igroup: IommufdGroup | None = field(default=None, repr=False)
    pasids: dict[int, IommufdHwptPaging] = field(factory=dict, repr=False)
    iopf_enabled: int = 0
    """Fault-capable HWPTs attached (``idev->iopf_enabled``): IOPF is on while > 0."""

    @property
    def device(self) -> Device:
        """``idev->dev`` (set for the object's whole life)."""
        assert self.dev is not None
        return self.dev

    def destroy(self) -> None:
        """``iommufd_device_destroy``: give the group back to the kernel."""
        if self.dev is None:
            return
        igroup = self.igroup
        assert igroup is not None
        iommu_device_release_dma_owner(self.dev)
        igroup.users -= 1
        if igroup.users == 0:
            _GROUPS.get().pop(igroup.group.id, None)
        self.dev = None


def iommufd_get_device(ictx: IommufdCtx, oid: int) -> IommufdDevice:
    """``iommufd_get_device``: a reference to device ``oid`` or ENOENT."""
    obj = iommufd_get_object(ictx, oid, IOMMUFD_OBJ_DEVICE)
    assert isinstance(obj, IommufdDevice)
    return obj


def _idev(idev: IommufdDevice) -> tuple[Device, IommufdGroup]:
    assert idev.dev is not None and idev.igroup is not None
    return idev.dev, idev.igroup


# --------------------------------------------------------------------------- bind


def iommufd_device_bind(ictx: IommufdCtx, dev: Device) -> IommufdDevice:
    """``iommufd_device_bind``: the DEVICE object (finalized, id in ``.id``)."""
    group: IommuGroup | None = dev.iommu_group
    if group is None or dev.iommu is None:
        raise ENODEV(f"{dev_name(dev)} is not behind an IOMMU")
    if not device_iommu_capable(dev, IOMMU_CAP_CACHE_COHERENCY):
        raise EINVAL(f"{dev_name(dev)}: the IOMMU cannot keep its DMA cache coherent")
    groups = _GROUPS.get()
    igroup = groups.get(group.id)
    if igroup is None:
        igroup = IommufdGroup(group)
    iommu_device_claim_dma_owner(dev, ictx)
    try:
        idev = iommufd_object_alloc(ictx, lambda: IommufdDevice(ictx, IOMMUFD_OBJ_DEVICE))
    except KernelError:
        iommu_device_release_dma_owner(dev)
        raise
    idev.dev = dev
    idev.igroup = igroup
    igroup.users += 1
    groups[group.id] = igroup
    idev.users += 1  # the binding (dropped by iommufd_device_unbind)
    iommufd_object_finalize(ictx, idev)
    return idev


def iommufd_device_unbind(idev: IommufdDevice) -> None:
    """``iommufd_device_unbind``: the driver's end of the binding (detaches first
    if user space left the device attached)."""
    for pasid in list(idev.pasids):
        iommufd_device_pasid_detach(idev, pasid)
    _, igroup = _idev(idev)
    if idev in igroup.devices:
        iommufd_device_detach(idev)
    iommufd_object_remove(idev.ictx, idev.id, owner_ref=True)


# --------------------------------------------------------------------------- attach


def iommufd_device_attach_reserved_iova(idev: IommufdDevice, hwpt: IommufdHwPagetable) -> None:
    """``iommufd_device_attach_reserved_iova``."""
    assert hwpt.ioas is not None
    iopt_table_enforce_dev_resv_regions(hwpt.ioas.iopt, _idev(idev)[0])


def iommufd_hw_pagetable_attach(hwpt: IommufdHwPagetable, idev: IommufdDevice) -> None:
    """``iommufd_hw_pagetable_attach``."""
    dev, igroup = _idev(idev)
    if igroup.hwpt is not None and igroup.hwpt is not hwpt:
        raise EINVAL(f"{dev_name(dev)}: the group is attached to another HWPT")
    iommufd_device_attach_reserved_iova(idev, hwpt)
    if not igroup.devices:
        assert hwpt.domain is not None
        try:
            if hwpt.fault is not None:
                iommufd_fault_attach_prepare(hwpt, idev)
            try:
                iommu_attach_group(hwpt.domain, igroup.group)
            except KernelError:
                if hwpt.fault is not None:
                    iommufd_fault_iopf_disable(idev)
                raise
        except KernelError:
            assert hwpt.ioas is not None
            iopt_remove_reserved_iova(hwpt.ioas.iopt, dev)
            raise
        igroup.hwpt = hwpt
    hwpt.users += 1
    igroup.devices.append(idev)


def iommufd_hw_pagetable_detach(idev: IommufdDevice) -> IommufdHwPagetable:
    """``iommufd_hw_pagetable_detach``: the HWPT the device was on (still holding
    the device's reference)."""
    dev, igroup = _idev(idev)
    hwpt = igroup.hwpt
    assert hwpt is not None and hwpt.domain is not None and hwpt.ioas is not None
    igroup.devices.remove(idev)
    if not igroup.devices:
        iommu_detach_group(hwpt.domain, igroup.group)
        igroup.hwpt = None
        if hwpt.fault is not None:
            iommufd_fault_detach_finish(hwpt, idev)
    if all(p.ioas is not hwpt.ioas for p in idev.pasids.values()):
        iopt_remove_reserved_iova(hwpt.ioas.iopt, dev)
    return hwpt


def iommufd_hw_pagetable_put(ictx: IommufdCtx, hwpt: IommufdHwPagetable) -> None:
    """``iommufd_hw_pagetable_put``: drop a device's reference; an auto domain
    nobody else uses is destroyed."""
    if hwpt.auto_domain and hwpt.users == 2:
        hwpt.users -= 1
        iommufd_object_remove(ictx, hwpt.id)
    else:
        hwpt.users -= 1


def _do_attach(idev: IommufdDevice, hwpt: IommufdHwPagetable) -> IommufdHwPagetable | None:
    iommufd_hw_pagetable_attach(hwpt, idev)
    return None


def _do_replace(idev: IommufdDevice, hwpt: IommufdHwPagetable) -> IommufdHwPagetable | None:
    """``iommufd_device_do_replace``: the old HWPT to put, or None."""
    dev, igroup = _idev(idev)
    old = igroup.hwpt
    if old is None:
        raise EINVAL(f"{dev_name(dev)} is not attached")
    if old is hwpt:
        return None
    assert hwpt.domain is not None and hwpt.ioas is not None and old.ioas is not None
    moved = old.ioas is not hwpt.ioas
    done: list[Device] = []
    try:
        if moved:
            for d in igroup.devices:
                assert d.dev is not None
                iopt_table_enforce_dev_resv_regions(hwpt.ioas.iopt, d.dev)
                done.append(d.dev)
        iommufd_fault_replace(old, hwpt, idev, done=False)
        try:
            iommu_group_replace_domain(igroup.group, hwpt.domain)
        except KernelError:
            iommufd_fault_replace_abort(old, hwpt, idev)
            raise
    except KernelError:
        for dv in done:
            iopt_remove_reserved_iova(hwpt.ioas.iopt, dv)
        raise
    iommufd_fault_replace(old, hwpt, idev, done=True)
    if moved:
        for d in igroup.devices:
            iopt_remove_reserved_iova(old.ioas.iopt, d.dev)
    igroup.hwpt = hwpt
    n = len(igroup.devices)
    hwpt.users += n
    old.users -= n - 1
    return old


def _auto_get_domain(idev: IommufdDevice, ioas: IommufdIoas, replace: bool) -> int:
    """``iommufd_device_auto_get_domain``: reuse an auto HWPT of the IOAS that the
    device can take (EINVAL from one means incompatible: try the next), else make
    one."""
    ictx = idev.ictx
    do = _do_replace if replace else _do_attach
    for hwpt in list(ioas.hwpt_list):
        if not hwpt.auto_domain:
            continue
        hwpt.users += 1
        try:
            old = do(idev, hwpt)
        except EINVAL:
            hwpt.users -= 1
            continue
        except KernelError:
            hwpt.users -= 1
            raise
        hwpt.users -= 1
        if old is not None:
            iommufd_hw_pagetable_put(ictx, old)
        return hwpt.id
    hwpt = iommufd_hwpt_paging_alloc(ictx, ioas, idev, 0, not replace, None)
    old = None
    if replace:
        try:
            old = do(idev, hwpt)
        except KernelError:
            from kernel.iommufd.main import iommufd_object_abort_and_destroy

            iommufd_object_abort_and_destroy(ictx, hwpt)
            raise
    hwpt.auto_domain = True
    iommufd_object_finalize(ictx, hwpt)
    if old is not None:
        iommufd_hw_pagetable_put(ictx, old)
    return hwpt.id


def _change_pt(idev: IommufdDevice, pt_id: int, replace: bool) -> int:
    """``iommufd_device_change_pt``: ``pt_id`` is a paging or nested HWPT or an
    IOAS."""
    ictx = idev.ictx
    pt = iommufd_get_object(ictx, pt_id, IOMMUFD_OBJ_ANY)
    try:
        if isinstance(pt, IommufdHwptPaging | IommufdHwptNested):
            old = _do_replace(idev, pt) if replace else _do_attach(idev, pt)
            if old is not None:
                iommufd_hw_pagetable_put(ictx, old)
            return pt.id
        if isinstance(pt, IommufdIoas):
            return _auto_get_domain(idev, pt, replace)
        raise EINVAL(f"object {pt_id} is neither an IOAS nor a HWPT")
    finally:
        iommufd_put_object(ictx, pt)


def iommufd_device_attach(idev: IommufdDevice, pt_id: int) -> int:
    """``iommufd_device_attach``: returns the id of the HWPT attached."""
    return _change_pt(idev, pt_id, replace=False)


def iommufd_device_replace(idev: IommufdDevice, pt_id: int) -> int:
    """``iommufd_device_replace``: returns the id of the HWPT now attached."""
    return _change_pt(idev, pt_id, replace=True)


def iommufd_device_detach(idev: IommufdDevice) -> None:
    """``iommufd_device_detach``."""
    dev, igroup = _idev(idev)
    if idev not in igroup.devices:
        raise EINVAL(f"{dev_name(dev)} is not attached")
    hwpt = iommufd_hw_pagetable_detach(idev)
    iommufd_hw_pagetable_put(idev.ictx, hwpt)


# --------------------------------------------------------------------------- PASID (6.15)


def iommufd_device_pasid_attach(idev: IommufdDevice, pasid: int, pt_id: int) -> int:
    """``iommufd_device_attach(idev, pasid, &pt_id)`` of 6.15 for a PASID: a paging
    HWPT allocated with IOMMU_HWPT_ALLOC_PASID onto ``pasid`` of the device."""
    dev, _ = _idev(idev)
    ictx = idev.ictx
    if pasid in idev.pasids:
        raise EBUSY(f"{dev_name(dev)}: PASID {pasid} is already attached")
    pt = iommufd_get_object(ictx, pt_id, IOMMUFD_OBJ_ANY)
    try:
        if not isinstance(pt, IommufdHwptPaging):
            raise EINVAL(f"object {pt_id} is not a paging HWPT")
        if not pt.pasid_compat:
            raise EINVAL(f"HWPT {pt_id} was not allocated with IOMMU_HWPT_ALLOC_PASID")
        assert pt.domain is not None and pt.ioas is not None
        iopt_table_enforce_dev_resv_regions(pt.ioas.iopt, dev)
        try:
            iommu_attach_device_pasid(pt.domain, dev, pasid)
        except KernelError:
            iopt_remove_reserved_iova(pt.ioas.iopt, dev)
            raise
        pt.users += 1
        idev.pasids[pasid] = pt
        return pt.id
    finally:
        iommufd_put_object(ictx, pt)


def iommufd_device_pasid_detach(idev: IommufdDevice, pasid: int) -> None:
    """``iommufd_device_detach(idev, pasid)`` of 6.15."""
    dev, igroup = _idev(idev)
    hwpt = idev.pasids.pop(pasid, None)
    if hwpt is None:
        raise EINVAL(f"{dev_name(dev)}: PASID {pasid} is not attached")
    assert hwpt.domain is not None and hwpt.ioas is not None
    iommu_detach_device_pasid(hwpt.domain, dev, pasid)
    still = [p.ioas for p in idev.pasids.values()]
    if idev in igroup.devices and igroup.hwpt is not None:
        still.append(igroup.hwpt.ioas)
    if hwpt.ioas not in still:
        iopt_remove_reserved_iova(hwpt.ioas.iopt, dev)
    hwpt.users -= 1
