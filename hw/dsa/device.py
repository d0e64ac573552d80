"""The DSA PCI function: BAR0 registers, BAR2 portals, MSI-X, PASID/ATS/PRI.

Mirrors what Linux ``drivers/dma/idxd`` programs (facts B1-B15). Differences from
hardware, by design: engines run descriptors as clock events with a deterministic
latency (``desc_latency_ns`` + size / ``bytes_per_ns`` on the least busy engine of
the WQ's group); block-on-fault sends page requests through the PRI capability
(:mod:`hw.dsa.bof`), with the per-WQ PRS disable when configured; no IMS,
perfmon, event log, occupancy interrupts or ATS-disable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hw.bus import PciAddr
from hw.dsa import commands
from hw.dsa import registers as regs_
from hw.dsa.bof import BlockOnFault
from hw.dsa.config import PCI_CLASS_SYSTEM_OTHER, PCI_VENDOR_ID_INTEL, DsaConfig
from hw.dsa.engine import Engine, Job
from hw.dsa.swerr import (
    SWERR_BME_DISABLED,
    SWERR_CMD_ACTIVE,
    SWERR_DWQ_FULL,
    SWERR_PORTAL_MODE,
    SWERR_PORTAL_WQ,
    SwErr,
)
from hw.dsa.wq import PORTAL_STRIDE, WqState, portal_decode
from hw.memory import Memory
from hw.pci import PCI_COMMAND, PCI_DEVICE_ID, PciFunction
from hw.regs import Register, RegisterFile, RegSlot
from hw.uapi import idxd

MMIO_BAR = 0
WQ_BAR = 2


class DsaDevice(PciFunction):
    """An Intel DSA 1.0 device (PCI 8086:0B25 by default)."""

    vendor_id = PCI_VENDOR_ID_INTEL
    class_code = PCI_CLASS_SYSTEM_OTHER

    def __init__(self, addr: PciAddr, config: Mapping[str, Any] | None = None) -> None:
        cfg = DsaConfig.from_mapping(config)
        super().__init__(addr)
        self.cfg = cfg
        self._set16(PCI_DEVICE_ID, cfg.device_id)
        self.layout = regs_.Bar0Layout.for_config(cfg)
        self.add_bar(MMIO_BAR, self.layout.size)
        portal = PORTAL_STRIDE
        while portal < cfg.num_wqs * PORTAL_STRIDE:
            portal <<= 1
        self.add_bar(WQ_BAR, portal)
        self.add_pcie_cap()
        self.add_msix(cfg.msix_vectors, MMIO_BAR, self.layout.msix_table, self.layout.msix_pba)
        self.add_pasid_cap(cfg.pasid_width, priv=cfg.pasid_priv)
        self.add_ats_cap()
        self.add_pri_cap(cfg.pri_capacity)
        self.on_config_write(self._config_written)
        self.regs = RegisterFile("dsa-bar0", self.layout.size)
        self._build_registers()
        self.wqs = [WqState(i) for i in range(cfg.num_wqs)]
        self.group_engines: dict[int, list[int]] = {}
        self.engine_busy = [0] * cfg.num_engines
        self.int_handles: dict[int, int] = {}
        self.engine = Engine(self)
        self.bof = BlockOnFault(self)
        self._seq = 0
        self.swerr_count = 0

    # -- layout ----------------------------------------------------------------
    def _build_registers(self) -> None:
        cfg, lay, regs = self.cfg, self.layout, self.regs
        regs.add(regs_.VERSION, regs_.VERSION_OFFSET, reset=cfg.version)
        for name, off, val in (
            ("GENCAP", regs_.GENCAP_OFFSET, cfg.gencap),
            ("WQCAP", regs_.WQCAP_OFFSET, cfg.wqcap),
            ("GRPCAP", regs_.GRPCAP_OFFSET, cfg.grpcap),
            ("ENGCAP", regs_.ENGCAP_OFFSET, cfg.engcap),
            ("TABLE_OFFSETS0", regs_.TABLE_OFFSETS_OFFSET, lay.table_offsets & (2**64 - 1)),
            ("TABLE_OFFSETS1", regs_.TABLE_OFFSETS_OFFSET + 8, lay.table_offsets >> 64),
        ):
            regs.add(regs_.CAP64, off, name=name, reset=val)
        for i in range(4):
            word = (cfg.opcap >> (64 * i)) & (2**64 - 1)
            regs.add(regs_.CAP64, regs_.OPCAP_OFFSET + 8 * i, name=f"OPCAP{i}", reset=word)
        regs.add(regs_.GENCFG, regs_.GENCFG_OFFSET, on_write=self._gencfg_written)
        regs.add(regs_.GENCTRL, regs_.GENCTRL_OFFSET)
        regs.add(regs_.GENSTS, regs_.GENSTS_OFFSET)
        regs.add(regs_.INTCAUSE, regs_.INTCAUSE_OFFSET)
        regs.add(regs_.CMD, regs_.CMD_OFFSET, on_write=self._cmd_written)
        regs.add(regs_.CMDSTS, regs_.CMDSTS_OFFSET)
        regs.add(regs_.CMDCAP, regs_.CMDCAP_OFFSET, reset=cfg.cmdcap)
        regs.add(regs_.SWERR0, regs_.SWERR_OFFSET)
        regs.add(regs_.SWERR1, regs_.SWERR_OFFSET + 8)
        regs.add(regs_.SWERR_RO64, regs_.SWERR_OFFSET + 16, name="SWERR2")
        regs.add(regs_.SWERR_RO64, regs_.SWERR_OFFSET + 24, name="SWERR3")
        for g in range(cfg.num_groups):
            base = lay.grpcfg_offset(g)
            preset = not cfg.config_en and g == 0
            for i in range(4):
                regs.add(
                    regs_.GRP64,
                    base + 8 * i,
                    name=f"GRPWQCFG{g}_{i}",
                    reset=1 if preset and i == 0 else 0,
                    on_write=self._grpcfg_written,
                )
            engines = (1 << cfg.num_engines) - 1 if preset else 0
            regs.add(
                regs_.GRP64,
                base + 32,
                name=f"GRPENGCFG{g}",
                reset=engines,
                on_write=self._grpcfg_written,
            )
            regs.add(regs_.GRPFLAGS, base + 40, name=f"GRPFLAGS{g}", on_write=self._grpcfg_written)
            regs.add(regs_.RSVD64, base + 48, name=f"GRPRSVD{g}_0")
            regs.add(regs_.RSVD64, base + 56, name=f"GRPRSVD{g}_1")
        both = int(cfg.shared_wq and cfg.dedicated_wq)
        for w in range(cfg.num_wqs):
            dwords: list[type[Register]] = list(regs_.WQCFG_DWORDS)
            if cfg.wq_op_config:
                dwords += [regs_.WQCFG_OPCFG] * 8
            for dw, cls in enumerate(dwords):
                reset = 0
                if dw == 6:
                    reset = regs_.WQCFG_STATUS.mode_support.put(0, both)
                elif dw >= 8:
                    reset = 0xFFFFFFFF
                elif not cfg.config_en and w == 0:
                    reset = self._preset_wqcfg(dw)
                regs.add(
                    cls,
                    lay.wqcfg_offset(w, dw),
                    name=f"WQCFG{w}_{dw}",
                    reset=reset,
                    on_write=self._wqcfg_written,
                )
        for v in range(cfg.msix_vectors):
            regs.add(regs_.MSIX_PERM, lay.msix_perm + 8 * v, name=f"MSIX_PERM{v}")

    def _preset_wqcfg(self, dw: int) -> int:
        """WQ 0 of a non-configurable device: dedicated, all entries, max shifts."""
        cfg = self.cfg
        if dw == 0:
            return cfg.total_wq_size
        if dw == 2:
            return regs_.WQCFG_MODE.encode(mode=1, priority=1)
        if dw == 3:
            return regs_.WQCFG_SHIFTS.encode(
                max_xfer_shift=cfg.max_xfer_shift, max_batch_shift=cfg.max_batch_shift
            )
        return 0

    # -- register hooks ----------------------------------------------------------
    def _gencfg_written(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if self.state != regs_.GENSTS_DISABLED:
            slot.value = old  # GENCFG is writable only while the device is disabled

    def _grpcfg_written(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if not self.cfg.config_en or self.state != regs_.GENSTS_DISABLED:
            slot.value = old

    def _wqcfg_written(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        w = (slot.offset - self.layout.wqcfg) // self.layout.wqcfg_size
        if not self.cfg.config_en or self.wqs[w].enabled:
            slot.value = old  # WQCFG changes only while the WQ is disabled

    def _cmd_written(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        """A CMD write starts a command; CMDSTS.active until its completion event.
        A command written while one is active is dropped with SWERR 0x52."""
        if self.regs.field("CMDSTS", regs_.CMDSTS.active):
            slot.value = old
            self.report_swerr(SwErr(SWERR_CMD_ACTIVE))
            return
        value = slot.value
        self.regs["CMDSTS"] = regs_.CMDSTS.active.mask
        assert self.machine is not None
        self.machine.clock.schedule(
            self.cfg.cmd_latency_ns, lambda: self._cmd_done(value), "dsa:cmd"
        )

    def _cmd_done(self, value: int) -> None:
        code = regs_.CMD.cmd.get(value)
        operand = regs_.CMD.operand.get(value)
        err, result = commands.execute(self, code, operand)
        self.regs["CMDSTS"] = err | (result << 8)
        if self.machine is not None and self.machine.hw_trace is not None:
            self.machine.emit(
                "hw_dsa:command", dev=str(self.addr), cmd=code, operand=operand, status=err
            )
        if regs_.CMD.int_req.get(value):
            self._raise_misc(regs_.INTCAUSE_CMD)

    def _config_written(self, offset: int, size: int) -> None:
        """Turning bus mastering off under an enabled device halts it (VDCM: 0x51,
        reset type FLR)."""
        hit = offset <= PCI_COMMAND < offset + size
        if hit and not self.bus_master and self.state == regs_.GENSTS_ENABLED:
            self.report_swerr(SwErr(SWERR_BME_DISABLED))
            self.halt(regs_.RESET_FLR)

    # -- MMIO ----------------------------------------------------------------------
    def bar_read(self, bar: int, offset: int, size: int) -> int:
        if bar == MMIO_BAR:
            return self.regs.read(offset, size)
        return (1 << (8 * size)) - 1  # portal reads return all ones

    def bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        if bar == MMIO_BAR:
            self.regs.write(offset, size, value)
        # ordinary stores to a portal are not descriptors: dropped

    # -- state helpers used by commands and the engine --------------------------------
    @property
    def memory(self) -> Memory:
        assert self.machine is not None
        return self.machine.memory

    @property
    def state(self) -> int:
        return self.regs.field("GENSTS", regs_.GENSTS.state)

    @property
    def reset_type(self) -> int:
        return self.regs.field("GENSTS", regs_.GENSTS.reset_type)

    def set_state(self, state: int) -> None:
        self.regs.field("GENSTS", regs_.GENSTS.state, state)

    def wq_dword(self, w: int, dw: int) -> int:
        return self.regs[f"WQCFG{w}_{dw}"]

    def wq_field(self, w: int, dw: int, f: Any) -> int:
        return int(f.get(self.wq_dword(w, dw)))

    def wqcfg_size(self, w: int) -> int:
        return self.wq_field(w, 0, regs_.WQCFG_SIZE.wq_size)

    def wq_op_config(self, w: int) -> int | None:
        if not self.cfg.wq_op_config:
            return None
        return sum(self.wq_dword(w, 8 + i) << (32 * i) for i in range(8))

    def grpcfg(self, g: int) -> tuple[int, int, int]:
        wqs = sum(self.regs[f"GRPWQCFG{g}_{i}"] << (64 * i) for i in range(4))
        return wqs, self.regs[f"GRPENGCFG{g}"], self.regs[f"GRPFLAGS{g}"]

    def latch_groups(self, wq_owner: dict[int, int], eng_owner: dict[int, int]) -> None:
        for wq in self.wqs:
            wq.group = wq_owner.get(wq.index, -1)
        self.group_engines = {}
        for e, g in sorted(eng_owner.items()):
            self.group_engines.setdefault(g, []).append(e)

    def set_wq_enabled(self, w: int, on: bool) -> None:
        wq = self.wqs[w]
        wq.enabled = on
        name = f"WQCFG{w}_6"
        self.regs.field(name, regs_.WQCFG_STATUS.wq_state, int(on))
        self.update_occupancy(wq)

    def reset_wqcfg(self, w: int) -> None:
        for dw in range(16 if self.cfg.wq_op_config else 8):
            slot = self.regs.slot(f"WQCFG{w}_{dw}")
            slot.value = slot.reset_value

    def update_occupancy(self, wq: WqState) -> None:
        self.regs.field(f"WQCFG{wq.index}_6", regs_.WQCFG_STATUS.occupancy, wq.occupancy)

    # -- jobs --------------------------------------------------------------------------
    def all_jobs(self) -> list[Job]:
        return sorted((j for wq in self.wqs for j in wq.pending.values()), key=lambda j: j.seq)

    def _retire(self, job: Job) -> None:
        wq = self.wqs[job.wq]
        wq.pending.pop(job.seq, None)
        self.update_occupancy(wq)

    def drain(self, jobs: Iterable[Job]) -> None:
        """Complete ``jobs`` now, in submission order (Drain commands)."""
        for job in sorted(jobs, key=lambda j: j.seq):
            if job.event is not None:
                job.event.cancelled = True
            self.run_job(job)

    def abort(self, jobs: Iterable[Job]) -> None:
        """Drop ``jobs`` without completion records (Abort commands)."""
        for job in jobs:
            if job.event is not None:
                job.event.cancelled = True
            self._retire(job)

    def run_job(self, job: Job) -> None:
        """Execute ``job`` now, unless it was aborted or waits for a page response."""
        if job.blocked or job.seq not in self.wqs[job.wq].pending:
            return
        self._retire(job)
        self.engine.execute(job)

    def _enqueue(self, job: Job) -> None:
        assert self.machine is not None
        clock = self.machine.clock
        wq = self.wqs[job.wq]
        opcode = job.raw[7]
        cfg = self.cfg
        if opcode == idxd.DSA_OPCODE_DRAIN:
            finish = max(clock.now, wq.last_finish) + cfg.desc_latency_ns
        else:
            engines = self.group_engines.get(wq.group) or [0]
            e = min(engines, key=lambda i: self.engine_busy[i])
            start = max(clock.now, self.engine_busy[e])
            if opcode == idxd.DSA_OPCODE_BATCH:
                work = cfg.desc_latency_ns * min(job.size, cfg.max_batch)
            else:
                work = cfg.desc_latency_ns + min(job.size, wq.max_xfer) // cfg.bytes_per_ns
            finish = start + work
            self.engine_busy[e] = finish
        wq.last_finish = max(wq.last_finish, finish)
        wq.pending[job.seq] = job
        self.update_occupancy(wq)
        job.event = clock.schedule(finish - clock.now, lambda: self.run_job(job), "dsa:desc")

    # -- portals -------------------------------------------------------------------------
    def portal_write(self, bar: int, offset: int, data: bytes, enqcmd: bool) -> bool:
        """MOVDIR64B (posted) or ENQCMD(S) (accept/retry) to a BAR2 portal (facts B11/B12)."""
        if bar != WQ_BAR or len(data) != 64:
            return False
        w, limited, ims = portal_decode(offset)
        if w >= self.cfg.num_wqs or ims:
            self.report_swerr(SwErr(SWERR_PORTAL_WQ, wq=w if w < self.cfg.num_wqs else None))
            return False
        wq = self.wqs[w]
        if self.state != regs_.GENSTS_ENABLED or not wq.enabled:
            if not enqcmd:
                self.report_swerr(SwErr(SWERR_PORTAL_WQ, wq=w))
            return False
        if wq.dedicated != (not enqcmd):
            self.report_swerr(SwErr(SWERR_PORTAL_MODE, wq=w))
            return False
        dw0 = int.from_bytes(data[0:4], "little")
        if wq.dedicated:
            if wq.occupancy >= wq.size:
                self.report_swerr(SwErr(SWERR_DWQ_FULL, wq=w, opcode=data[7]))
                return False
            pasid: int | None = wq.pasid if wq.pasid_en else None
            priv, priv_ok = wq.priv, True
        else:
            if wq.occupancy >= wq.size or (limited and wq.occupancy >= wq.thresh):
                return False
            pasid, priv = dw0 & 0xFFFFF, bool(dw0 >> 31)
            priv_ok = not priv or (wq.priv and self.pasid_priv_enabled)
        self._seq += 1
        size = int.from_bytes(data[32:36], "little")
        if self.machine is not None and self.machine.hw_trace is not None:
            self.machine.emit(
                "hw_dsa:descriptor_submit",
                dev=str(self.addr),
                wq=w,
                seq=self._seq,
                desc=tuple(int.from_bytes(data[i : i + 8], "little") for i in range(0, 64, 8)),
            )
        self._enqueue(Job(self._seq, w, bytes(data), pasid, priv, priv_ok, size))
        return True

    # -- interrupts and errors -----------------------------------------------------------
    def int_vector(self, handle: int, priv: bool) -> int | None:
        """MSI-X vector for a descriptor's interrupt handle, or None if invalid.
        User (priv=0) completion interrupts need GENCFG.user_int_en."""
        if not priv and not self.regs.field("GENCFG", regs_.GENCFG.user_int_en):
            return None
        if self.cfg.int_handles:
            return self.int_handles.get(handle)
        return handle if handle < self.cfg.msix_vectors else None

    def completion_interrupt(self, vec: int, pasid: int | None, priv: bool) -> None:
        """Raise a completion vector unless MSIX_PERM says ignore, or it is bound to
        another PASID (user descriptors only)."""
        perm = self.regs[f"MSIX_PERM{vec}"]
        if regs_.MSIX_PERM.ignore.get(perm):
            return
        if (
            regs_.MSIX_PERM.pasid_en.get(perm)
            and not priv
            and pasid != regs_.MSIX_PERM.pasid.get(perm)
        ):
            return
        self.msix_notify(vec)

    def request_int_handle(self, operand: int) -> tuple[int, int]:
        index = operand & 0xFFFF
        if operand >> 16 & 1 or index >= self.cfg.msix_vectors:
            return commands.ERR_INVAL_INT_IDX, 0
        free = [h for h in range(self.cfg.msix_vectors) if h not in self.int_handles]
        if not free:
            return commands.ERR_NO_HANDLE, 0
        # Handles are deliberately not equal to the index, so a driver that
        # skips Request Interrupt Handle is caught.
        handle = max(free)
        self.int_handles[handle] = index
        return commands.SUCCESS, handle

    def release_int_handle(self, operand: int) -> int:
        handle = operand & 0xFFFF
        if operand >> 16 & 1 or handle not in self.int_handles:
            return commands.ERR_INVAL_INT_IDX
        del self.int_handles[handle]
        return commands.SUCCESS

    def _raise_misc(self, cause: int) -> None:
        self.regs["INTCAUSE"] = self.regs["INTCAUSE"] | cause
        self.msix_notify(0)

    def report_swerr(self, err: SwErr) -> None:
        """Record an error in SWERR (overflow if one is already valid) and raise the
        misc interrupt when GENCTRL enables software-error interrupts."""
        self.swerr_count += 1
        if self.regs.field("SWERR0", regs_.SWERR0.valid):
            self.regs.field("SWERR0", regs_.SWERR0.overflow, 1)
        else:
            qw0, qw1, qw2 = err.words()
            self.regs["SWERR0"], self.regs["SWERR1"], self.regs["SWERR2"] = qw0, qw1, qw2
        if self.machine is not None and self.machine.hw_trace is not None:
            self.machine.emit("hw_dsa:swerr", dev=str(self.addr), error=err.error, wq=err.wq)
        if self.regs.field("GENCTRL", regs_.GENCTRL.softerr_int_en):
            self._raise_misc(regs_.INTCAUSE_SOFTERR)

    def halt(self, reset_type: int) -> None:
        """Enter the halt state: outstanding work is dropped, WQs stop."""
        self.abort(self.all_jobs())
        for wq in self.wqs:
            self.set_wq_enabled(wq.index, False)
        self.regs["GENSTS"] = regs_.GENSTS.encode(state=regs_.GENSTS_HALTED, reset_type=reset_type)
        if self.machine is not None and self.machine.hw_trace is not None:
            self.machine.emit("hw_dsa:halt", dev=str(self.addr), reset_type=reset_type)
        if self.regs.field("GENCTRL", regs_.GENCTRL.halt_int_en):
            self._raise_misc(regs_.INTCAUSE_HALT)

    def reset_device(self) -> None:
        """Reset Device command: registers to reset values, queues dropped, handles
        released (``idxd_device_reset`` expects a disabled, unconfigured device)."""
        self.abort(self.all_jobs())
        self.regs.reset()
        for wq in self.wqs:
            self.wqs[wq.index] = WqState(wq.index)
        self.group_engines = {}
        self.engine_busy = [0] * self.cfg.num_engines
        self.int_handles.clear()

    def reset(self) -> None:
        """Function-level reset: as Reset Device, and leaves any halt state."""
        self.reset_device()
