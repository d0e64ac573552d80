"""The DMAR table: ``dmar_table_init``/``parse_dmar_table`` of dmar.c (the header's
host address width, each DRHD and its ``struct intel_iommu`` through
``dmar_parse_one_drhd``/``alloc_iommu``), and its RMRR, ATSR and SATC structures:
parsing and the boot lines (``dmar_parse_one_rmrr``/``_atsr``/``_satc`` and
``rmrr_sanity_check`` of
drivers/iommu/intel/iommu.c, the entry lines of ``dmar_table_print_dmar_entry`` in
dmar.c, ``arch_rmrr_sanity_check`` of arch/x86), and the RMRR half of
``intel_iommu_get_resv_regions`` (Linux 6.12).

A bad RMRR (unaligned, empty, or not inside firmware-reserved memory — E820
reserved, here the machine's ``reserved_memory``) is reported with Linux's
``[Firmware Bug]`` lines and still used, as Linux does. Overlapping RMRRs are not a
firmware bug in Linux either: both are kept; the core merges them in the group's
list and maps each page once.

Since 6.5 Linux has no RMRR check in the VT-d attach path (the ``-EPERM``
"ineligible for IOMMU domain attach" refusal was removed): a device with a
non-relaxable RMRR gets ``require_direct`` from its ``IOMMU_RESV_DIRECT`` region and
the core refuses to put it behind a blocking domain (``-EINVAL``), which is what
stops user-space ownership (VFIO/iommufd) of it. That is mirrored here.

The host address width comes from the machine's DMAR table (``dmar.host_address_width``
in its description). As in 6.12 it is only checked (a width below 12 bits is
"Invalid DMAR haw" and the table is refused, so neither interrupt nor DMA
remapping starts) and printed; nothing else in the driver uses it (address widths
come from each unit's CAP.MGAW/SAGAW).

Differences from Linux: a DRHD whose unit cannot be set up (``alloc_iommu`` fails) is
left out and the others are kept (Linux stops parsing and drops the whole table);
the probe of that unit then fails with the error. No DMI strings exist, so the BIOS
vendor/version line prints ``iommulab``; device scopes name functions (no bridge scopes, so
``is_downstream_to_pci_bridge`` has nothing to match).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

from attrs import define, field

from drivers.intel_iommu.dmar import alloc_iommu, dmar_state
from drivers.intel_iommu.structs import DrhdUnit
from kernel.device import Device
from kernel.errno import EINVAL, ENODEV, KernelError
from kernel.iommu.iommu_h import IOMMU_READ, IOMMU_WRITE
from kernel.iommu.iommu_resv import (
    IOMMU_RESV_DIRECT,
    IOMMU_RESV_DIRECT_RELAXABLE,
    IommuResvRegion,
    iommu_alloc_resv_region,
)
from kernel.pci import PciDev
from kernel.platform import platform
from kernel.printk import pr_err, pr_info, pr_warn

FW_BUG = "[Firmware Bug]: "
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
DMAR_INCLUDE_PCI_ALL = 0x1
ACPI_DMAR_ALL_PORTS = 0x1
ACPI_DMAR_ATC_REQUIRED = 0x1
PCI_CLASS_SERIAL_USB = 0x0C03
PCI_BASE_CLASS_DISPLAY = 0x03


class _Scoped(Protocol):
    @property
    def device_scope(self) -> Sequence[Any]: ...
    @property
    def segment(self) -> int: ...


@define(eq=False)
class DmarRmrrUnit:
    """``struct dmar_rmrr_unit``."""

    base_address: int
    end_address: int
    segment: int
    devices: tuple[Any, ...] = field(factory=tuple)


@define(eq=False)
class DmarUnits:
    """``dmar_rmrr_units``, ``dmar_atsr_units``, ``dmar_satc_units``."""

    rmrr: list[DmarRmrrUnit] = field(factory=list)
    atsr: list[_Scoped] = field(factory=list)
    satc: list[_Scoped] = field(factory=list)


def _units() -> DmarUnits:
    st = dmar_state()
    got = st.dmar_units
    if not isinstance(got, DmarUnits):
        got = st.dmar_units = DmarUnits()
    return got


def arch_rmrr_sanity_check(base: int, end: int) -> bool:
    """``arch_rmrr_sanity_check`` (x86): the RMRR must lie inside one E820 reserved
    range; otherwise Linux's firmware-bug line and False."""
    for first, last in platform().firmware.reserved_memory:
        if first <= base and end <= last:
            return True
    pr_err(
        f"DMAR: {FW_BUG}No firmware reserved region can cover this RMRR "
        f"[{base:#018x}-{end:#018x}], contact BIOS vendor for fixes"
    )
    return False


def rmrr_sanity_check(base: int, end: int) -> bool:
    """``rmrr_sanity_check``: page-aligned, non-empty, firmware-reserved."""
    if base % PAGE_SIZE or (end + 1) % PAGE_SIZE or end <= base:
        return False
    return arch_rmrr_sanity_check(base, end)


def dmar_parse_one_rmrr(rmrr: Any) -> None:
    """``dmar_parse_one_rmrr``: a bad RMRR is reported (and would taint) but kept."""
    if not rmrr_sanity_check(rmrr.base, rmrr.end):
        pr_warn(
            f"DMAR: {FW_BUG}Your BIOS is broken; bad RMRR [{rmrr.base:#018x}-{rmrr.end:#018x}]"
            "\nBIOS vendor: iommulab; Ver: iommulab; Product Version: iommulab"
        )
    _units().rmrr.append(DmarRmrrUnit(rmrr.base, rmrr.end, rmrr.segment, tuple(rmrr.device_scope)))


def dmar_table_init() -> int:
    """``dmar_table_init`` (once per boot): the header, then every structure in table
    order, each printed (``dmar_table_print_dmar_entry``) and parsed; a DRHD gets its
    ``struct intel_iommu`` (``dmar_parse_one_drhd`` -> ``alloc_iommu``, which prints
    the unit's ``reg_base_addr`` line). 0, or -ENODEV/-EINVAL as C returns."""
    st = dmar_state()
    if st.table_parsed:
        return 0
    fw = platform().firmware
    drhds = [u for u in fw.iommus if u.table == "DMAR"]
    if not drhds:
        return -ENODEV.errno
    width = fw.host_address_width - 1  # the table's field holds HAW - 1
    if width < PAGE_SHIFT - 1:
        pr_warn("DMAR: Invalid DMAR haw")
        for u in drhds:
            st.unit_errors[u.name] = EINVAL(f"invalid DMAR host address width {width + 1}")
        return -EINVAL.errno
    pr_info(f"DMAR: Host address width {width + 1}")
    for u in drhds:
        flags = DMAR_INCLUDE_PCI_ALL if u.include_pci_all else 0
        pr_info(f"DMAR: DRHD base: {u.register_base:#016x} flags: {flags:#x}")
        try:
            alloc_iommu(cast(DrhdUnit, u))
        except KernelError as err:
            st.unit_errors[u.name] = err
    dmar_table_parse_units()
    st.table_parsed = True
    return 0


def dmar_table_parse_units() -> None:
    """The RMRR/ATSR/SATC entries of the DMAR table as ``parse_dmar_table`` walks them:
    each printed (``dmar_table_print_dmar_entry``) and parsed."""
    fw = platform().firmware
    units = _units()
    units.rmrr.clear()
    units.atsr.clear()
    units.satc.clear()
    for rmrr in fw.rmrrs:
        pr_info(f"DMAR: RMRR base: {rmrr.base:#016x} end: {rmrr.end:#016x}")
        dmar_parse_one_rmrr(rmrr)
    for atsr in fw.atsrs:
        pr_info(f"DMAR: ATSR flags: {ACPI_DMAR_ALL_PORTS if atsr.all_ports else 0:#x}")
        units.atsr.append(atsr)
    for satc in fw.satcs:
        pr_info(f"DMAR: SATC flags: 0x{ACPI_DMAR_ATC_REQUIRED if satc.atc_required else 0:x}")
        units.satc.append(satc)


def dmar_print_missing_units() -> None:
    """``intel_iommu_init``'s lines for the structure kinds the table lacks."""
    st = dmar_state()
    if st.missing_printed:
        return
    st.missing_printed = True
    units = _units()
    if not units.rmrr:
        pr_info("DMAR: No RMRR found")
    if not units.atsr:
        pr_info("DMAR: No ATSR found")
    if not units.satc:
        pr_info("DMAR: No SATC found")


def device_rmrr_is_relaxable(dev: Device) -> bool:
    """``device_rmrr_is_relaxable``: USB and graphics devices may leave their RMRR."""
    if not isinstance(dev, PciDev):
        return False
    return (dev.class_ >> 8) == PCI_CLASS_SERIAL_USB or (dev.class_ >> 16) == PCI_BASE_CLASS_DISPLAY


def intel_rmrr_resv_regions(dev: Device, head: list[IommuResvRegion]) -> None:
    """The RMRR loop of ``intel_iommu_get_resv_regions``: one DIRECT (or, for a
    relaxable device, DIRECT_RELAXABLE) region per RMRR whose scope names ``dev``."""
    if not isinstance(dev, PciDev):
        return
    prot = IOMMU_READ | IOMMU_WRITE
    for rmrr in _units().rmrr:
        if rmrr.segment != dev.addr.segment or not any(
            (a.bus, a.dev, a.fn) == (dev.addr.bus, dev.addr.dev, dev.addr.fn) for a in rmrr.devices
        ):
            continue
        kind = IOMMU_RESV_DIRECT_RELAXABLE if device_rmrr_is_relaxable(dev) else IOMMU_RESV_DIRECT
        length = rmrr.end_address - rmrr.base_address + 1
        head.append(iommu_alloc_resv_region(rmrr.base_address, length, prot, kind))
