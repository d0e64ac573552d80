"""Descriptor engine: validation, dispatch to the operation families, BATCH and
DRAIN, completion records and completion interrupts (DSA spec ch. 8; facts B12-B14).

Check order for one descriptor (the spec gives no order; the model's choice):
completion-record alignment (SWERR 0x1B), opcode (0x10), flags (0x11 with
``invalid_flags``), reserved fields (0x12), interrupt handle (0x19), privilege
(0x1D), transfer size (0x13), then operation-specific checks.

Zero transfer size (unverified in the facts): the model completes it successfully
without touching memory. A completion record is written when CRAV=1 and either
RCR=1 or the status is not success; with CRAV=0 a failure goes to SWERR.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import define

from hw.bus import DMA_FAULT_BUS, DmaFault
from hw.clock import Event
from hw.dsa import ops_compare, ops_crc, ops_dif, ops_move
from hw.dsa.dma import DmaCtx
from hw.dsa.swerr import SwErr
from hw.uapi import idxd
from hw.uapi.idxd import DsaCompletionRecord, DsaHwDesc

if TYPE_CHECKING:
    from hw.dsa.device import DsaDevice

OpFn = Callable[[DmaCtx, DsaHwDesc, DsaCompletionRecord], None]

F = idxd
COMMON_FLAGS = (
    F.IDXD_OP_FLAG_FENCE
    | F.IDXD_OP_FLAG_BOF
    | F.IDXD_OP_FLAG_CRAV
    | F.IDXD_OP_FLAG_RCR
    | F.IDXD_OP_FLAG_RCI
    | F.IDXD_OP_FLAG_ADDR1_TCS
    | F.IDXD_OP_FLAG_ADDR2_TCS
    | F.IDXD_OP_FLAG_ADDR3_TCS
    | F.IDXD_OP_FLAG_CR_TCS
    | F.IDXD_OP_FLAG_STORD
)
SRC, DST, SIZE = (16, 8), (24, 8), (32, 4)
BLOCKED = -1
"""What :meth:`Engine._run_one` returns for a descriptor that waits on a page request."""


@define(frozen=True, slots=True)
class OpSpec:
    """What an opcode uses: fields (byte ranges; the rest must be zero), extra
    flags it accepts, its implementation, and whether its buffers may overlap."""

    fn: OpFn | None
    fields: tuple[tuple[int, int], ...]
    flags: int = 0
    overlap_ok: bool = False


CC = F.IDXD_OP_FLAG_CC
CR = F.IDXD_OP_FLAG_CR
OPS: dict[int, OpSpec] = {
    F.DSA_OPCODE_NOOP: OpSpec(None, ()),
    F.DSA_OPCODE_BATCH: OpSpec(None, (SRC, SIZE)),
    F.DSA_OPCODE_DRAIN: OpSpec(None, ()),
    F.DSA_OPCODE_MEMMOVE: OpSpec(ops_move.op_memmove, (SRC, DST, SIZE), CC, overlap_ok=True),
    F.DSA_OPCODE_MEMFILL: OpSpec(ops_move.op_memfill, (SRC, DST, SIZE), CC),
    F.DSA_OPCODE_COMPARE: OpSpec(ops_compare.op_compare, (SRC, DST, SIZE, (40, 1)), CR, True),
    F.DSA_OPCODE_COMPVAL: OpSpec(ops_compare.op_compval, (SRC, DST, SIZE, (40, 1)), CR),
    F.DSA_OPCODE_CR_DELTA: OpSpec(
        ops_compare.op_cr_delta, (SRC, DST, SIZE, (40, 12), (56, 1)), CR | CC
    ),
    F.DSA_OPCODE_AP_DELTA: OpSpec(ops_compare.op_ap_delta, (SRC, DST, SIZE, (40, 4)), CC),
    F.DSA_OPCODE_DUALCAST: OpSpec(ops_move.op_dualcast, (SRC, DST, SIZE, (40, 8)), CC),
    F.DSA_OPCODE_CRCGEN: OpSpec(
        ops_crc.op_crcgen, (SRC, SIZE, (40, 4), (48, 8)), ops_crc.CRC_OP_FLAGS
    ),
    F.DSA_OPCODE_COPY_CRC: OpSpec(
        ops_crc.op_copy_crc, (SRC, DST, SIZE, (40, 4), (48, 8)), ops_crc.CRC_OP_FLAGS | CC
    ),
    F.DSA_OPCODE_DIF_CHECK: OpSpec(ops_dif.op_dif, (SRC, SIZE, (40, 1), (42, 1), (48, 8))),
    F.DSA_OPCODE_DIF_INS: OpSpec(ops_dif.op_dif, (SRC, DST, SIZE, (41, 2), (56, 8)), CC),
    F.DSA_OPCODE_DIF_STRP: OpSpec(ops_dif.op_dif, (SRC, DST, SIZE, (40, 1), (42, 1), (48, 8)), CC),
    F.DSA_OPCODE_DIF_UPDT: OpSpec(ops_dif.op_dif, (SRC, DST, SIZE, (40, 3), (48, 16)), CC),
    F.DSA_OPCODE_CFLUSH: OpSpec(ops_move.op_cflush, (DST, SIZE)),
}


def _reserved_mask(spec: OpSpec) -> int:
    """Bit mask over the 64 descriptor bytes of bytes that must be zero (the
    header dwords are checked separately)."""
    used = bytearray(64)
    used[0:16] = b"\xff" * 16
    used[36:38] = b"\xff\xff"  # int_handle
    for off, n in spec.fields:
        used[off : off + n] = b"\xff" * n
    return int.from_bytes(bytes(0xFF ^ b for b in used), "little")


RESERVED = {op: _reserved_mask(spec) for op, spec in OPS.items()}
DIF_OPS = (
    F.DSA_OPCODE_DIF_CHECK,
    F.DSA_OPCODE_DIF_INS,
    F.DSA_OPCODE_DIF_STRP,
    F.DSA_OPCODE_DIF_UPDT,
)


@define(slots=True, eq=False)
class Job:
    """One accepted descriptor waiting in (or running from) a WQ."""

    seq: int
    wq: int
    raw: bytes
    pasid: int | None
    priv: bool
    priv_ok: bool
    size: int
    event: Event | None = None
    blocked: bool = False
    """Waiting for the response to its page request (block on fault)."""
    answered: bool = False
    done: int = 0
    """Bytes moved by earlier attempts (a resumed MEMMOVE)."""
    resumed: bool = False
    """Retried after a Success page response (:attr:`hw.dsa.dma.DmaCtx.resumed`)."""
    failed: tuple[DmaFault, int] | None = None
    """The fault and bytes completed of a page request answered with a failure."""


class Engine:
    """Executes descriptors for one device."""

    def __init__(self, dev: DsaDevice) -> None:
        self.dev = dev

    # -- validation ----------------------------------------------------------
    def _validate(
        self, d: DsaHwDesc, raw: bytes, job: Job, cr: DsaCompletionRecord, in_batch: bool
    ) -> bool:
        dev = self.dev
        wqc = dev.wqs[job.wq]
        op = d.opcode
        spec = OPS.get(op)
        if spec is None or not wqc.op_allowed(op) or (in_batch and op in (1, 2)):
            cr.status = F.DSA_COMP_BAD_OPCODE
            return False
        allowed = COMMON_FLAGS | spec.flags
        if not dev.cfg.cache_control:
            allowed &= ~CC
        bad = d.flags & ~allowed
        if d.flags & F.IDXD_OP_FLAG_RCR and not d.flags & F.IDXD_OP_FLAG_CRAV:
            bad |= F.IDXD_OP_FLAG_RCR
        if bad:
            cr.status = F.DSA_COMP_INVALID_FLAGS
            cr.invalid_flags = bad
            return False
        if int.from_bytes(raw, "little") & RESERVED[op] or raw[3] & 0x7F or raw[2] & 0xF0:
            # desc rsvd:11 (bits 30:20 of dword 0) or op-unused fields
            cr.status = F.DSA_COMP_NOZERO_RESERVE
            return False
        if d.flags & F.IDXD_OP_FLAG_RCI and dev.int_vector(d.int_handle, job.priv) is None:
            cr.status = F.DSA_COMP_INT_HANDLE_INVAL
            return False
        if not job.priv_ok:
            cr.status = F.DSA_COMP_PRIV_BAD
            return False
        if op == F.DSA_OPCODE_BATCH:
            return self._validate_batch(d, job, cr)
        if spec.fn is None:
            return True
        if d.xfer_size > wqc.max_xfer:
            cr.status = F.DSA_COMP_XFER_ERANGE
            return False
        return self._validate_op(d, spec, cr)

    def _validate_batch(self, d: DsaHwDesc, job: Job, cr: DsaCompletionRecord) -> bool:
        if d.desc_list_addr % 64:
            cr.status = F.DSA_COMP_DESCLIST_ALIGN
            return False
        if not 2 <= d.desc_count <= self.dev.wqs[job.wq].max_batch:
            cr.status = F.DSA_COMP_DESC_CNT_ERANGE
            return False
        return True

    def _validate_op(self, d: DsaHwDesc, spec: OpSpec, cr: DsaCompletionRecord) -> bool:
        op, size = d.opcode, d.xfer_size
        if op in DIF_OPS:
            dest = d.dest_dif_flag if op in (F.DSA_OPCODE_DIF_INS, F.DSA_OPCODE_DIF_UPDT) else 0
            if dest & ~ops_dif.DEST_FLAGS_VALID or d.op_specific[2] & ~ops_dif.DIF_FLAGS_VALID:
                cr.status = F.DSA_COMP_NOZERO_RESERVE
                return False
            if size % ops_dif.src_block_bytes(op, d.op_specific[2]):
                cr.status = F.DSA_COMP_XFER_ERANGE
                return False
        if op == F.DSA_OPCODE_DUALCAST and (d.dst_addr ^ d.dest2) & 0xFFF:
            cr.status = F.DSA_COMP_DCAST_ERR
            return False
        if op == F.DSA_OPCODE_CR_DELTA:
            if size % 8 or size > ops_compare.CR_DELTA_MAX_XFER:
                cr.status = F.DSA_COMP_XFER_ERANGE
                return False
            if (d.src_addr | d.src2_addr | d.delta_addr) % 8:
                cr.status = F.DSA_COMP_ADDR_ALIGN
                return False
            if d.max_delta_size == 0 or d.max_delta_size % ops_compare.DELTA_ENTRY:
                cr.status = F.DSA_COMP_DR_ERANGE
                return False
        if op == F.DSA_OPCODE_AP_DELTA:
            if size % 8 or size > ops_compare.CR_DELTA_MAX_XFER:
                cr.status = F.DSA_COMP_XFER_ERANGE
                return False
            if (d.src_addr | d.dst_addr) % 8:
                cr.status = F.DSA_COMP_ADDR_ALIGN
                return False
            if d.delta_rec_size % ops_compare.DELTA_ENTRY:
                cr.status = F.DSA_COMP_DR_ERANGE
                return False
        crc_op = op in (F.DSA_OPCODE_CRCGEN, F.DSA_OPCODE_COPY_CRC)
        if crc_op and d.flags & ops_crc.CRC_FLAG_READ_SEED and d.seed_addr % 4:
            cr.status = F.DSA_COMP_ADDR_ALIGN
            return False
        if size and not (spec.overlap_ok and self.dev.cfg.overlap_copy) and _overlap(d, op):
            cr.status = F.DSA_COMP_OVERLAP_BUFFERS
            return False
        return True

    # -- execution -----------------------------------------------------------
    def execute(self, job: Job) -> None:
        """Run one accepted descriptor (from its clock event or a drain)."""
        d = DsaHwDesc.from_bytes(job.raw)
        status = self._run_one(d, job.raw, job, None)
        if status == BLOCKED:
            return
        if self.dev.machine is not None and self.dev.machine.hw_trace is not None:
            self.dev.machine.emit(
                "hw_dsa:descriptor_complete",
                dev=str(self.dev.addr),
                wq=job.wq,
                seq=job.seq,
                opcode=d.opcode,
                status=status,
                pasid=job.pasid,
                size=d.xfer_size,
            )

    def _run_one(self, d: DsaHwDesc, raw: bytes, job: Job, batch_idx: int | None) -> int:
        cr = DsaCompletionRecord()
        if d.flags & F.IDXD_OP_FLAG_CRAV and d.completion_addr % 32:
            self._swerr(d, job, batch_idx, F.DSA_COMP_CRA_ALIGN, 0, d.completion_addr)
            return F.DSA_COMP_CRA_ALIGN
        bof = bool(d.flags & F.IDXD_OP_FLAG_BOF and self.dev.wqs[job.wq].bof)
        ctx = DmaCtx(self.dev, self.dev.memory, job.pasid, job.priv, bof, job.resumed)
        top = batch_idx is None
        if top and job.failed is not None:
            self.dev.bof.fail(job, cr)
        elif self._validate(d, raw, job, cr, not top):
            if d.opcode == F.DSA_OPCODE_BATCH:
                self._batch(ctx, d, job, cr)
            else:
                spec = OPS[d.opcode]
                if spec.fn is None or (d.xfer_size == 0 and spec.fields):
                    cr.status = F.DSA_COMP_SUCCESS
                else:
                    spec.fn(ctx, d, cr)
                    if top and ctx.fault is not None:
                        if bof and self.dev.bof.block(job, d, ctx, cr):
                            return BLOCKED
                        cr.bytes_completed += job.done
        self._complete(ctx, d, job, cr, batch_idx)
        return int(cr.status)

    def _batch(self, ctx: DmaCtx, d: DsaHwDesc, job: Job, cr: DsaCompletionRecord) -> None:
        """BATCH: read the list (fault -> 0x06), run the descriptors in order with
        the batch's PASID and privilege; a fenced descriptor after a failure (or a
        false predicate) stops the batch. bytes_completed = descriptors done."""
        n = d.desc_count
        lst, fault = ctx.read(d.desc_list_addr, 64 * n)
        done = 0
        failed = False
        for i in range(len(lst) // 64):
            raw = lst[64 * i : 64 * i + 64]
            sub = DsaHwDesc.from_bytes(raw)
            if sub.flags & F.IDXD_OP_FLAG_FENCE and failed:
                break
            st = self._run_one(sub, raw, job, i)
            done += 1
            if st != F.DSA_COMP_SUCCESS:
                failed = True
        cr.bytes_completed = done
        if fault is not None and done == len(lst) // 64:
            cr.status = F.DSA_COMP_BATCH_PAGE_FAULT
            cr.fault_addr = fault.addr
            if fault.reason == DMA_FAULT_BUS:
                cr.status = F.DSA_COMP_TRANSLATION_FAIL
        elif failed or done < n:
            cr.status = F.DSA_COMP_BATCH_FAIL
        else:
            cr.status = F.DSA_COMP_SUCCESS

    # -- completion ------------------------------------------------------------
    def _complete(
        self,
        ctx: DmaCtx,
        d: DsaHwDesc,
        job: Job,
        cr: DsaCompletionRecord,
        batch_idx: int | None,
    ) -> None:
        dev = self.dev
        status = cr.status & F.DSA_COMP_STATUS_MASK
        if d.flags & F.IDXD_OP_FLAG_CRAV:
            if d.flags & F.IDXD_OP_FLAG_RCR or status != F.DSA_COMP_SUCCESS:
                _, fault = ctx.write(d.completion_addr, cr.to_bytes())
                if fault is not None:
                    self._swerr(d, job, batch_idx, F.DSA_COMP_CRA_XLAT, 0, fault.addr, True)
                    return
        elif status not in (F.DSA_COMP_SUCCESS, F.DSA_COMP_SUCCESS_PRED):
            self._swerr(d, job, batch_idx, status, cr.invalid_flags, cr.fault_addr)
        if d.flags & F.IDXD_OP_FLAG_RCI and status != F.DSA_COMP_INT_HANDLE_INVAL:
            vec = dev.int_vector(d.int_handle, job.priv)
            if vec is not None:
                dev.completion_interrupt(vec, job.pasid, job.priv)

    def _swerr(
        self,
        d: DsaHwDesc,
        job: Job,
        batch_idx: int | None,
        error: int,
        invalid_flags: int,
        fault_addr: int,
        fault_rw: bool = False,
    ) -> None:
        self.dev.report_swerr(
            SwErr(
                error=error,
                wq=job.wq,
                opcode=d.opcode,
                pasid=job.pasid or 0,
                priv=job.priv,
                batch_idx=batch_idx,
                fault_rw=fault_rw,
                invalid_flags=invalid_flags,
                fault_addr=fault_addr,
            )
        )


def _overlap(d: DsaHwDesc, op: int) -> bool:
    """Whether the source and destination(s) of ``d`` overlap (device addresses)."""
    size = d.xfer_size
    a = (d.src_addr, size)
    if op in (F.DSA_OPCODE_COMPARE, F.DSA_OPCODE_COMPVAL, F.DSA_OPCODE_CFLUSH):
        return False
    if op == F.DSA_OPCODE_CR_DELTA:
        ranges = [a, (d.src2_addr, size), (d.delta_addr, d.max_delta_size)]
        return _any_overlap(ranges[2], ranges[:2])
    if op == F.DSA_OPCODE_AP_DELTA:
        return _any_overlap((d.src_addr, d.delta_rec_size), [(d.dst_addr, size)])
    if op == F.DSA_OPCODE_MEMFILL:
        return False
    out = size
    if op in (F.DSA_OPCODE_DIF_INS, F.DSA_OPCODE_DIF_STRP):
        bs = ops_dif.block_size(d.op_specific[2])
        blocks = size // ops_dif.src_block_bytes(op, d.op_specific[2])
        out = blocks * (bs + 8 if op == F.DSA_OPCODE_DIF_INS else bs)
    if op == F.DSA_OPCODE_DIF_CHECK or op == F.DSA_OPCODE_CRCGEN:
        return False
    dsts = [(d.dst_addr, out)]
    if op == F.DSA_OPCODE_DUALCAST:
        dsts.append((d.dest2, size))
        if _any_overlap(dsts[0], dsts[1:]):
            return True
    return _any_overlap(a, dsts)


def _any_overlap(r: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    return any(r[0] < o + n and o < r[0] + r[1] and n and r[1] for o, n in others)
