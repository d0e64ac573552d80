"""Data-movement operations: MEMMOVE, MEMFILL, DUALCAST, CFLUSH (DSA spec 8.3.2-8.3.4,
8.3.9, 8.3.17). Arguments are validated by :mod:`hw.dsa.engine` before these run."""

from __future__ import annotations

from hw.dsa.dma import DmaCtx, set_fault
from hw.uapi.idxd import DSA_COMP_SUCCESS, DsaCompletionRecord, DsaHwDesc


def op_memmove(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> None:
    """Memory Move: overlap-safe copy. On a fault, bytes_completed counts from the
    start of the buffers (the model always copies forward)."""
    n, fault = ctx.copy(d.src_addr, d.dst_addr, d.xfer_size)
    if fault is not None:
        set_fault(cr, ctx, fault, n)
    else:
        cr.status = DSA_COMP_SUCCESS


def op_memfill(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> None:
    """Memory Fill with the 8-byte pattern (DSA 1.0: no 16-byte pattern)."""
    size = d.xfer_size
    res = ctx.translate(d.dst_addr, size, True)
    n = res.length
    pat = d.pattern.to_bytes(8, "little")
    buf = memoryview((pat * (n // 8 + 1))[:n])
    done = 0
    for pa, k in res.runs:
        ctx.mem.write(pa, buf[done : done + k])
        done += k
    if res.fault is not None and n < size:
        set_fault(cr, ctx, res.fault, n)
    else:
        cr.status = DSA_COMP_SUCCESS


def op_dualcast(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> None:
    """Dualcast: the source is written to both destinations."""
    size = d.xfer_size
    data, fault = ctx.read(d.src_addr, size)
    n1, f1 = ctx.write(d.dst_addr, data)
    n2, f2 = ctx.write(d.dest2, data[:n1])
    n = min(len(data), n1, n2)
    fault = fault if len(data) == n and fault is not None else (f1 if n1 == n else f2)
    if n < size and fault is not None:
        set_fault(cr, ctx, fault, n)
    else:
        cr.status = DSA_COMP_SUCCESS


def op_cflush(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> None:
    """Cache Flush: RAM is always coherent in the model, so only the translation of
    the destination range is checked (as a read; the data is unchanged)."""
    res = ctx.translate(d.dst_addr, d.xfer_size, False)
    if res.fault is not None and res.length < d.xfer_size:
        set_fault(cr, ctx, res.fault, res.length)
    else:
        cr.status = DSA_COMP_SUCCESS
