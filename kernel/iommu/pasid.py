"""PASID attach, upstream generation (drivers/iommu/iommu.c as of 2025 mainline).

``iommu_alloc_global_pasid``/``iommu_free_global_pasid`` share one system-wide IDA
over ``[IOMMU_FIRST_GLOBAL_PASID, max_pasids - 1]`` with SVA. Attach reserves the
slot in ``group.pasid_array``, calls the domain's ``set_dev_pasid(domain, dev,
pasid, old=None)`` on every group device that has PASIDs, rolls back through the
driver's blocked domain on failure, and only then publishes the domain in the
array. Detach sets the driver's blocked domain on the PASID (``old=domain``) and
erases the entry.

Differences from Linux: no attach handles (the ``handle`` argument is accepted and
must be None); the slot reservation is a sentinel in a dict, not XA_ZERO_ENTRY.
"""

from __future__ import annotations

from typing import Any

from kernel.bug import WARN_ON
from kernel.device import Device, dev_name
from kernel.errno import EBUSY, EINVAL, ENODEV, EOPNOTSUPP, KernelError
from kernel.idr import ida_alloc_range, ida_free
from kernel.iommu.iommu import _group_devices_with_pasid, dev_iommu_ops, iommu_state
from kernel.iommu.iommu_h import (
    IOMMU_FIRST_GLOBAL_PASID,
    IOMMU_NO_PASID,
    IOMMU_PASID_INVALID,
    IommuDomain,
    IommuGroup,
    pasid_ops,
)

_RESERVED = IommuDomain(name="xa-zero-entry")


def iommu_alloc_global_pasid(dev: Device) -> int:
    """``iommu_alloc_global_pasid``: IOMMU_PASID_INVALID when the device has no PASIDs
    or the space is exhausted."""
    param = dev.iommu
    if param is None or not param.max_pasids:
        return IOMMU_PASID_INVALID
    try:
        return ida_alloc_range(
            iommu_state().global_pasid_ida, IOMMU_FIRST_GLOBAL_PASID, param.max_pasids - 1
        )
    except KernelError:
        return IOMMU_PASID_INVALID


def iommu_free_global_pasid(pasid: int) -> None:
    """``iommu_free_global_pasid``."""
    if WARN_ON(pasid == IOMMU_PASID_INVALID):
        return
    ida_free(iommu_state().global_pasid_ida, pasid)


def iommu_remove_dev_pasid(dev: Device, pasid: int, old: IommuDomain) -> None:
    """``iommu_remove_dev_pasid``: the driver's blocked domain on ``dev``'s ``pasid``."""
    blocked = dev_iommu_ops(dev).blocked_domain
    assert blocked is not None
    bops = pasid_ops(blocked)
    assert bops is not None
    bops.set_dev_pasid(blocked, dev, pasid, old)


def __iommu_set_group_pasid(domain: IommuDomain, group: IommuGroup, pasid: int) -> None:
    """Set ``domain`` on ``pasid`` for every group device with PASIDs; on failure
    block the PASID again on the devices already done (Linux's ``old == NULL`` case:
    there is no replace API here, so there is never an old domain to restore)."""
    dops = pasid_ops(domain)
    assert dops is not None
    done: list[Device] = []
    for dev in _group_devices_with_pasid(group):
        try:
            dops.set_dev_pasid(domain, dev, pasid, None)
        except KernelError:
            for d in reversed(done):
                try:
                    iommu_remove_dev_pasid(d, pasid, domain)
                except KernelError:
                    WARN_ON(True, f"iommu: PASID {pasid} rollback failed on {dev_name(d)}")
            raise
        done.append(dev)


def iommu_attach_device_pasid(
    domain: IommuDomain, dev: Device, pasid: int, handle: Any = None
) -> None:
    """``iommu_attach_device_pasid``: the checks of the 2025 core, in its order."""
    group: IommuGroup | None = dev.iommu_group
    if group is None:
        raise ENODEV(f"{dev_name(dev)}: no iommu group")
    ops = dev_iommu_ops(dev)
    blocked = ops.blocked_domain
    if pasid_ops(domain) is None or blocked is None or pasid_ops(blocked) is None:
        raise EOPNOTSUPP("domain or blocked domain cannot set_dev_pasid")
    if domain.owner is not ops or pasid == IOMMU_NO_PASID:
        raise EINVAL(f"{dev_name(dev)}: incompatible domain or PASID {pasid}")
    if handle is not None:
        raise EINVAL("attach handles are not modelled")
    with group.mutex:
        for d in group.devices:
            mp = d.iommu.max_pasids
            if mp > 0 and pasid >= mp:
                raise EINVAL(f"{dev_name(d)}: PASID {pasid} >= max_pasids {mp}")
        if pasid in group.pasid_array:
            raise EBUSY(f"PASID {pasid} already attached in group {group.id}")
        group.pasid_array[pasid] = _RESERVED
        try:
            __iommu_set_group_pasid(domain, group, pasid)
        except KernelError:
            del group.pasid_array[pasid]
            raise
        group.pasid_array[pasid] = domain


def iommu_detach_device_pasid(domain: IommuDomain, dev: Device, pasid: int) -> None:
    """``iommu_detach_device_pasid``: the blocked domain on every group device, then
    erase the slot."""
    group: IommuGroup | None = dev.iommu_group
    if group is None:
        return
    with group.mutex:
        for d in _group_devices_with_pasid(group):
            try:
                iommu_remove_dev_pasid(d, pasid, domain)
            except KernelError:
                WARN_ON(True, f"iommu: blocking PASID {pasid} of {dev_name(d)} failed")
        group.pasid_array.pop(pasid, None)


def iommu_get_domain_for_dev_pasid(dev: Device, pasid: int) -> IommuDomain | None:
    """``iommu_get_domain_for_dev_pasid`` (v6.2..v6.10): what ``pasid`` is attached to."""
    group: IommuGroup | None = dev.iommu_group
    if group is None:
        return None
    dom = group.pasid_array.get(pasid)
    return None if dom is _RESERVED else dom
