"""The driver model (drivers/base/): devices, buses, drivers, probe and remove, devres,
and bus notifiers.

``driver_register`` binds the driver to every matching unbound device on its bus;
``device_add`` binds a new device to the first matching driver. A probe that
raises a :class:`KernelError` leaves the device unbound, releases its devres, and
prints ``<driver> <dev>: probe with driver <drv> failed with error -N`` as
``call_driver_probe`` does. Notifiers see BUS_NOTIFY_* events in Linux's order.

A :class:`BusType` is static description (name, match, probe, remove), as the C
``const struct bus_type`` is since 6.4; its device list, driver list and notifier
chain live in the current kernel's :class:`SubsysPrivate` (``bus_to_subsys``), so
each booted kernel has its own buses' contents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field

from kernel.context import KernelSlot
from kernel.errno import EBUSY, EINVAL, KernelError
from kernel.printk import KERN_WARNING, dev_printk, pr_err

BUS_NOTIFY_ADD_DEVICE = 1
BUS_NOTIFY_DEL_DEVICE = 2
BUS_NOTIFY_REMOVED_DEVICE = 3
BUS_NOTIFY_BIND_DRIVER = 4
BUS_NOTIFY_BOUND_DRIVER = 5
BUS_NOTIFY_UNBIND_DRIVER = 6
BUS_NOTIFY_UNBOUND_DRIVER = 7
BUS_NOTIFY_DRIVER_NOT_BOUND = 8

Notifier = Callable[[int, "Device"], None]


@define(eq=False)
class Device:
    """``struct device``. Subsystems hang their per-device state off named fields."""

    init_name: str
    bus: BusType | None = None
    parent: Device | None = None
    driver: DeviceDriver | None = None
    driver_data: Any = None
    dma_mask: int = 0xFFFF_FFFF
    coherent_dma_mask: int = 0xFFFF_FFFF
    iommu: Any = None
    """``dev->iommu`` (struct dev_iommu), owned by the IOMMU core."""
    iommu_group: Any = None
    dma_ops_bypass: bool = False
    dma_iommu: bool = False
    """``dev->dma_iommu``: DMA API calls go through dma-iommu."""
    dma_uses_io_tlb: bool = False
    """``dev->dma_uses_io_tlb``: set when the device first bounces through swiotlb."""
    dma_parms: Any = None
    """``dev->dma_parms`` (max segment size, segment boundary), set by the DMA API."""
    devres: list[tuple[str, Callable[[], None]]] = field(factory=list)
    registered: bool = False

    def dev_prefix(self) -> str:
        drv = self.driver.name if self.driver is not None else (self.bus.name if self.bus else "")
        return f"{drv} {self.init_name}".strip()

    def __repr__(self) -> str:
        return f"<device {self.init_name}>"


def dev_name(dev: Device) -> str:
    return dev.init_name


def dev_get_drvdata(dev: Device) -> Any:
    return dev.driver_data


def dev_set_drvdata(dev: Device, data: Any) -> None:
    dev.driver_data = data


def devm_add_action(dev: Device, name: str, action: Callable[[], None]) -> None:
    """``devm_add_action``: run ``action`` when the driver unbinds (LIFO)."""
    dev.devres.append((name, action))


def devres_release_all(dev: Device) -> None:
    while dev.devres:
        _, action = dev.devres.pop()
        action()


@define(eq=False)
class DeviceDriver:
    """``struct device_driver``."""

    name: str
    bus: BusType | None = None
    probe: Callable[[Device], None] | None = None
    remove: Callable[[Device], None] | None = None


@define(eq=False)
class SubsysPrivate:
    """``struct subsys_private``: one kernel's view of a bus (``klist_devices``,
    ``klist_drivers``, the ``bus_notifier`` chain)."""

    devices: list[Device] = field(factory=list)
    drivers: list[DeviceDriver] = field(factory=list)
    notifiers: list[Notifier] = field(factory=list)


@define(eq=False)
class BusType:
    """``struct bus_type``; its lists are the current kernel's (:class:`SubsysPrivate`)."""

    name: str
    match: Callable[[Device, DeviceDriver], bool] = lambda d, drv: False
    probe: Callable[[Device], None] | None = None
    """Bus-level probe wrapper (``pci_device_probe``); defaults to ``drv.probe``."""
    remove: Callable[[Device], None] | None = None
    _private: KernelSlot[SubsysPrivate] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._private = KernelSlot(self, SubsysPrivate)

    @property
    def p(self) -> SubsysPrivate:
        """``bus_to_subsys(bus)`` in the current kernel."""
        return self._private.get()

    @property
    def devices(self) -> list[Device]:
        return self._private.get().devices

    @property
    def drivers(self) -> list[DeviceDriver]:
        return self._private.get().drivers

    @property
    def notifiers(self) -> list[Notifier]:
        return self._private.get().notifiers

    def notify(self, event: int, dev: Device) -> None:
        for nb in list(self._private.get().notifiers):
            nb(event, dev)


def bus_register_notifier(bus: BusType, nb: Notifier) -> None:
    bus.notifiers.append(nb)


def bus_unregister_notifier(bus: BusType, nb: Notifier) -> None:
    if nb in bus.notifiers:
        bus.notifiers.remove(nb)


def really_probe(dev: Device, drv: DeviceDriver) -> bool:
    bus = dev.bus
    assert bus is not None
    dev.driver = drv
    bus.notify(BUS_NOTIFY_BIND_DRIVER, dev)
    try:
        if bus.probe is not None:
            bus.probe(dev)
        elif drv.probe is not None:
            drv.probe(dev)
    except KernelError as err:
        devres_release_all(dev)
        dev.driver = None
        dev.driver_data = None
        bus.notify(BUS_NOTIFY_DRIVER_NOT_BOUND, dev)
        level = KERN_WARNING
        dev_printk(
            level, dev, f"probe with driver {drv.name} failed with error -{err.errno} ({err.name})"
        )
        return False
    bus.notify(BUS_NOTIFY_BOUND_DRIVER, dev)
    return True


def device_attach(dev: Device) -> bool:
    if dev.driver is not None or dev.bus is None:
        return dev.driver is not None
    return any(dev.bus.match(dev, drv) and really_probe(dev, drv) for drv in list(dev.bus.drivers))


def device_add(dev: Device) -> None:
    bus = dev.bus
    if bus is None:
        raise EINVAL(f"device {dev.init_name} has no bus")
    if dev.registered:
        raise EBUSY(f"device {dev.init_name} already added")
    if any(d.init_name == dev.init_name for d in bus.devices):
        raise EBUSY(f"duplicate device name {dev.init_name} on bus {bus.name}")
    bus.devices.append(dev)
    dev.registered = True
    bus.notify(BUS_NOTIFY_ADD_DEVICE, dev)
    device_attach(dev)


def device_release_driver(dev: Device) -> None:
    drv = dev.driver
    bus = dev.bus
    if drv is None or bus is None:
        return
    bus.notify(BUS_NOTIFY_UNBIND_DRIVER, dev)
    try:
        if bus.remove is not None:
            bus.remove(dev)
        elif drv.remove is not None:
            drv.remove(dev)
    finally:
        devres_release_all(dev)
        dev.driver = None
        dev.driver_data = None
        bus.notify(BUS_NOTIFY_UNBOUND_DRIVER, dev)


def device_del(dev: Device) -> None:
    bus = dev.bus
    if bus is None or not dev.registered:
        return
    bus.notify(BUS_NOTIFY_DEL_DEVICE, dev)
    device_release_driver(dev)
    bus.devices.remove(dev)
    dev.registered = False
    bus.notify(BUS_NOTIFY_REMOVED_DEVICE, dev)


def driver_register(drv: DeviceDriver) -> None:
    bus = drv.bus
    if bus is None:
        raise EINVAL(f"driver {drv.name} has no bus")
    if any(d.name == drv.name for d in bus.drivers):
        pr_err(f"Error: Driver '{drv.name}' is already registered, aborting...")
        raise EBUSY(f"driver {drv.name} already registered")
    bus.drivers.append(drv)
    for dev in list(bus.devices):
        if dev.driver is None and bus.match(dev, drv):
            really_probe(dev, drv)


def driver_unregister(drv: DeviceDriver) -> None:
    bus = drv.bus
    if bus is None or drv not in bus.drivers:
        return
    for dev in list(bus.devices):
        if dev.driver is drv:
            device_release_driver(dev)
    bus.drivers.remove(drv)
