"""PCI subsystem initcall: enumerate the host bridges' buses (``pci_subsys_init``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernel.device import device_del
from kernel.init import initcall
from kernel.module import InitLevel
from kernel.pci import pci_bus_type, pci_get_devices, pci_scan_buses, reset_pci_bus

if TYPE_CHECKING:
    from kernel.boot import Kernel


def _pci_teardown(k: Kernel) -> None:
    for pdev in reversed(pci_get_devices()):
        device_del(pdev)
    reset_pci_bus()


@initcall(InitLevel.SUBSYS, "pci_subsys_init", _pci_teardown)
def pci_subsys_init(k: Kernel) -> None:
    reset_pci_bus()
    buses = k.machine.firmware.pci_buses
    for seg, bus in buses:
        from kernel.printk import pr_info

        pr_info(f"PCI host bridge to bus {seg:04x}:{bus:02x}")
    pci_scan_buses(buses)
    k.subsys["pci"] = pci_bus_type
