"""Device-side DMA through the edu toy device, for checking translations end to end."""

from __future__ import annotations

from kernel.delay import udelay
from kernel.pci import PciDev, pci_ioremap_bar

EDU_BUF = 0x40000


def edu_copy(dev: PciDev, src: int, dst: int, count: int, to_ram: bool) -> int:
    """Run one edu DMA (RAM -> device buffer, or device buffer -> RAM); returns the
    DMA_ERROR register (0 = no fault)."""
    io = pci_ioremap_bar(dev, 0)
    io.writeq(src, 0x80)
    io.writeq(dst, 0x88)
    io.writeq(count, 0x90)
    io.writeq(0x1 | (0x2 if to_ram else 0), 0x98)
    udelay(5)
    err = io.readq(0xA0)
    io.writeq(err, 0xA0)
    return err


def device_read(dev: PciDev, iova: int, count: int) -> int:
    """The device reads ``count`` bytes at ``iova`` into its buffer."""
    return edu_copy(dev, iova, EDU_BUF, count, False)


def device_write(dev: PciDev, iova: int, count: int) -> int:
    """The device writes ``count`` bytes of its buffer to ``iova``."""
    return edu_copy(dev, EDU_BUF, iova, count, True)
