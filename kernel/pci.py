"""The PCI core (drivers/pci/): enumeration, config accessors, capabilities, drivers,
enabling, BAR mapping, MSI-X vectors, and the PASID/ATS/PRI helpers (ats.c).

Enumeration scans the host-bridge buses firmware lists, function 0 of each slot
and the other functions of multi-function devices, reading BARs by the standard
sizing protocol, as ``pci_scan_slot``/``__pci_read_base`` do. Config accessors
return the value instead of filling an out-parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from attrs import define, field, frozen

from hw.bus import PciAddr
from kernel.bug import WARN, WARN_ON
from kernel.device import (
    BusType,
    Device,
    DeviceDriver,
    device_add,
    driver_register,
    driver_unregister,
)
from kernel.errno import EBUSY, EINVAL, ENODEV, ENOSPC
from kernel.io import IoMem, ioremap
from kernel.irq import irq_alloc, irq_free, irq_to_desc
from kernel.irq_remapping import msi_domain_alloc_irq, msi_domain_free_irq
from kernel.platform import platform
from kernel.printk import pr_info

PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_CLASS_REVISION = 0x08
PCI_HEADER_TYPE = 0x0E
PCI_BASE_ADDRESS_0 = 0x10
PCI_CAPABILITY_LIST = 0x34
PCI_COMMAND_MEMORY = 0x2
PCI_COMMAND_MASTER = 0x4
PCI_STATUS_CAP_LIST = 0x10

PCI_CAP_ID_EXP = 0x10
PCI_CAP_ID_MSIX = 0x11
PCI_EXT_CAP_ID_ACS = 0x0D
PCI_EXT_CAP_ID_ATS = 0x0F
PCI_EXT_CAP_ID_PRI = 0x13
PCI_EXT_CAP_ID_PASID = 0x1B

PCI_MSIX_FLAGS = 2
PCI_MSIX_FLAGS_QSIZE = 0x07FF
PCI_MSIX_FLAGS_MASKALL = 0x4000
PCI_MSIX_FLAGS_ENABLE = 0x8000
PCI_MSIX_TABLE = 4
PCI_MSIX_ENTRY_SIZE = 16
PCI_MSIX_ENTRY_VECTOR_CTRL = 12

PCI_PASID_CAP = 0x04
PCI_PASID_CTRL = 0x06
PCI_PASID_CAP_EXEC = 0x02
PCI_PASID_CAP_PRIV = 0x04
PCI_PASID_CTRL_ENABLE = 0x01
PCI_ATS_CAP = 0x04
PCI_ATS_CTRL = 0x06
PCI_ATS_CTRL_ENABLE = 0x8000
PCI_ATS_MIN_STU = 12
PCI_PRI_CTRL = 0x04
PCI_PRI_CTRL_ENABLE = 0x01
PCI_PRI_CTRL_RESET = 0x02
PCI_PRI_STATUS = 0x06
PCI_PRI_STATUS_RF = 0x0001
PCI_PRI_STATUS_UPRGI = 0x0002
PCI_PRI_STATUS_STOPPED = 0x0100
PCI_PRI_STATUS_PASID = 0x8000
PCI_PRI_MAX_REQ = 0x08
PCI_PRI_ALLOC_REQ = 0x0C
PCI_ACS_CAP = 0x04
PCI_ACS_CTRL = 0x06
PCI_ACS_SV = 0x01
PCI_ACS_RR = 0x04
PCI_ACS_CR = 0x08
PCI_ACS_UF = 0x10

PCI_IRQ_MSIX = 0x4
PCI_ANY_ID = 0xFFFF_FFFF


@frozen
class PciDeviceId:
    """``struct pci_device_id`` (``PCI_DEVICE(vendor, device)``)."""

    vendor: int
    device: int = PCI_ANY_ID
    class_: int = 0
    class_mask: int = 0
    driver_data: int = 0

    def matches(self, pdev: PciDev) -> bool:
        return (
            self.vendor in (PCI_ANY_ID, pdev.vendor)
            and self.device in (PCI_ANY_ID, pdev.device)
            and (pdev.class_ & self.class_mask) == (self.class_ & self.class_mask)
        )


@define(eq=False)
class Resource:
    start: int
    size: int
    flags: int = 0


@define(eq=False, repr=False)
class PciDev(Device):
    """``struct pci_dev``."""

    addr: PciAddr = field(kw_only=True)
    vendor: int = field(kw_only=True, default=0)
    device: int = field(kw_only=True, default=0)
    class_: int = field(kw_only=True, default=0)
    revision: int = field(kw_only=True, default=0)
    multifunction: bool = field(kw_only=True, default=False)
    resource: dict[int, Resource] = field(kw_only=True, factory=dict)
    msix_cap: int = field(kw_only=True, default=0)
    pasid_cap: int = field(kw_only=True, default=0)
    ats_cap: int = field(kw_only=True, default=0)
    pri_cap: int = field(kw_only=True, default=0)
    acs_cap: int = field(kw_only=True, default=0)
    pcie_type: int = field(kw_only=True, default=-1)
    enable_cnt: int = field(kw_only=True, default=0)
    msix_enabled: bool = field(kw_only=True, default=False)
    irqs: list[int] = field(kw_only=True, factory=list)
    pasid_enabled: bool = field(kw_only=True, default=False)
    pasid_features: int = field(kw_only=True, default=0)
    ats_enabled: bool = field(kw_only=True, default=False)
    ats_stu: int = field(kw_only=True, default=0)
    pri_enabled: bool = field(kw_only=True, default=False)
    pri_reqs_alloc: int = field(kw_only=True, default=0)
    pasid_required: bool = field(kw_only=True, default=False)
    """``pdev->pasid_required``: PRI status says PRG responses need the PASID."""
    untrusted: bool = field(kw_only=True, default=False)
    """``pdev->untrusted``: behind a port firmware marks external-facing."""

    @property
    def devfn(self) -> int:
        return self.addr.devfn

    @property
    def rid(self) -> int:
        return self.addr.rid


def to_pci_dev(dev: Device) -> PciDev:
    if not isinstance(dev, PciDev):
        raise EINVAL(f"{dev.init_name} is not a PCI device")
    return dev


def dev_is_pci(dev: Device) -> bool:
    return isinstance(dev, PciDev)


def pci_dev_id(pdev: PciDev) -> int:
    """``pci_dev_id``: the 16-bit requester ID (bus << 8 | devfn)."""
    return pdev.addr.rid


# -- config space --------------------------------------------------------------


def pci_read_config_byte(pdev: PciDev, where: int) -> int:
    return platform().pci_config_read(pdev.addr, where, 1)


def pci_read_config_word(pdev: PciDev, where: int) -> int:
    return platform().pci_config_read(pdev.addr, where, 2)


def pci_read_config_dword(pdev: PciDev, where: int) -> int:
    return platform().pci_config_read(pdev.addr, where, 4)


def pci_write_config_byte(pdev: PciDev, where: int, val: int) -> None:
    platform().pci_config_write(pdev.addr, where, 1, val)


def pci_write_config_word(pdev: PciDev, where: int, val: int) -> None:
    platform().pci_config_write(pdev.addr, where, 2, val)


def pci_write_config_dword(pdev: PciDev, where: int, val: int) -> None:
    platform().pci_config_write(pdev.addr, where, 4, val)


def _cfg(addr: PciAddr, where: int, size: int) -> int:
    return platform().pci_config_read(addr, where, size)


def _find_cap(addr: PciAddr, cap: int) -> int:
    if not _cfg(addr, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST:
        return 0
    pos = _cfg(addr, PCI_CAPABILITY_LIST, 1) & ~3
    ttl = 48
    while pos >= 0x40 and ttl:
        if _cfg(addr, pos, 1) == cap:
            return pos
        pos = _cfg(addr, pos + 1, 1) & ~3
        ttl -= 1
    return 0


def _find_ext_cap(addr: PciAddr, cap: int) -> int:
    pos = 0x100
    ttl = (4096 - 256) // 8
    while pos and ttl:
        header = _cfg(addr, pos, 4)
        if header in (0, 0xFFFF_FFFF):
            return 0
        if header & 0xFFFF == cap:
            return pos
        pos = (header >> 20) & 0xFFC
        if pos < 0x100:
            return 0
        ttl -= 1
    return 0


def pci_find_capability(pdev: PciDev, cap: int) -> int:
    return _find_cap(pdev.addr, cap)


def pci_find_ext_capability(pdev: PciDev, cap: int) -> int:
    return _find_ext_cap(pdev.addr, cap)


# -- enumeration -----------------------------------------------------------------


def _read_bars(pdev: PciDev) -> None:
    bar = 0
    while bar < 6:
        off = PCI_BASE_ADDRESS_0 + 4 * bar
        lo = _cfg(pdev.addr, off, 4)
        if lo & 1:  # I/O BARs are not modelled
            bar += 1
            continue
        is64 = (lo >> 1) & 3 == 2
        platform().pci_config_write(pdev.addr, off, 4, 0xFFFF_FFFF)
        size_lo = _cfg(pdev.addr, off, 4)
        platform().pci_config_write(pdev.addr, off, 4, lo)
        mask = size_lo & ~0xF
        base = lo & ~0xF
        if is64:
            hi = _cfg(pdev.addr, off + 4, 4)
            platform().pci_config_write(pdev.addr, off + 4, 4, 0xFFFF_FFFF)
            size_hi = _cfg(pdev.addr, off + 4, 4)
            platform().pci_config_write(pdev.addr, off + 4, 4, hi)
            mask |= size_hi << 32
            base |= hi << 32
            full = (1 << 64) - 1
        else:
            full = (1 << 32) - 1
        if mask:
            size = (~mask & full) + 1
            pdev.resource[bar] = Resource(base, size, lo & 0xF)
        bar += 2 if is64 else 1


def pci_scan_device(addr: PciAddr) -> PciDev | None:
    ident = _cfg(addr, PCI_VENDOR_ID, 4)
    if ident in (0xFFFF_FFFF, 0, 0xFFFF0000, 0x0000FFFF):
        return None
    class_rev = _cfg(addr, PCI_CLASS_REVISION, 4)
    pdev = PciDev(
        str(addr),
        bus=pci_bus_type,
        addr=addr,
        vendor=ident & 0xFFFF,
        device=ident >> 16,
        class_=class_rev >> 8,
        revision=class_rev & 0xFF,
        multifunction=bool(_cfg(addr, PCI_HEADER_TYPE, 1) & 0x80),
    )
    pdev.untrusted = addr in platform().firmware.external_facing
    _read_bars(pdev)
    pdev.msix_cap = _find_cap(addr, PCI_CAP_ID_MSIX)
    exp = _find_cap(addr, PCI_CAP_ID_EXP)
    if exp:
        pdev.pcie_type = (_cfg(addr, exp + 2, 2) >> 4) & 0xF
        pdev.pasid_cap = _find_ext_cap(addr, PCI_EXT_CAP_ID_PASID)
        pdev.ats_cap = _find_ext_cap(addr, PCI_EXT_CAP_ID_ATS)
        pdev.pri_cap = _find_ext_cap(addr, PCI_EXT_CAP_ID_PRI)
        if pdev.pri_cap:  # pci_pri_init
            status = _cfg(addr, pdev.pri_cap + PCI_PRI_STATUS, 2)
            pdev.pasid_required = bool(status & PCI_PRI_STATUS_PASID)
        pdev.acs_cap = _find_ext_cap(addr, PCI_EXT_CAP_ID_ACS)
    return pdev


def pci_scan_buses(buses: Sequence[tuple[int, int]]) -> list[PciDev]:
    """``pci_scan_child_bus`` over the host bridges' buses; adds each device found."""
    found: list[PciDev] = []
    for segment, bus in buses:
        for slot in range(32):
            first = pci_scan_device(PciAddr(segment, bus, slot, 0))
            if first is None:
                continue
            fns = [first]
            if first.multifunction:
                for fn in range(1, 8):
                    pdev = pci_scan_device(PciAddr(segment, bus, slot, fn))
                    if pdev is not None:
                        fns.append(pdev)
            for pdev in fns:
                pr_info(
                    f"pci {pdev.init_name}: [{pdev.vendor:04x}:{pdev.device:04x}] type 00 "
                    f"class {pdev.class_:#08x}"
                )
                for idx, res in sorted(pdev.resource.items()):
                    width = "64bit" if res.flags & 4 else "32bit"
                    pr_info(
                        f"pci {pdev.init_name}: BAR {idx} [mem {res.start:#010x}-"
                        f"{res.start + res.size - 1:#010x} {width}]"
                    )
                found.append(pdev)
    for pdev in found:
        device_add(pdev)
    return found


# -- drivers -----------------------------------------------------------------------


@define(eq=False)
class PciDriver:
    """``struct pci_driver``."""

    name: str
    id_table: Sequence[PciDeviceId]
    probe: Callable[[PciDev, PciDeviceId], None]
    remove: Callable[[PciDev], None] | None = None
    driver: DeviceDriver = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.driver = DeviceDriver(self.name, pci_bus_type)
        _pci_drivers[id(self.driver)] = self


_pci_drivers: dict[int, PciDriver] = {}


def pci_match_id(ids: Sequence[PciDeviceId], pdev: PciDev) -> PciDeviceId | None:
    return next((i for i in ids if i.matches(pdev)), None)


def _pci_match(dev: Device, drv: DeviceDriver) -> bool:
    pdrv = _pci_drivers.get(id(drv))
    return (
        isinstance(dev, PciDev)
        and pdrv is not None
        and pci_match_id(pdrv.id_table, dev) is not None
    )


def _pci_probe(dev: Device) -> None:
    pdev = to_pci_dev(dev)
    assert dev.driver is not None
    pdrv = _pci_drivers[id(dev.driver)]
    ident = pci_match_id(pdrv.id_table, pdev)
    assert ident is not None
    pdrv.probe(pdev, ident)


def _pci_remove(dev: Device) -> None:
    pdev = to_pci_dev(dev)
    assert dev.driver is not None
    pdrv = _pci_drivers[id(dev.driver)]
    if pdrv.remove is not None:
        pdrv.remove(pdev)


pci_bus_type = BusType("pci", match=_pci_match, probe=_pci_probe, remove=_pci_remove)


def reset_pci_bus() -> None:
    """Empty the current kernel's PCI bus lists (what is left after every device is
    deleted at shutdown)."""
    p = pci_bus_type.p
    p.devices.clear()
    p.drivers.clear()
    p.notifiers.clear()


def pci_register_driver(drv: PciDriver) -> None:
    _pci_drivers[id(drv.driver)] = drv
    driver_register(drv.driver)


def pci_unregister_driver(drv: PciDriver) -> None:
    driver_unregister(drv.driver)


def pci_get_devices() -> list[PciDev]:
    return [d for d in pci_bus_type.devices if isinstance(d, PciDev)]


def pci_get_domain_bus_and_slot(segment: int, bus: int, devfn: int) -> PciDev | None:
    want = PciAddr(segment, bus, devfn >> 3, devfn & 7)
    return next((d for d in pci_get_devices() if d.addr == want), None)


# -- enable / master / BARs ---------------------------------------------------------


def pci_enable_device(pdev: PciDev) -> None:
    pdev.enable_cnt += 1
    if pdev.enable_cnt == 1:
        cmd = pci_read_config_word(pdev, PCI_COMMAND)
        pci_write_config_word(pdev, PCI_COMMAND, cmd | PCI_COMMAND_MEMORY)


pci_enable_device_mem = pci_enable_device


def pci_disable_device(pdev: PciDev) -> None:
    if pdev.enable_cnt == 0:
        WARN(True, f"{pdev.init_name}: disabling already-disabled device")
        return
    pdev.enable_cnt -= 1
    if pdev.enable_cnt == 0:
        cmd = pci_read_config_word(pdev, PCI_COMMAND)
        pci_write_config_word(pdev, PCI_COMMAND, cmd & ~(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER))


def pci_set_master(pdev: PciDev) -> None:
    cmd = pci_read_config_word(pdev, PCI_COMMAND)
    pci_write_config_word(pdev, PCI_COMMAND, cmd | PCI_COMMAND_MASTER)


def pci_clear_master(pdev: PciDev) -> None:
    cmd = pci_read_config_word(pdev, PCI_COMMAND)
    pci_write_config_word(pdev, PCI_COMMAND, cmd & ~PCI_COMMAND_MASTER)


def pci_resource_start(pdev: PciDev, bar: int) -> int:
    res = pdev.resource.get(bar)
    return res.start if res else 0


def pci_resource_len(pdev: PciDev, bar: int) -> int:
    res = pdev.resource.get(bar)
    return res.size if res else 0


def pci_ioremap_bar(pdev: PciDev, bar: int) -> IoMem:
    res = pdev.resource.get(bar)
    if res is None:
        raise ENODEV(f"{pdev.init_name}: BAR {bar} not present")
    return ioremap(res.start, res.size)


# -- MSI-X -------------------------------------------------------------------------


def pci_msix_vec_count(pdev: PciDev) -> int:
    if not pdev.msix_cap:
        return 0
    return (pci_read_config_word(pdev, pdev.msix_cap + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_QSIZE) + 1


def _msix_table(pdev: PciDev) -> IoMem:
    table = pci_read_config_dword(pdev, pdev.msix_cap + PCI_MSIX_TABLE)
    bar = table & 7
    return IoMem(pci_resource_start(pdev, bar) + (table & ~7), 16 * pci_msix_vec_count(pdev))


def pci_alloc_irq_vectors(pdev: PciDev, min_vecs: int, max_vecs: int, flags: int) -> int:
    """Allocate MSI-X vectors, program the table and enable MSI-X; returns how many.
    Each vector's message comes from the device's MSI domain: remappable format
    through an interrupt-remapping unit that covers it, compatibility format without
    one (:mod:`kernel.irq_remapping`)."""
    if pdev.msix_enabled:
        raise EINVAL(f"{pdev.init_name}: MSI-X already enabled")
    if not flags & PCI_IRQ_MSIX or not pdev.msix_cap:
        raise ENOSPC(f"{pdev.init_name}: no MSI-X capability")
    avail = pci_msix_vec_count(pdev)
    nvec = min(max_vecs, avail)
    if nvec < min_vecs or min_vecs < 1:
        raise ENOSPC(f"{pdev.init_name}: {avail} MSI-X vectors, {min_vecs} required")
    ctrl = pci_read_config_word(pdev, pdev.msix_cap + PCI_MSIX_FLAGS)
    pci_write_config_word(
        pdev, pdev.msix_cap + PCI_MSIX_FLAGS, ctrl | PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL
    )
    table = _msix_table(pdev)
    irqs: list[int] = []
    try:
        for i in range(nvec):
            desc = irq_alloc(pdev.init_name)
            irqs.append(desc.irq)
            addr, data = msi_domain_alloc_irq(pdev, desc)
            entry = table + i * PCI_MSIX_ENTRY_SIZE
            entry.writel(addr & 0xFFFF_FFFF, 0)
            entry.writel(addr >> 32, 4)
            entry.writel(data, 8)
            entry.writel(0, PCI_MSIX_ENTRY_VECTOR_CTRL)
    except Exception:
        for irq in irqs:
            _msi_free(irq)
        pci_write_config_word(pdev, pdev.msix_cap + PCI_MSIX_FLAGS, ctrl)
        raise
    ctrl = pci_read_config_word(pdev, pdev.msix_cap + PCI_MSIX_FLAGS)
    pci_write_config_word(pdev, pdev.msix_cap + PCI_MSIX_FLAGS, ctrl & ~PCI_MSIX_FLAGS_MASKALL)
    pdev.irqs = irqs
    pdev.msix_enabled = True
    return nvec


def _msi_free(irq: int) -> None:
    desc = irq_to_desc(irq)
    if desc is not None:
        msi_domain_free_irq(desc)
    irq_free(irq)


def pci_irq_vector(pdev: PciDev, nr: int) -> int:
    if not 0 <= nr < len(pdev.irqs):
        raise EINVAL(f"{pdev.init_name}: no vector {nr}")
    return pdev.irqs[nr]


def pci_free_irq_vectors(pdev: PciDev) -> None:
    if not pdev.msix_enabled:
        return
    table = _msix_table(pdev)
    for i, irq in enumerate(pdev.irqs):
        (table + i * PCI_MSIX_ENTRY_SIZE).writel(1, PCI_MSIX_ENTRY_VECTOR_CTRL)
        _msi_free(irq)
    ctrl = pci_read_config_word(pdev, pdev.msix_cap + PCI_MSIX_FLAGS)
    pci_write_config_word(pdev, pdev.msix_cap + PCI_MSIX_FLAGS, ctrl & ~PCI_MSIX_FLAGS_ENABLE)
    pdev.irqs = []
    pdev.msix_enabled = False


# -- PASID / ATS / PRI / ACS (drivers/pci/ats.c, pci.c) ------------------------------------


def pci_pasid_features(pdev: PciDev) -> int:
    if not pdev.pasid_cap:
        return -EINVAL.errno
    return pci_read_config_word(pdev, pdev.pasid_cap + PCI_PASID_CAP) & (
        PCI_PASID_CAP_EXEC | PCI_PASID_CAP_PRIV
    )


def pci_max_pasids(pdev: PciDev) -> int:
    """``1 << width`` from the PASID capability; -EINVAL without one (as C returns)."""
    if not pdev.pasid_cap:
        return -EINVAL.errno
    cap = pci_read_config_word(pdev, pdev.pasid_cap + PCI_PASID_CAP)
    return 1 << ((cap >> 8) & 0x1F)


def pci_acs_enabled(pdev: PciDev, flags: int) -> bool:
    """Root-complex integrated endpoints are isolated by construction; others need
    the ACS control bits (simplified ``pci_acs_enabled``)."""
    if pdev.pcie_type == 0x9:
        return True
    if not pdev.acs_cap:
        return False
    ctrl = pci_read_config_word(pdev, pdev.acs_cap + PCI_ACS_CTRL)
    return (ctrl & flags) == flags


def pci_enable_pasid(pdev: PciDev, features: int) -> None:

    if WARN_ON(pdev.pasid_enabled):
        raise EBUSY(f"{pdev.init_name}: PASID already enabled")
    if not pdev.pasid_cap:
        raise EINVAL(f"{pdev.init_name}: no PASID capability")
    supported = pci_pasid_features(pdev)
    if supported & features != features:
        raise EINVAL(f"{pdev.init_name}: PASID features {features:#x} not supported")
    pci_write_config_word(pdev, pdev.pasid_cap + PCI_PASID_CTRL, PCI_PASID_CTRL_ENABLE | features)
    pdev.pasid_features = features
    pdev.pasid_enabled = True


def pci_disable_pasid(pdev: PciDev) -> None:

    if WARN_ON(not pdev.pasid_enabled):
        return
    pci_write_config_word(pdev, pdev.pasid_cap + PCI_PASID_CTRL, 0)
    pdev.pasid_enabled = False


def pci_ats_supported(pdev: PciDev) -> bool:
    return bool(pdev.ats_cap)


def pci_enable_ats(pdev: PciDev, ps: int) -> None:

    if not pdev.ats_cap:
        raise EINVAL(f"{pdev.init_name}: no ATS capability")
    if WARN_ON(pdev.ats_enabled):
        raise EBUSY(f"{pdev.init_name}: ATS already enabled")
    if ps < PCI_ATS_MIN_STU:
        raise EINVAL(f"{pdev.init_name}: ATS page shift {ps} below {PCI_ATS_MIN_STU}")
    pci_write_config_word(
        pdev, pdev.ats_cap + PCI_ATS_CTRL, PCI_ATS_CTRL_ENABLE | (ps - PCI_ATS_MIN_STU)
    )
    pdev.ats_stu = ps
    pdev.ats_enabled = True


def pci_disable_ats(pdev: PciDev) -> None:

    if WARN_ON(not pdev.ats_enabled):
        return
    pci_write_config_word(pdev, pdev.ats_cap + PCI_ATS_CTRL, 0)
    pdev.ats_enabled = False


def pci_pri_supported(pdev: PciDev) -> bool:
    """``pci_pri_supported``."""
    return bool(pdev.pri_cap)


def pci_enable_pri(pdev: PciDev, reqs: int) -> None:
    """``pci_enable_pri`` (drivers/pci/ats.c): EBUSY (with a WARN) if already enabled
    or (without) while the interface has not stopped; the allocation is ``reqs``
    capped at the function's capacity."""
    if WARN_ON(pdev.pri_enabled):
        raise EBUSY(f"{pdev.init_name}: PRI already enabled")
    if not pdev.pri_cap:
        raise EINVAL(f"{pdev.init_name}: no PRI capability")
    status = pci_read_config_word(pdev, pdev.pri_cap + PCI_PRI_STATUS)
    if not status & PCI_PRI_STATUS_STOPPED:
        raise EBUSY(f"{pdev.init_name}: page request interface not stopped")
    max_requests = pci_read_config_dword(pdev, pdev.pri_cap + PCI_PRI_MAX_REQ)
    reqs = min(max_requests, reqs)
    pdev.pri_reqs_alloc = reqs
    pci_write_config_dword(pdev, pdev.pri_cap + PCI_PRI_ALLOC_REQ, reqs)
    pci_write_config_word(pdev, pdev.pri_cap + PCI_PRI_CTRL, PCI_PRI_CTRL_ENABLE)
    pdev.pri_enabled = True


def pci_disable_pri(pdev: PciDev) -> None:
    """``pci_disable_pri``: clear Enable (outstanding requests still complete)."""
    if WARN_ON(not pdev.pri_enabled):
        return
    if not pdev.pri_cap:
        return
    control = pci_read_config_word(pdev, pdev.pri_cap + PCI_PRI_CTRL)
    pci_write_config_word(pdev, pdev.pri_cap + PCI_PRI_CTRL, control & ~PCI_PRI_CTRL_ENABLE)
    pdev.pri_enabled = False


def pci_reset_pri(pdev: PciDev) -> None:
    """``pci_reset_pri``: Reset (drop outstanding request state) while disabled."""
    if WARN_ON(pdev.pri_enabled):
        raise EBUSY(f"{pdev.init_name}: PRI enabled")
    if not pdev.pri_cap:
        raise EINVAL(f"{pdev.init_name}: no PRI capability")
    pci_write_config_word(pdev, pdev.pri_cap + PCI_PRI_CTRL, PCI_PRI_CTRL_RESET)


def pci_prg_resp_pasid_required(pdev: PciDev) -> bool:
    """``pci_prg_resp_pasid_required``."""
    return pdev.pasid_required
