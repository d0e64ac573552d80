"""Compare and delta operations: COMPARE, COMPVAL, CR_DELTA, AP_DELTA
(DSA spec 8.3.5-8.3.8). Delta record entries are 10 bytes: a 16-bit offset in
units of 8 bytes, then the 8 bytes of new data."""

from __future__ import annotations

from hw.bus import DmaFault
from hw.dsa.dma import DmaCtx, set_fault
from hw.uapi import idxd
from hw.uapi.idxd import DsaCompletionRecord, DsaHwDesc

DELTA_ENTRY = 10
CR_DELTA_MAX_XFER = 0x80000  # 16-bit word offsets x 8 bytes


def first_diff(a: bytes, b: bytes) -> int:
    """Index of the first differing byte of equal-length ``a``/``b``, or -1."""
    if a == b:
        return -1
    lo, hi = 0, len(a)
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if a[lo:mid] != b[lo:mid]:
            hi = mid
        else:
            lo = mid
    return next(i for i in range(lo, hi) if a[i] != b[i])


def _predicate(d: DsaHwDesc, cr: DsaCompletionRecord, ok: bool) -> None:
    """Check Result flag: a result other than the expected one completes with
    "success with false predicate" (0x02)."""
    if d.flags & idxd.IDXD_OP_FLAG_CR and not ok:
        cr.status = idxd.DSA_COMP_SUCCESS_PRED
    else:
        cr.status = idxd.DSA_COMP_SUCCESS


def _compare(
    ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord, b: bytes, fb: DmaFault | None
) -> None:
    size = d.xfer_size
    a, fa = ctx.read(d.src_addr, size)
    m = min(len(a), len(b))
    i = first_diff(a[:m], b[:m])
    if i >= 0:
        cr.result = 1
        cr.bytes_completed = i
    elif m < size:
        fault = fa if len(a) == m and fa is not None else fb
        assert fault is not None
        set_fault(cr, ctx, fault, m)
        return
    _predicate(d, cr, cr.result == d.expected_res)


def op_compare(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> None:
    """Compare: result 0 equal / 1 different, bytes_completed = first mismatch."""
    b, fb = ctx.read(d.src2_addr, d.xfer_size)
    _compare(ctx, d, cr, b, fb)


def op_compval(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> None:
    """Compare Pattern: the source against the repeated 8-byte comp_pattern."""
    size = d.xfer_size
    pat = d.comp_pattern.to_bytes(8, "little")
    _compare(ctx, d, cr, (pat * (size // 8 + 1))[:size], None)


def op_cr_delta(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> None:
    """Create Delta Record: one entry per differing 8-byte word of src2 vs src.
    Result 0 = identical, 1 = delta record written, 2 = it would exceed
    max_delta_size (model: nothing written, delta_rec_size 0). With the CR flag
    the result is checked against ``expected_res_mask`` (bit ``result`` set = ok)."""
    size = d.xfer_size
    a, fa = ctx.read(d.src_addr, size)
    b, fb = ctx.read(d.src2_addr, size)
    if len(a) < size or len(b) < size:
        fault = fa if len(a) <= len(b) and fa is not None else fb
        assert fault is not None
        set_fault(cr, ctx, fault, min(len(a), len(b)) & ~7)
        return
    entries = bytearray()
    if a != b:
        for w in range(size // 8):
            o = 8 * w
            if a[o : o + 8] != b[o : o + 8]:
                entries += w.to_bytes(2, "little") + b[o : o + 8]
    if not entries:
        result = 0
    elif len(entries) > d.max_delta_size:
        result = 2
    else:
        n, fault = ctx.write(d.delta_addr, entries)
        if fault is not None:
            set_fault(cr, ctx, fault, n)
            return
        result = 1
        cr.delta_rec_size = len(entries)
    cr.result = result
    _predicate(d, cr, bool(d.expected_res_mask >> result & 1))


def op_ap_delta(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> None:
    """Apply Delta Record: entries must have strictly increasing offsets (0x07)
    inside the destination (0x08); all are checked before anything is written."""
    rec, fault = ctx.read(d.src_addr, d.delta_rec_size)
    if fault is not None:
        set_fault(cr, ctx, fault, 0)
        return
    last = -1
    entries: list[tuple[int, bytes]] = []
    for o in range(0, len(rec), DELTA_ENTRY):
        w = int.from_bytes(rec[o : o + 2], "little")
        if w <= last:
            cr.status = idxd.DSA_COMP_DR_OFFSET_NOINC
            return
        if 8 * w + 8 > d.xfer_size:
            cr.status = idxd.DSA_COMP_DR_OFFSET_ERANGE
            return
        last = w
        entries.append((w, rec[o + 2 : o + DELTA_ENTRY]))
    for w, data in entries:
        _, wf = ctx.write(d.dst_addr + 8 * w, data)
        if wf is not None:
            set_fault(cr, ctx, wf, 8 * w)
            return
    cr.status = idxd.DSA_COMP_SUCCESS
