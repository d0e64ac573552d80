"""MMIO mappings and accessors (``ioremap``, ``readl``/``writel``/``readq``/``writeq``) and the
x86 device-store instructions ``movdir64b``/``enqcmds`` (arch/x86/include/asm/special_insns.h).

An :class:`IoMem` is a ``void __iomem *``: ``base + off`` is pointer arithmetic and
``readl(base + off)`` or ``base.readl(off)`` both read 32 bits there. Accesses go
to the platform, which routes them to the device that decodes the address; an
address nobody decodes reads all-ones (master abort), as on PCI. The accessors read
the current kernel's machine straight off :data:`kernel.context.current` (what
:func:`kernel.platform.platform` returns): they run on every register access.
"""

from __future__ import annotations

from attrs import frozen

from kernel.context import KernelSlot, current
from kernel.errno import EAGAIN, EINVAL
from kernel.platform import platform


@frozen
class IoMem:
    """``void __iomem *``: a physical MMIO address plus the mapping's extent."""

    phys: int
    size: int

    def __add__(self, off: int) -> IoMem:
        return IoMem(self.phys + off, self.size - off)

    def readb(self, off: int = 0) -> int:
        return current.kernel.machine.mmio_read(self.phys + off, 1)

    def readw(self, off: int = 0) -> int:
        return current.kernel.machine.mmio_read(self.phys + off, 2)

    def readl(self, off: int = 0) -> int:
        return current.kernel.machine.mmio_read(self.phys + off, 4)

    def readq(self, off: int = 0) -> int:
        return current.kernel.machine.mmio_read(self.phys + off, 8)

    def writeb(self, value: int, off: int = 0) -> None:
        current.kernel.machine.mmio_write(self.phys + off, 1, value & 0xFF)

    def writew(self, value: int, off: int = 0) -> None:
        current.kernel.machine.mmio_write(self.phys + off, 2, value & 0xFFFF)

    def writel(self, value: int, off: int = 0) -> None:
        current.kernel.machine.mmio_write(self.phys + off, 4, value & 0xFFFF_FFFF)

    def writeq(self, value: int, off: int = 0) -> None:
        current.kernel.machine.mmio_write(self.phys + off, 8, value & 0xFFFF_FFFF_FFFF_FFFF)

    def lo_hi_writeq(self, value: int, off: int = 0) -> None:
        """``lo_hi_writeq``: low dword first, then high (include/linux/io-64-nonatomic-lo-hi.h)."""
        self.writel(value & 0xFFFF_FFFF, off)
        self.writel(value >> 32, off + 4)

    def lo_hi_readq(self, off: int = 0) -> int:
        return self.readl(off) | (self.readl(off + 4) << 32)


_MAPPINGS: KernelSlot[dict[int, IoMem]] = KernelSlot("ioremap", dict)
"""The current kernel's live ``ioremap`` regions by physical base (vmap_area list)."""


def ioremap(phys: int, size: int) -> IoMem:
    if size <= 0 or phys < 0:
        raise EINVAL(f"ioremap({phys:#x}, {size:#x})")
    m = IoMem(phys, size)
    _MAPPINGS.get()[phys] = m
    return m


def iounmap(addr: IoMem) -> None:
    _MAPPINGS.get().pop(addr.phys, None)


def live_mappings() -> list[IoMem]:
    """The current kernel's live ``ioremap`` regions."""
    return list(_MAPPINGS.get().values())


def readb(addr: IoMem) -> int:
    return addr.readb()


def readw(addr: IoMem) -> int:
    return addr.readw()


def readl(addr: IoMem) -> int:
    return addr.readl()


def readq(addr: IoMem) -> int:
    return addr.readq()


def writeb(value: int, addr: IoMem) -> None:
    addr.writeb(value)


def writew(value: int, addr: IoMem) -> None:
    addr.writew(value)


def writel(value: int, addr: IoMem) -> None:
    addr.writel(value)


def writeq(value: int, addr: IoMem) -> None:
    addr.writeq(value)


def ioread32(addr: IoMem) -> int:
    return addr.readl()


def iowrite32(value: int, addr: IoMem) -> None:
    addr.writel(value)


def movdir64b(dst: IoMem, src: bytes) -> None:
    """MOVDIR64B: a posted 64-byte direct store; the device gives no status."""
    if len(src) != 64:
        raise EINVAL(f"movdir64b needs 64 bytes, got {len(src)}")
    platform().movdir64b(dst.phys, src)


def enqcmds(dst: IoMem, src: bytes) -> int:
    """ENQCMDS: returns 0 when the device accepted the descriptor, -EAGAIN to retry."""
    if len(src) != 64:
        raise EINVAL(f"enqcmds needs 64 bytes, got {len(src)}")
    return 0 if platform().enqcmds(dst.phys, src) else -EAGAIN.errno


def enqcmd(dst: IoMem, src: bytes, pasid: int) -> int:
    """ENQCMD from a task whose IA32_PASID MSR holds ``pasid``."""
    if len(src) != 64:
        raise EINVAL(f"enqcmd needs 64 bytes, got {len(src)}")
    return 0 if platform().enqcmd(dst.phys, src, pasid) else -EAGAIN.errno
