"""QEMU's ``edu`` teaching device (PCI 1234:11e8): a tiny DMA engine for tutorials and tests.

Register map as QEMU's ``docs/specs/edu.rst`` gives it (BAR0, 1 MiB):

0x00 RO  identification 0x010000ed
0x04 RW  liveness check: reads back the bitwise inverse of what was written
0x08 RW  factorial: writing n computes n! (status bit 0 busy until a clock event)
0x20 RW  status: bit 0 computing (RO), bit 7 raise interrupt when factorial done
0x24 RO  interrupt status
0x60 WO  interrupt raise (ORs into interrupt status)
0x64 WO  interrupt acknowledge (clears bits in interrupt status)
0x80 RW  DMA source address        0x88 RW DMA destination address
0x90 RW  DMA transfer count        0x98 RW DMA command: bit 0 start, bit 1 direction
         (0: RAM -> device buffer, 1: device buffer -> RAM), bit 2 raise interrupt 0x100

The DMA buffer is 4 KiB at device address 0x40000. Differences from QEMU: the
interrupt is MSI-X vector 0 (QEMU uses MSI/INTx), and a DMA that faults sets
bit 0 of the iommulab-specific register 0xA0 (``DMA_ERROR``) with the faulting
address in 0xA8, instead of being silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hw.bus import PciAddr
from hw.pci import PciFunction

EDU_ID = 0x010000ED
EDU_BUF_ADDR = 0x40000
EDU_BUF_SIZE = 4096
EDU_DMA_DELAY_NS = 1_000
EDU_FACT_DELAY_NS = 500

REG_ID = 0x00
REG_LIVENESS = 0x04
REG_FACT = 0x08
REG_STATUS = 0x20
REG_IRQ_STATUS = 0x24
REG_IRQ_RAISE = 0x60
REG_IRQ_ACK = 0x64
REG_DMA_SRC = 0x80
REG_DMA_DST = 0x88
REG_DMA_COUNT = 0x90
REG_DMA_CMD = 0x98
REG_DMA_ERROR = 0xA0
REG_DMA_FAULT_ADDR = 0xA8

DMA_CMD_START = 0x1
DMA_CMD_TO_RAM = 0x2
DMA_CMD_IRQ = 0x4
STATUS_COMPUTING = 0x1
STATUS_IRQFACT = 0x80
DMA_IRQ = 0x100
FACT_IRQ = 0x1


class EduDevice(PciFunction):
    vendor_id = 0x1234
    device_id = 0x11E8
    class_code = 0x00FF00

    def __init__(self, addr: PciAddr, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(addr)
        if config:
            raise ValueError(f"edu device takes no config, got {sorted(config)}")
        self.add_bar(0, 1 << 20, is64=False)
        self.add_pcie_cap()
        self.add_msix(1, bar=0, table=0x1000, pba=0x1800)
        self.buffer = bytearray(EDU_BUF_SIZE)
        self.regs: dict[int, int] = dict.fromkeys(
            (
                REG_LIVENESS,
                REG_FACT,
                REG_STATUS,
                REG_IRQ_STATUS,
                REG_DMA_SRC,
                REG_DMA_DST,
                REG_DMA_COUNT,
                REG_DMA_CMD,
                REG_DMA_ERROR,
                REG_DMA_FAULT_ADDR,
            ),
            0,
        )
        self.dma_count = 0

    def bar_read(self, bar: int, offset: int, size: int) -> int:
        if offset == REG_ID and size == 4:
            return EDU_ID
        if offset == REG_LIVENESS and size == 4:
            return ~self.regs[REG_LIVENESS] & 0xFFFF_FFFF
        if offset in self.regs and size in (4, 8):
            return self.regs[offset] & ((1 << (8 * size)) - 1)
        return 0

    def bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        if size not in (4, 8):
            return
        if offset == REG_FACT and not self.regs[REG_STATUS] & STATUS_COMPUTING:
            self.regs[REG_FACT] = value
            self.regs[REG_STATUS] |= STATUS_COMPUTING
            assert self.machine is not None
            self.machine.clock.schedule(EDU_FACT_DELAY_NS, self._factorial, "edu:fact")
        elif offset == REG_STATUS:
            keep = self.regs[REG_STATUS] & STATUS_COMPUTING
            self.regs[REG_STATUS] = keep | (value & STATUS_IRQFACT)
        elif offset == REG_IRQ_RAISE:
            self._raise(value)
        elif offset == REG_IRQ_ACK:
            self.regs[REG_IRQ_STATUS] &= ~value
        elif offset == REG_DMA_CMD:
            if self.regs[REG_DMA_CMD] & DMA_CMD_START:
                return  # busy: QEMU ignores a new command while one runs
            self.regs[REG_DMA_CMD] = value
            if value & DMA_CMD_START and self.machine is not None:
                self.machine.clock.schedule(EDU_DMA_DELAY_NS, self._dma, "edu:dma")
        elif offset in (REG_LIVENESS, REG_DMA_SRC, REG_DMA_DST, REG_DMA_COUNT, REG_DMA_ERROR):
            if offset == REG_DMA_ERROR:
                self.regs[offset] &= ~value  # write 1 to clear
            else:
                self.regs[offset] = value

    def _raise(self, bits: int) -> None:
        self.regs[REG_IRQ_STATUS] |= bits
        self.msix_notify(0)

    def _factorial(self) -> None:
        n = self.regs[REG_FACT]
        acc = 1
        for i in range(2, min(n, 20) + 1):
            acc *= i
        self.regs[REG_FACT] = acc & 0xFFFF_FFFF
        self.regs[REG_STATUS] &= ~STATUS_COMPUTING
        if self.regs[REG_STATUS] & STATUS_IRQFACT:
            self._raise(FACT_IRQ)

    def _in_buffer(self, addr: int, count: int) -> int | None:
        off = addr - EDU_BUF_ADDR
        if 0 <= off and off + count <= EDU_BUF_SIZE:
            return off
        return None

    def _dma(self) -> None:
        cmd = self.regs[REG_DMA_CMD]
        src, dst, count = self.regs[REG_DMA_SRC], self.regs[REG_DMA_DST], self.regs[REG_DMA_COUNT]
        fault = None
        if cmd & DMA_CMD_TO_RAM:
            off = self._in_buffer(src, count)
            if off is not None:
                _, fault = self.dma_write(None, False, dst, self.buffer[off : off + count])
        else:
            off = self._in_buffer(dst, count)
            if off is not None:
                data, fault = self.dma_read(None, False, src, count)
                self.buffer[off : off + len(data)] = data
        if off is None:
            self.regs[REG_DMA_ERROR] |= 0x2  # device-buffer range error
        if fault is not None:
            self.regs[REG_DMA_ERROR] |= 0x1
            self.regs[REG_DMA_FAULT_ADDR] = fault.addr
        self.dma_count += 1
        self.regs[REG_DMA_CMD] = cmd & ~DMA_CMD_START
        if cmd & DMA_CMD_IRQ:
            self._raise(DMA_IRQ)
