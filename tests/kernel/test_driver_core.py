"""Device model, PCI core, MMIO, MSI-X interrupts and waits, exercised by a real driver."""

from __future__ import annotations

import pytest

from hw.edu import EDU_BUF_ADDR
from kernel.boot import Kernel
from kernel.device import (
    BUS_NOTIFY_BOUND_DRIVER,
    BUS_NOTIFY_UNBOUND_DRIVER,
    Device,
    bus_register_notifier,
)
from kernel.errno import EBUSY, EINVAL, ENODEV, ETIMEDOUT
from kernel.io import readl, writel
from kernel.irq import irq_controller, request_irq
from kernel.mm import GFP_KERNEL, kfree, kzalloc, memory_read, memory_write, virt_to_phys
from kernel.pci import (
    PCI_EXT_CAP_ID_PASID,
    PciDeviceId,
    PciDriver,
    pci_enable_ats,
    pci_enable_pasid,
    pci_find_ext_capability,
    pci_get_devices,
    pci_ioremap_bar,
    pci_max_pasids,
    pci_register_driver,
    pci_unregister_driver,
)
from tests.kernel.edu_driver import Edu, edu_dma, edu_driver, edu_wait_idle


def bound_edu(k: Kernel) -> Edu:
    pci_register_driver(edu_driver)
    (pdev,) = pci_get_devices()
    edu: Edu = pdev.driver_data
    return edu


def test_driver_binds_to_matching_device_and_logs(toy_kernel: Kernel) -> None:
    events: list[int] = []
    from kernel.pci import pci_bus_type

    bus_register_notifier(pci_bus_type, lambda ev, dev: events.append(ev))
    edu = bound_edu(toy_kernel)
    assert edu.pdev.driver is edu_driver.driver
    assert "edu 0000:00:03.0: edu v0x100 ready" in toy_kernel.dmesg()
    pci_unregister_driver(edu_driver)
    assert edu.pdev.driver is None
    assert BUS_NOTIFY_BOUND_DRIVER in events and BUS_NOTIFY_UNBOUND_DRIVER in events


def test_device_dma_with_completion_interrupt(toy_kernel: Kernel) -> None:
    edu = bound_edu(toy_kernel)
    buf = kzalloc(64, GFP_KERNEL)
    assert buf is not None
    memory_write(buf, b"through the edu buffer")
    assert edu_dma(edu, virt_to_phys(buf), EDU_BUF_ADDR, 22, to_ram=False)
    assert edu_dma(edu, EDU_BUF_ADDR, virt_to_phys(buf) + 32, 22, to_ram=True)
    assert memory_read(buf + 32, 22) == b"through the edu buffer"
    assert edu.irqs_seen == 2
    assert edu_wait_idle(edu) == 0x6  # start bit cleared; direction and irq bits kept
    kfree(buf)
    pci_unregister_driver(edu_driver)


def test_wait_times_out_in_virtual_time_when_no_interrupt_comes(toy_kernel: Kernel) -> None:
    from kernel.delay import Completion, wait_for_completion_timeout

    c = Completion()
    t0 = toy_kernel.machine.clock.now
    assert wait_for_completion_timeout(c, 5) == 0
    assert toy_kernel.machine.clock.now - t0 == 5_000_000


def test_poll_timeout_raises_etimedout(toy_kernel: Kernel) -> None:
    from kernel.delay import readx_poll_timeout

    with pytest.raises(ETIMEDOUT, match="poll timed out"):
        readx_poll_timeout(lambda: 0, lambda v: v == 1, 1, 50)


def test_probe_failure_leaves_device_unbound_and_logs_errno(toy_kernel: Kernel) -> None:
    def bad_probe(pdev: object, ident: object) -> None:
        raise ENODEV("not today")

    drv = PciDriver("picky", [PciDeviceId(0x1234)], bad_probe)
    pci_register_driver(drv)
    (pdev,) = pci_get_devices()
    assert pdev.driver is None
    assert "probe with driver picky failed with error -19" in toy_kernel.dmesg()
    with pytest.raises(EBUSY):
        pci_register_driver(drv)


def test_msi_to_an_unknown_vector_is_spurious(toy_kernel: Kernel) -> None:
    from kernel.irq import deliver_msi

    deliver_msi(0xFEE0_0000, 0xEE)
    assert irq_controller().spurious == [(0xFEE0_0000, 0xEE)]
    assert "No irq handler for vector" in toy_kernel.dmesg()


def test_request_irq_on_busy_line_is_ebusy(toy_kernel: Kernel) -> None:
    edu = bound_edu(toy_kernel)
    with pytest.raises(EBUSY):
        request_irq(edu.irq, lambda i, d: 1, 0, "second", None)
    with pytest.raises(EINVAL):
        request_irq(9999, lambda i, d: 1, 0, "nowhere", None)
    pci_unregister_driver(edu_driver)


def test_mmio_through_ioremap_and_c_style_accessors(toy_kernel: Kernel) -> None:
    (pdev,) = pci_get_devices()
    from kernel.pci import pci_enable_device

    pci_enable_device(pdev)
    regs = pci_ioremap_bar(pdev, 0)
    writel(0x1234, regs + 4)
    assert readl(regs + 4) == ~0x1234 & 0xFFFF_FFFF
    assert regs.readq(0x1000_0000) == (1 << 64) - 1  # past the BAR: master abort


def test_pasid_and_ats_helpers_refuse_devices_without_the_capability(toy_kernel: Kernel) -> None:
    (pdev,) = pci_get_devices()
    assert pci_find_ext_capability(pdev, PCI_EXT_CAP_ID_PASID) == 0
    assert pci_max_pasids(pdev) == -22
    with pytest.raises(EINVAL, match="no PASID capability"):
        pci_enable_pasid(pdev, 0)
    with pytest.raises(EINVAL, match="no ATS capability"):
        pci_enable_ats(pdev, 12)


def test_device_name_and_prefix() -> None:
    d = Device("0000:00:01.0")
    assert d.dev_prefix() == "0000:00:01.0"
