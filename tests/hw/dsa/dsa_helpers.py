"""Bring-up of a DSA the way a CPU does it: config space, BAR0 MMIO, portals."""

from __future__ import annotations

from typing import Any

from hw.bus import PciAddr
from hw.dsa import registers as regs_
from hw.dsa.device import DsaDevice
from hw.machine import Machine, build_machine
from hw.uapi.idxd import IDXD_OP_FLAG_CRAV, IDXD_OP_FLAG_RCR, DsaCompletionRecord, DsaHwDesc

BDF = PciAddr.parse("00:02.0")
CR_BASE = 0x10000
BUF = 0x100000


class Dsa:
    """A machine with one DSA and helpers that only use CPU-visible interfaces."""

    def __init__(self, config: dict[str, Any] | None = None, ram: str = "64M") -> None:
        self.m: Machine = build_machine(
            {"ram": ram, "devices": [{"kind": "dsa", "bdf": "00:02.0", "config": config or {}}]}
        )
        self.msis: list[tuple[int, int]] = []
        self.m.set_msi_sink(lambda a, d: self.msis.append((a, d)))
        self.m.pci_config_write(BDF, 0x04, 2, 0x6)  # memory + bus master
        self.bar0 = self.cfg_bar(0x10)
        self.bar2 = self.cfg_bar(0x18)
        fn = self.m.functions[BDF]
        assert isinstance(fn, DsaDevice)
        self.dev = fn
        self.table = self.r64(regs_.TABLE_OFFSETS_OFFSET)
        self.grpcfg = (self.table & 0xFFFF) * 0x100
        self.wqcfg = ((self.table >> 16) & 0xFFFF) * 0x100
        self.perm = ((self.table >> 32) & 0xFFFF) * 0x100

    def cfg_bar(self, off: int) -> int:
        lo = self.m.pci_config_read(BDF, off, 4) & ~0xF
        return lo | self.m.pci_config_read(BDF, off + 4, 4) << 32

    def enable_msix(self) -> None:
        cap = self.dev.msix_cap
        self.m.pci_config_write(BDF, cap + 2, 2, 0x8000)
        table = self.dev.msix_table
        for v in range(self.dev.msix_vectors):
            base = self.bar0 + table + 16 * v
            self.m.mmio_write(base, 4, 0xFEE00000)
            self.m.mmio_write(base + 8, 4, 0x40 + v)
            self.m.mmio_write(base + 12, 4, 0)

    def enable_pasid(self) -> None:
        off = self.dev.find_ext_cap(0x1B)
        self.m.pci_config_write(BDF, off + 6, 2, 0x5)

    # -- registers --
    def r32(self, off: int) -> int:
        return self.m.mmio_read(self.bar0 + off, 4)

    def w32(self, off: int, v: int) -> None:
        self.m.mmio_write(self.bar0 + off, 4, v)

    def r64(self, off: int) -> int:
        return self.m.mmio_read(self.bar0 + off, 8)

    def w64(self, off: int, v: int) -> None:
        self.m.mmio_write(self.bar0 + off, 8, v)

    def cmd(self, code: int, operand: int = 0, int_req: bool = False) -> int:
        self.w32(regs_.CMD_OFFSET, operand | code << 20 | int(int_req) << 31)
        assert self.r32(regs_.CMDSTS_OFFSET) >> 31 == 1
        self.m.clock.run_all()
        sts = self.r32(regs_.CMDSTS_OFFSET)
        assert sts >> 31 == 0
        return sts

    def config_wq(
        self,
        wq: int,
        size: int = 16,
        dedicated: bool = True,
        thresh: int = 0,
        shifts: int = 31 | 10 << 5,
        **mode: int,
    ) -> None:
        base = self.wqcfg + wq * self.dev.cfg.wqcfg_size
        self.w32(base, size)
        self.w32(base + 4, thresh)
        fields = {"mode": int(dedicated), "priority": 1, **mode}
        self.w32(base + 8, regs_.WQCFG_MODE.encode(**fields))
        self.w32(base + 12, shifts)

    def config_group(self, g: int, wqs: int, engines: int) -> None:
        base = self.grpcfg + 64 * g
        self.w64(base, wqs)
        self.w64(base + 32, engines)

    def bring_up(
        self, wqs: tuple[tuple[int, bool], ...] = ((0, True),), user_int: bool = True
    ) -> None:
        """Configure WQs (index, dedicated), one group with all engines, enable."""
        self.enable_msix()
        self.enable_pasid()
        self.w32(regs_.GENCTRL_OFFSET, 3)
        if user_int:
            self.w32(regs_.GENCFG_OFFSET, 1 << 12)
        mask = 0
        for w, ded in wqs:
            self.config_wq(w, dedicated=ded, thresh=0 if ded else 8, pasid_en=int(not ded))
            mask |= 1 << w
        self.config_group(0, mask, (1 << self.dev.cfg.num_engines) - 1)
        assert self.cmd(1) & 0xFF == 0
        for w, _ in wqs:
            assert self.cmd(6, w) & 0xFF == 0

    def portal(self, wq: int, limited: bool = False) -> int:
        return self.bar2 + wq * 0x4000 + (0x1000 if limited else 0)

    def submit(self, d: DsaHwDesc, wq: int = 0) -> None:
        self.m.movdir64b(self.portal(wq), d.to_bytes())

    def run(self) -> None:
        self.m.clock.run_all()

    def record(self, addr: int = CR_BASE) -> DsaCompletionRecord:
        return DsaCompletionRecord.from_bytes(self.m.memory.read(addr, 32))

    def swerr(self) -> tuple[int, int, int]:
        o = regs_.SWERR_OFFSET
        return self.r64(o), self.r64(o + 8), self.r64(o + 16)


def desc(
    opcode: int, cr: int = CR_BASE, flags: int = IDXD_OP_FLAG_CRAV | IDXD_OP_FLAG_RCR, **kw: Any
) -> DsaHwDesc:
    return DsaHwDesc(opcode=opcode, flags=flags, completion_addr=cr, **kw)
