"""A small PCI driver for the edu toy device, used to test the kernel core the way
a driver author would use it (probe, BAR mapping, MSI-X, interrupt handler)."""

from __future__ import annotations

from attrs import define, field

from kernel.delay import Completion, complete, readx_poll_timeout, wait_for_completion_timeout
from kernel.device import dev_get_drvdata, dev_set_drvdata
from kernel.io import IoMem
from kernel.irq import IRQ_HANDLED, IRQ_NONE, free_irq, request_irq
from kernel.pci import (
    PCI_IRQ_MSIX,
    PciDev,
    PciDeviceId,
    PciDriver,
    pci_alloc_irq_vectors,
    pci_disable_device,
    pci_enable_device,
    pci_free_irq_vectors,
    pci_ioremap_bar,
    pci_irq_vector,
    pci_set_master,
)
from kernel.printk import dev_info

REG_IRQ_STATUS, REG_IRQ_RAISE, REG_IRQ_ACK = 0x24, 0x60, 0x64
REG_SRC, REG_DST, REG_COUNT, REG_CMD = 0x80, 0x88, 0x90, 0x98


@define(eq=False)
class Edu:
    pdev: PciDev
    regs: IoMem
    irq: int
    done: Completion = field(factory=Completion)
    irqs_seen: int = 0


def edu_irq(irq: int, edu: Edu) -> int:
    status = edu.regs.readl(REG_IRQ_STATUS)
    if not status:
        return IRQ_NONE
    edu.regs.writel(status, REG_IRQ_ACK)
    edu.irqs_seen += 1
    complete(edu.done)
    return IRQ_HANDLED


def edu_probe(pdev: PciDev, ident: PciDeviceId) -> None:
    pci_enable_device(pdev)
    pci_set_master(pdev)
    regs = pci_ioremap_bar(pdev, 0)
    pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_MSIX)
    edu = Edu(pdev, regs, pci_irq_vector(pdev, 0))
    request_irq(edu.irq, edu_irq, 0, "edu", edu)
    dev_set_drvdata(pdev, edu)
    dev_info(pdev, f"edu v{regs.readl(0) >> 16:#x} ready")


def edu_remove(pdev: PciDev) -> None:
    edu: Edu = dev_get_drvdata(pdev)
    free_irq(edu.irq, edu)
    pci_free_irq_vectors(pdev)
    pci_disable_device(pdev)


def edu_dma(edu: Edu, src: int, dst: int, count: int, to_ram: bool) -> bool:
    """Start a DMA with the completion interrupt and wait for it (1 ms timeout)."""
    edu.regs.writeq(src, REG_SRC)
    edu.regs.writeq(dst, REG_DST)
    edu.regs.writeq(count, REG_COUNT)
    edu.regs.writeq(0x1 | 0x4 | (0x2 if to_ram else 0), REG_CMD)
    return wait_for_completion_timeout(edu.done, 1) > 0


def edu_wait_idle(edu: Edu) -> int:
    return readx_poll_timeout(lambda: edu.regs.readl(REG_CMD), lambda v: not v & 1, 1, 100)


edu_driver = PciDriver("edu", [PciDeviceId(0x1234, 0x11E8)], edu_probe, edu_remove)
