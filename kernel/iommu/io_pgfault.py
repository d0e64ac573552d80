"""Device fault reporting (drivers/iommu/io-pgfault.c ``iommu_report_device_fault``,
with iommu.c's ``report_iommu_fault``).

A vendor driver's fault handler (VT-d fault recording registers, the SMMUv3 event
queue) reports each translation fault here; the core traces ``iommu:io_page_fault``,
records it in the per-kernel fault list and hands it to the fault handler of the
domain the device (or the PASID) is attached to.

Differences from Linux: one entry point serves both C paths (the 6.12 unrecoverable
``report_iommu_fault`` and the page-request ``iommu_report_device_fault``); there is
no page-request queue (``iopf_queue``) yet, so a fault is never resolved by a handler
and the result is returned to the driver as in ``report_iommu_fault``.
"""

from __future__ import annotations

from kernel.device import Device, dev_name
from kernel.iommu.iommu import iommu_state
from kernel.iommu.iommu_h import IommuDomain, IommuGroup
from kernel.trace import trace_io_page_fault


def iommu_report_device_fault(dev: Device, iova: int, flags: int, pasid: int | None = None) -> int:
    """``report_iommu_fault``/``iommu_report_device_fault``: trace the fault, hand it
    to the domain's fault handler; returns the handler's result or -ENOSYS (38)."""
    drv = dev.driver.name if dev.driver is not None else ""
    if trace_io_page_fault.enabled:
        trace_io_page_fault(device=dev_name(dev), driver=drv, iova=iova, flags=flags)
    iommu_state().faults.append((dev_name(dev), iova, flags))
    group: IommuGroup | None = dev.iommu_group
    domain: IommuDomain | None = None
    if group is not None:
        domain = group.pasid_array.get(pasid) if pasid else group.domain
    if domain is not None and domain.handler is not None:
        return domain.handler(domain, dev, iova, flags)
    return -38
