"""IOMMU unit registration and binding (drivers/iommu/iommu.c:
``iommu_device_register``/``iommu_device_unregister``, ``iommu_bus_notifier``).

``iommu_bind_units`` (a ROOTFS initcall) matches each firmware IOMMU unit to the vendor
driver whose :class:`kernel.module.IommuDriverInfo` ``table`` names the unit's firmware
table, calls the driver's ``probe(unit)`` (which registers the unit here), probes every
PCI device, and watches the PCI bus for devices added, removed, bound and unbound.

Differences from Linux: the kernel matches firmware units to drivers by table name
(``DMAR``, ``IORT``) instead of each driver's own detection (``detect_intel_iommu``,
``iort_init_platform_devices``); a unit claimed by two drivers is refused and logged
rather than taken by the first. There is no ``iommu_device_sysfs_add``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.bus import IommuUnitInfo
from kernel.device import (
    BUS_NOTIFY_ADD_DEVICE,
    BUS_NOTIFY_BIND_DRIVER,
    BUS_NOTIFY_DRIVER_NOT_BOUND,
    BUS_NOTIFY_REMOVED_DEVICE,
    BUS_NOTIFY_UNBOUND_DRIVER,
    Device,
    bus_register_notifier,
    bus_unregister_notifier,
)
from kernel.errno import EBUSY, ENODEV, KernelError
from kernel.init import initcall
from kernel.iommu.iommu import (
    _fwnode_for,
    iommu_device_unuse_default_domain,
    iommu_device_use_default_domain,
    iommu_probe_device,
    iommu_release_device,
    iommu_state,
)
from kernel.iommu.iommu_h import IommuDevice, IommuGroup, IommuOps
from kernel.module import InitLevel
from kernel.pci import pci_bus_type, pci_get_devices
from kernel.printk import dev_warn, pr_err, pr_info

if TYPE_CHECKING:
    from kernel.boot import Kernel


def iommu_device_register(iommu: IommuDevice, ops: IommuOps, hwdev: IommuUnitInfo | None) -> None:
    """``iommu_device_register``: add the unit and probe the devices it covers
    (``bus_iommu_probe``)."""
    st = iommu_state()
    if iommu.registered:
        raise EBUSY(f"iommu {iommu.name} already registered")
    iommu.ops = ops
    if hwdev is not None:
        iommu.fwnode = hwdev
    st.iommus.append(iommu)
    iommu.registered = True
    for pdev in pci_get_devices():
        if pdev.iommu is None and _fwnode_for(pdev) is iommu.fwnode:
            try:
                iommu_probe_device(pdev)
            except KernelError as err:
                dev_warn(pdev, f"iommu probe failed: {err}")


def iommu_device_unregister(iommu: IommuDevice) -> None:
    """``iommu_device_unregister``: release every device probed against the unit."""
    st = iommu_state()
    for pdev in pci_get_devices():
        if pdev.iommu is not None and pdev.iommu.iommu_dev is iommu:
            iommu_release_device(pdev)
    if iommu in st.iommus:
        st.iommus.remove(iommu)
    iommu.registered = False


def _bus_notifier(event: int, dev: Device) -> None:
    if event == BUS_NOTIFY_ADD_DEVICE:
        try:
            iommu_probe_device(dev)
        except ENODEV:
            pass
        except KernelError as err:
            dev_warn(dev, f"iommu probe failed: {err}")
    elif event == BUS_NOTIFY_REMOVED_DEVICE:
        iommu_release_device(dev)
    elif event == BUS_NOTIFY_BIND_DRIVER:
        try:
            iommu_device_use_default_domain(dev)
        except KernelError as err:
            dev_warn(dev, f"DMA ownership conflict: {err}")
    elif event in (BUS_NOTIFY_UNBOUND_DRIVER, BUS_NOTIFY_DRIVER_NOT_BOUND):
        group: IommuGroup | None = dev.iommu_group
        if group is not None and group.owner is None and group.owner_cnt:
            iommu_device_unuse_default_domain(dev)


def _iommu_bind_teardown(k: Kernel) -> None:
    st = iommu_state()
    bus_unregister_notifier(pci_bus_type, _bus_notifier)
    st.notifier = None
    for pdev in reversed(pci_get_devices()):
        iommu_release_device(pdev)
    for shutdown in reversed(st.drivers_up):
        shutdown()
    st.drivers_up.clear()
    for iommu in list(st.iommus):
        iommu_device_unregister(iommu)


@initcall(InitLevel.ROOTFS, "iommu_bind_units", _iommu_bind_teardown)
def iommu_bind_units(k: Kernel) -> None:
    """Bind each firmware IOMMU unit to the vendor driver whose ``table`` matches (by
    name), then probe every PCI device and watch the PCI bus for new ones."""
    st = iommu_state()
    for unit in k.machine.firmware.iommus:
        claim = [d for d in k.iommu_drivers if d.table == unit.table]
        if not claim:
            pr_info(
                f"iommu: no driver for {unit.table} unit {unit.name}; devices left untranslated"
            )
            continue
        if len(claim) > 1:
            names = " and ".join(sorted(d.name for d in claim))
            msg = f"iommu: {unit.table} unit {unit.name} claimed by both {names}; not binding"
            pr_err(msg)
            st.bind_errors.append(msg)
            continue
        drv = claim[0]
        try:
            drv.probe(unit)
        except KernelError as err:
            pr_err(f"iommu: {drv.name} failed to bring up {unit.name}: {err}")
            continue
        st.bound[unit.name] = drv.name
        if drv.shutdown is not None and drv.shutdown not in st.drivers_up:
            st.drivers_up.append(drv.shutdown)
        pr_info(f"iommu: {unit.table} unit {unit.name} bound to driver {drv.name}")
    for pdev in pci_get_devices():
        try:
            iommu_probe_device(pdev)
        except ENODEV:
            pass
        except KernelError as err:
            dev_warn(pdev, f"iommu probe failed: {err}")
    st.notifier = _bus_notifier
    bus_register_notifier(pci_bus_type, _bus_notifier)
