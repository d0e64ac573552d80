"""CRC operations: CRCGEN and COPY_CRC (DSA spec 8.3.10-8.3.11).

Operation flags (descriptor flag bits 16-23): bit 16 = read the CRC seed from
``seed_addr`` (4 bytes, 4-byte aligned) instead of ``crc_seed``; bit 17 = bypass
the CRC inversion (raw register seeded with the seed, result not inverted).
The result goes to ``crc_val``; on a partial completion it covers the bytes
completed, so software can resume with it as the seed.
"""

from __future__ import annotations

from hw.dsa.crc import crc32c
from hw.dsa.dma import DmaCtx, set_fault
from hw.uapi import idxd
from hw.uapi.idxd import DsaCompletionRecord, DsaHwDesc

CRC_FLAG_READ_SEED = 1 << 16
CRC_FLAG_BYPASS_INVERT = 1 << 17
CRC_OP_FLAGS = CRC_FLAG_READ_SEED | CRC_FLAG_BYPASS_INVERT


def _seed(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> int | None:
    if not d.flags & CRC_FLAG_READ_SEED:
        return int(d.crc_seed)
    raw, fault = ctx.read(d.seed_addr, 4)
    if fault is not None:
        set_fault(cr, ctx, fault, 0)
        return None
    return int.from_bytes(raw, "little")


def _crc(d: DsaHwDesc, seed: int, data: bytes) -> int:
    return crc32c(data, seed, invert=not d.flags & CRC_FLAG_BYPASS_INVERT)


def op_crcgen(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> None:
    seed = _seed(ctx, d, cr)
    if seed is None:
        return
    data, fault = ctx.read(d.src_addr, d.xfer_size)
    cr.crc_val = _crc(d, seed, data)
    if fault is not None:
        set_fault(cr, ctx, fault, len(data))
    else:
        cr.status = idxd.DSA_COMP_SUCCESS


def op_copy_crc(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> None:
    seed = _seed(ctx, d, cr)
    if seed is None:
        return
    data, fault = ctx.read(d.src_addr, d.xfer_size)
    n, wfault = ctx.write(d.dst_addr, data)
    cr.crc_val = _crc(d, seed, data[:n])
    if wfault is not None or n < len(data):
        assert wfault is not None
        set_fault(cr, ctx, wfault, n)
    elif fault is not None:
        set_fault(cr, ctx, fault, n)
    else:
        cr.status = idxd.DSA_COMP_SUCCESS
