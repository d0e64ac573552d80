"""PCI functions: type-0 config space, BARs, capability lists, MSI-X.

Config space is 4 KiB of bytes with a per-byte write mask and a per-byte
write-1-to-clear mask (as PCI hardware behaves): reads return the bytes, writes
change only writable bits. BAR sizing works the standard way (write all-ones,
read back the size mask). Capabilities are placed by :meth:`PciFunction.add_cap`
(standard list from 0x40) and :meth:`PciFunction.add_ext_cap` (extended list
from 0x100).

A device model subclasses :class:`PciFunction` and implements
:meth:`bar_read`/:meth:`bar_write`; the MSI-X table and PBA are decoded here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import define

from hw.ats import AtsAgent, AtsPort
from hw.bus import DMA_FAULT_BUS, DmaFault, DmaResult, PciAddr
from hw.pri import (
    PCI_PRI_CTRL,
    PCI_PRI_STATUS,
    PCI_PRI_STATUS_PASID,
    PCI_PRI_STATUS_STOPPED,
    PriPort,
)
from hw.translation import INTR_HI, INTR_LO

if TYPE_CHECKING:
    from hw.machine import Machine

# Config header offsets (PCI Local Bus 3.0 §6.1)
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_REVISION_ID = 0x08
PCI_CLASS_PROG = 0x09
PCI_CLASS_DEVICE = 0x0A
PCI_HEADER_TYPE = 0x0E
PCI_BASE_ADDRESS_0 = 0x10
PCI_SUBSYSTEM_VENDOR_ID = 0x2C
PCI_SUBSYSTEM_ID = 0x2E
PCI_CAPABILITY_LIST = 0x34
PCI_INTERRUPT_PIN = 0x3D

PCI_COMMAND_MEMORY = 0x2
PCI_COMMAND_MASTER = 0x4
PCI_STATUS_CAP_LIST = 0x10

# Capability IDs
PCI_CAP_ID_MSI = 0x05
PCI_CAP_ID_EXP = 0x10
PCI_CAP_ID_MSIX = 0x11


def _msix_access_ok(offset: int, size: int, table_len: int) -> bool:
    """PCIe (6.1.4.2, MSI-X table and PBA): software must use naturally aligned DWORD
    or QWORD accesses; anything else is undefined. The model completes such a read
    with all ones and drops such a write (as an Unsupported Request would), and never
    lets an access reach past the table's last entry, so a write can never change
    the table's size."""
    return size in (4, 8) and offset % size == 0 and offset + size <= table_len


PCI_EXT_CAP_ID_ACS = 0x0D
PCI_EXT_CAP_ID_ATS = 0x0F
PCI_EXT_CAP_ID_PRI = 0x13
PCI_EXT_CAP_ID_PASID = 0x1B

PCI_EXP_TYPE_ENDPOINT = 0x0
PCI_EXP_TYPE_RC_END = 0x9

CONFIG_SIZE = 4096


@define(slots=True)
class Bar:
    index: int
    size: int
    is64: bool = True
    prefetch: bool = False

    def __attrs_post_init__(self) -> None:
        if self.size < 16 or self.size & (self.size - 1):
            raise ValueError(f"BAR{self.index} size {self.size:#x} must be a power of two >= 16")


class PciFunction:
    """One PCI function. Subclasses model the device behind the BARs."""

    vendor_id = 0xFFFF
    device_id = 0xFFFF
    class_code = 0x000000

    def __init__(self, addr: PciAddr) -> None:
        self.addr = addr
        self.config = bytearray(CONFIG_SIZE)
        self.wmask = bytearray(CONFIG_SIZE)
        self.w1cmask = bytearray(CONFIG_SIZE)
        self.bars: dict[int, Bar] = {}
        self.machine: Machine | None = None
        self._last_cap = 0
        self._last_ext = 0
        self._cap_len: dict[int, int] = {}
        self._ext_len: dict[int, int] = {}
        self._cfg_write_hooks: list[Callable[[int, int], None]] = []
        self.msix_cap = 0
        self.msix_bar = -1
        self.msix_table = 0
        self.msix_pba = 0
        self.msix_vectors = 0
        self._msix_entries: bytearray = bytearray()
        self._msix_pending: set[int] = set()
        self.msi_sent = 0
        self.ats_port: AtsPort | None = None
        """Set while ATS is enabled and the IOMMU in front answers Translation Requests."""
        self._ats_ctl = 0
        self.pri: PriPort | None = None
        """The Page Request Interface, when the function has the PRI capability."""
        self._set16(PCI_VENDOR_ID, self.vendor_id)
        self._set16(PCI_DEVICE_ID, self.device_id)
        self._set32(PCI_REVISION_ID, self.class_code << 8)
        self.wmask[PCI_COMMAND] = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER

    # -- raw helpers ---------------------------------------------------------
    def _get(self, off: int, size: int) -> int:
        return int.from_bytes(self.config[off : off + size], "little")

    def _set(self, off: int, size: int, value: int) -> None:
        self.config[off : off + size] = value.to_bytes(size, "little")

    def _set16(self, off: int, value: int) -> None:
        self._set(off, 2, value)

    def _set32(self, off: int, value: int) -> None:
        self._set(off, 4, value)

    def _mask(self, off: int, size: int, wmask: int, w1c: int = 0) -> None:
        self.wmask[off : off + size] = wmask.to_bytes(size, "little")
        self.w1cmask[off : off + size] = w1c.to_bytes(size, "little")

    # -- layout (used by subclasses' constructors) ----------------------------
    def add_bar(self, index: int, size: int, is64: bool = True, prefetch: bool = False) -> Bar:
        if index in self.bars or not 0 <= index <= 5 or (is64 and index == 5):
            raise ValueError(f"BAR{index} unavailable")
        bar = Bar(index, size, is64, prefetch)
        self.bars[index] = bar
        off = PCI_BASE_ADDRESS_0 + 4 * index
        flags = (0x4 if is64 else 0) | (0x8 if prefetch else 0)
        self._set32(off, flags)
        addr_mask = ~(size - 1) & 0xFFFF_FFFF_FFFF_FFFF
        self._mask(off, 4, addr_mask & 0xFFFF_FFF0)
        if is64:
            self._mask(off + 4, 4, addr_mask >> 32)
        return bar

    def add_cap(self, cap_id: int, body: bytes, wmask: bytes | None = None) -> int:
        """Append a standard capability; ``body`` follows the 2-byte header."""
        off = 0x40
        if self._last_cap:
            off = (self._last_cap + 2 + self._cap_len[self._last_cap] + 3) & ~3
        if off + 2 + len(body) > 0x100:
            raise ValueError("standard capability space exhausted")
        self.config[off] = cap_id
        self.config[off + 1] = 0
        self.config[off + 2 : off + 2 + len(body)] = body
        if wmask:
            self.wmask[off + 2 : off + 2 + len(wmask)] = wmask
        if self._last_cap:
            self.config[self._last_cap + 1] = off
        else:
            self.config[PCI_CAPABILITY_LIST] = off
            self._set16(PCI_STATUS, self._get(PCI_STATUS, 2) | PCI_STATUS_CAP_LIST)
        self._cap_len[off] = len(body)
        self._last_cap = off
        return off

    def add_ext_cap(
        self, cap_id: int, version: int, body: bytes, wmask: bytes | None = None
    ) -> int:
        """Append an extended capability; ``body`` follows the 4-byte header."""
        if self._last_ext:
            prev_len = self._ext_len[self._last_ext]
            off = (self._last_ext + 4 + prev_len + 3) & ~3
        else:
            off = 0x100
        if off + 4 + len(body) > CONFIG_SIZE:
            raise ValueError("extended capability space exhausted")
        self._set32(off, cap_id | (version << 16))
        self.config[off + 4 : off + 4 + len(body)] = body
        if wmask:
            self.wmask[off + 4 : off + 4 + len(wmask)] = wmask
        if self._last_ext:
            hdr = self._get(self._last_ext, 4)
            self._set32(self._last_ext, (hdr & 0xFFFFF) | (off << 20))
        self._ext_len[off] = len(body)
        self._last_ext = off
        return off

    def add_pcie_cap(self, port_type: int = PCI_EXP_TYPE_RC_END) -> int:
        body = bytearray(0x3A)
        body[0:2] = (0x2 | (port_type << 4)).to_bytes(2, "little")  # version 2
        return self.add_cap(PCI_CAP_ID_EXP, bytes(body))

    def add_msix(self, vectors: int, bar: int, table: int, pba: int) -> int:
        if not 1 <= vectors <= 2048 or bar not in self.bars:
            raise ValueError("bad MSI-X layout")
        body = bytearray(10)
        body[0:2] = (vectors - 1).to_bytes(2, "little")
        body[2:6] = (table | bar).to_bytes(4, "little")
        body[6:10] = (pba | bar).to_bytes(4, "little")
        off = self.add_cap(PCI_CAP_ID_MSIX, bytes(body), wmask=b"\x00\xc0")
        self.msix_cap = off
        self.msix_bar = bar
        self.msix_table = table
        self.msix_pba = pba
        self.msix_vectors = vectors
        self._msix_entries = bytearray(16 * vectors)
        for v in range(vectors):  # every vector starts masked
            self._msix_entries[16 * v + 12] = 1
        return off

    def add_pasid_cap(self, width: int, exec_perm: bool = False, priv: bool = True) -> int:
        cap = (0x2 if exec_perm else 0) | (0x4 if priv else 0) | (width << 8)
        ctl_mask = 0x1 | (0x2 if exec_perm else 0) | (0x4 if priv else 0)
        body = cap.to_bytes(2, "little") + b"\x00\x00"
        return self.add_ext_cap(PCI_EXT_CAP_ID_PASID, 1, body, b"\x00\x00" + bytes([ctl_mask, 0]))

    def add_ats_cap(self, inv_queue_depth: int = 0, page_aligned: bool = True) -> int:
        cap = (inv_queue_depth & 0x1F) | (0x20 if page_aligned else 0)
        body = cap.to_bytes(2, "little") + b"\x00\x00"
        off = self.add_ext_cap(PCI_EXT_CAP_ID_ATS, 1, body, b"\x00\x00\x1f\x80")
        self._ats_ctl = off + 6
        return off

    def add_pri_cap(self, outstanding: int = 512, pasid_required: bool = True) -> int:
        """The PRI extended capability (PCIe Base spec chapter 10): Control (Enable,
        Reset), Status (RF and UPRGI RW1C, Stopped set at reset, PRG Response PASID
        Required fixed by ``pasid_required``), the RO capacity ``outstanding`` and the
        RW allocation. Its behaviour is :class:`hw.pri.PriPort`'s."""
        body = bytearray(12)
        status = PCI_PRI_STATUS_STOPPED | (PCI_PRI_STATUS_PASID if pasid_required else 0)
        body[2:4] = status.to_bytes(2, "little")
        body[4:8] = outstanding.to_bytes(4, "little")
        wmask = bytearray(12)
        wmask[0] = 0x3
        wmask[8:12] = b"\xff\xff\xff\xff"
        off = self.add_ext_cap(PCI_EXT_CAP_ID_PRI, 1, bytes(body), bytes(wmask))
        self.w1cmask[off + PCI_PRI_STATUS] = 0x3
        self.pri = PriPort(self, off)
        return off

    def add_acs_cap(self, caps: int = 0x1F) -> int:
        body = caps.to_bytes(2, "little") + b"\x00\x00"
        return self.add_ext_cap(
            PCI_EXT_CAP_ID_ACS, 1, body, b"\x00\x00" + caps.to_bytes(2, "little")
        )

    def find_ext_cap(self, cap_id: int) -> int:
        off = 0x100
        while off:
            hdr = self._get(off, 4)
            if hdr & 0xFFFF == cap_id:
                return off
            off = hdr >> 20
        return 0

    # -- config access (the bus side) ----------------------------------------
    def config_read(self, offset: int, size: int) -> int:
        if size not in (1, 2, 4) or offset % size or offset + size > CONFIG_SIZE:
            return (1 << (8 * size)) - 1 if size in (1, 2, 4) else 0xFFFF_FFFF
        return self._get(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        if size not in (1, 2, 4) or offset % size or offset + size > CONFIG_SIZE:
            return
        for i in range(size):
            byte = (value >> (8 * i)) & 0xFF
            o = offset + i
            wm = self.wmask[o]
            w1c = self.w1cmask[o]
            cur = self.config[o]
            cur = (cur & ~wm) | (byte & wm)
            cur &= ~(byte & w1c) & 0xFF
            self.config[o] = cur
        for hook in self._cfg_write_hooks:
            hook(offset, size)
        if self._ats_ctl and offset < self._ats_ctl + 2 and offset + size > self._ats_ctl:
            self._ats_sync()
        pri = self.pri
        if pri is not None:
            ctl = pri.cap + PCI_PRI_CTRL
            if offset < ctl + 2 and offset + size > ctl:
                pri.control_written()
        if self.machine is not None and (
            offset < PCI_BASE_ADDRESS_0 + 24 and offset + size > PCI_COMMAND
        ):
            self.machine.remap_bars()

    def on_config_write(self, hook: Callable[[int, int], None]) -> None:
        self._cfg_write_hooks.append(hook)

    # -- decoded state ---------------------------------------------------------
    @property
    def memory_enabled(self) -> bool:
        return bool(self.config[PCI_COMMAND] & PCI_COMMAND_MEMORY)

    @property
    def bus_master(self) -> bool:
        return bool(self.config[PCI_COMMAND] & PCI_COMMAND_MASTER)

    def bar_base(self, index: int) -> int:
        bar = self.bars[index]
        off = PCI_BASE_ADDRESS_0 + 4 * index
        base = self._get(off, 4) & ~0xF
        if bar.is64:
            base |= self._get(off + 4, 4) << 32
        return base

    def ext_cap_ctl(self, cap_id: int) -> int:
        """The 16-bit control register of a PASID/ATS/PRI/ACS capability (0 if absent)."""
        off = self.find_ext_cap(cap_id)
        if not off:
            return 0
        return self._get(off + (4 if cap_id == PCI_EXT_CAP_ID_PRI else 6), 2)

    @property
    def pasid_enabled(self) -> bool:
        return bool(self.ext_cap_ctl(PCI_EXT_CAP_ID_PASID) & 0x1)

    @property
    def pasid_priv_enabled(self) -> bool:
        return bool(self.ext_cap_ctl(PCI_EXT_CAP_ID_PASID) & 0x4)

    @property
    def ats_enabled(self) -> bool:
        return bool(self.ext_cap_ctl(PCI_EXT_CAP_ID_ATS) & 0x8000)

    @property
    def pri_enabled(self) -> bool:
        return bool(self.ext_cap_ctl(PCI_EXT_CAP_ID_PRI) & 0x1)

    # -- MMIO (the bus side) ---------------------------------------------------
    def mmio_read(self, bar: int, offset: int, size: int) -> int:
        if bar == self.msix_bar:
            if self.msix_table <= offset < self.msix_table + 16 * self.msix_vectors:
                o = offset - self.msix_table
                if not _msix_access_ok(o, size, len(self._msix_entries)):
                    return (1 << (8 * size)) - 1
                return int.from_bytes(self._msix_entries[o : o + size], "little")
            pba_len = 8 * ((self.msix_vectors + 63) // 64)
            if self.msix_pba <= offset < self.msix_pba + pba_len:
                bits = sum(1 << v for v in self._msix_pending)
                return (bits >> (8 * (offset - self.msix_pba))) & ((1 << (8 * size)) - 1)
        return self.bar_read(bar, offset, size)

    def mmio_write(self, bar: int, offset: int, size: int, value: int) -> None:
        if bar == self.msix_bar and (
            self.msix_table <= offset < self.msix_table + 16 * self.msix_vectors
        ):
            o = offset - self.msix_table
            if not _msix_access_ok(o, size, len(self._msix_entries)):
                return
            self._msix_entries[o : o + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(
                size, "little"
            )
            vec = o // 16
            if vec in self._msix_pending and not self._msix_masked(vec):
                self._msix_pending.discard(vec)
                self._deliver(vec)
            return
        self.bar_write(bar, offset, size, value)

    def bar_read(self, bar: int, offset: int, size: int) -> int:
        """Device registers; subclasses override. Unclaimed offsets read 0."""
        return 0

    def bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        """Device registers; subclasses override."""

    def portal_write(self, bar: int, offset: int, data: bytes, enqcmd: bool) -> bool:
        """A 64-byte MOVDIR64B (``enqcmd`` False) or ENQCMD(S) store to a BAR.

        Returns whether the device accepted it (meaningful for ENQCMD only).
        Devices without portals drop the store.
        """
        return False

    # -- ATS (PCIe Base spec chapter 10; hw.ats) -----------------------------------
    def _ats_sync(self) -> None:
        """ATS Control changed: open an :class:`~hw.ats.AtsPort` when ATS got enabled
        and the IOMMU in front of this function answers Translation Requests; drop the
        ATC when it got disabled (PCIe leaves ATC contents undefined then)."""
        on = self.ats_enabled
        port = self.ats_port
        if on and port is None and self.machine is not None:
            agent = self.machine.iommu_for(self.addr)
            if agent is not None and hasattr(agent, "ats_translate"):
                ats_agent: AtsAgent = agent  # type: ignore[assignment]
                port = self.ats_port = AtsPort(self, ats_agent)
                ats_agent.ats_bind(self.addr.rid, port.atc)
        elif not on and port is not None:
            self.ats_port = None
            port.close()

    # -- DMA (device-initiated) ----------------------------------------------------
    def dma_translate(
        self, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult:
        """Translate a DMA access of this function; no DMA without bus mastering.
        With ATS enabled the access goes through the function's ATC as translated
        requests (:meth:`hw.ats.AtsPort.translate`)."""
        if self.machine is None or not self.bus_master:
            return DmaResult((), DmaFault(addr, DMA_FAULT_BUS, write, "bus master disabled"))
        port = self.ats_port
        if port is not None and not (pasid is None and addr < INTR_HI and addr + size > INTR_LO):
            return port.translate(pasid, priv, addr, size, write)
        return self.machine.dma_translate(self.addr, pasid, priv, addr, size, write)

    def dma_read(
        self, pasid: int | None, priv: bool, addr: int, size: int
    ) -> tuple[bytes, DmaFault | None]:
        """Read ``size`` bytes; returns what was read before a fault, and the fault."""
        res = self.dma_translate(pasid, priv, addr, size, False)
        if not res.runs or self.machine is None:
            return b"", res.fault
        mem = self.machine.memory
        if len(res.runs) == 1:
            pa, n = res.runs[0]
            return mem.read(pa, n), res.fault
        return b"".join(mem.slice(pa, n) for pa, n in res.runs), res.fault

    def dma_write(
        self, pasid: int | None, priv: bool, addr: int, data: bytes | bytearray | memoryview
    ) -> tuple[int, DmaFault | None]:
        """Write ``data``; returns the bytes written before a fault, and the fault.

        An aligned DWORD without PASID to the interrupt window is an interrupt request
        (:meth:`hw.machine.Machine.interrupt_request`), not memory."""
        if (
            pasid is None
            and len(data) == 4
            and INTR_LO <= addr < INTR_HI
            and not addr & 3
            and self.machine is not None
            and self.bus_master
        ):
            fault = self.machine.interrupt_request(
                self.addr, addr, int.from_bytes(bytes(data), "little")
            )
            return (0, fault) if fault is not None else (4, None)
        res = self.dma_translate(pasid, priv, addr, len(data), True)
        if not res.runs or self.machine is None:
            return 0, res.fault
        mem = self.machine.memory
        done = 0
        view = memoryview(data)
        for pa, n in res.runs:
            mem.write(pa, view[done : done + n])
            done += n
        return done, res.fault

    # -- interrupts ------------------------------------------------------------
    @property
    def msix_enabled(self) -> bool:
        if not self.msix_cap:
            return False
        return bool(self._get(self.msix_cap + 2, 2) & 0x8000)

    def _msix_masked(self, vec: int) -> bool:
        fn_mask = bool(self._get(self.msix_cap + 2, 2) & 0x4000)
        return fn_mask or bool(self._msix_entries[16 * vec + 12] & 1)

    def msix_notify(self, vec: int) -> bool:
        """Raise MSI-X vector ``vec``. Returns True if a message was sent now."""
        if not self.msix_enabled or not 0 <= vec < self.msix_vectors:
            return False
        if self._msix_masked(vec):
            self._msix_pending.add(vec)
            return False
        self._deliver(vec)
        return True

    def _deliver(self, vec: int) -> None:
        """Send vector ``vec``'s message: a DWORD memory write of its data to its
        address, without PASID, through the function's DMA path (so through its
        IOMMU, which turns a write to the interrupt window into an interrupt)."""
        e = self._msix_entries[16 * vec : 16 * vec + 16]
        addr = int.from_bytes(e[0:8], "little")
        if self.machine is not None:
            self.msi_sent += 1
            self.dma_write(None, False, addr, e[8:12])

    def reset(self) -> None:
        """Function-level reset of the device state (config space kept)."""
