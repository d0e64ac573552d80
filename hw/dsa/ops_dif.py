"""T10 DIF operations: DIF_CHECK, DIF_INS, DIF_STRP, DIF_UPDT (DSA spec 8.3.12-8.3.15).

A protected block is ``block`` data bytes followed by an 8-byte tuple, big-endian:
guard (CRC-16 T10-DIF of the data), application tag, reference tag.

DIF flags byte (``dif_chk_flags`` / ``dif_ins_flags`` / ``dif_upd_flags``):
bits 1:0 block size (0: 512, 1: 520, 2: 4096, 3: 4104), bit 2 invert the CRC seed
(start at 0xFFFF), bit 3 invert the CRC result; bits 7:4 reserved.

Source DIF flags: bit 7 reference tag fixed (else +1 per block), bit 6 reference
tag check disable, bit 5 guard check disable, bit 4 application tag increments
(else fixed), bit 3 skip the block when app tag = 0xFFFF and ref tag = 0xFFFFFFFF,
bit 2 skip when app tag = 0xFFFF, bit 1 skip when the whole tuple is all ones,
bit 0 report an all-ones tuple as an error. Destination DIF flags: bit 7 reference
tag fixed, bit 6 reference tag pass-through (update), bit 5 application tag
pass-through (update), bit 4 application tag increments; bits 3:0 reserved.
App-tag mask bits set to 1 are excluded from the comparison.

Status 0x09 (DIF error) carries in ``dif_status``: bit 0 guard, bit 1 app tag,
bit 2 ref tag mismatch, bit 3 all-ones error; ``bytes_completed`` is the source
offset of the failing block. The tag fields of the completion record hold the
tags the next block would use, so software can continue.
(Flag bit positions follow SPDK's idxd_spec.h; their exact semantics are this
model's reading, not verified against the DSA specification.)
"""

from __future__ import annotations

from hw.dsa.crc import crc16_t10dif
from hw.dsa.dma import DmaCtx, set_fault
from hw.uapi import idxd
from hw.uapi.idxd import DsaCompletionRecord, DsaHwDesc

BLOCK_SIZES = (512, 520, 4096, 4104)
DIF_FLAGS_VALID = 0x0F
DEST_FLAGS_VALID = 0xF0
SRC_REF_FIXED = 0x80
SRC_REF_CHECK_DISABLE = 0x40
SRC_GUARD_CHECK_DISABLE = 0x20
SRC_APP_INCREMENT = 0x10
SRC_APP_REF_F_DETECT = 0x08
SRC_APP_F_DETECT = 0x04
SRC_ALL_F_DETECT = 0x02
SRC_ALL_F_ERROR = 0x01
DST_REF_FIXED = 0x80
DST_REF_PASS = 0x40
DST_APP_PASS = 0x20
DST_APP_INCREMENT = 0x10
DIF_STATUS_GUARD = 0x1
DIF_STATUS_APP = 0x2
DIF_STATUS_REF = 0x4
DIF_STATUS_ALL_F = 0x8
TUPLE = 8


def block_size(dif_flags: int) -> int:
    return BLOCK_SIZES[dif_flags & 3]


def guard(data: bytes, dif_flags: int) -> int:
    g = crc16_t10dif(data, 0xFFFF if dif_flags & 4 else 0)
    return g ^ 0xFFFF if dif_flags & 8 else g


def src_block_bytes(op: int, dif_flags: int) -> int:
    """Source bytes per block: data only for DIF_INS, data + tuple otherwise."""
    bs = block_size(dif_flags)
    return bs if op == idxd.DSA_OPCODE_DIF_INS else bs + TUPLE


class _Tags:
    """Expected/generated tags for block ``i`` from a seed and a type flag."""

    __slots__ = ("app", "app_inc", "mask", "ref", "ref_fixed")

    def __init__(self, ref: int, app: int, mask: int, ref_fixed: bool, app_inc: bool) -> None:
        self.ref, self.app, self.mask = ref, app, mask
        self.ref_fixed, self.app_inc = ref_fixed, app_inc

    def at(self, i: int) -> tuple[int, int]:
        ref = self.ref if self.ref_fixed else (self.ref + i) & 0xFFFFFFFF
        app = (self.app + i) & 0xFFFF if self.app_inc else self.app
        return ref, app


def _check(blk: bytes, i: int, sflags: int, dflags: int, tags: _Tags) -> int:
    """DIF status bits of one source block (0 = good or skipped)."""
    bs = len(blk) - TUPLE
    g = int.from_bytes(blk[bs : bs + 2], "big")
    app = int.from_bytes(blk[bs + 2 : bs + 4], "big")
    ref = int.from_bytes(blk[bs + 4 : bs + 8], "big")
    all_f = g == 0xFFFF and app == 0xFFFF and ref == 0xFFFFFFFF
    if all_f and sflags & SRC_ALL_F_ERROR:
        return DIF_STATUS_ALL_F
    if (
        (sflags & SRC_APP_F_DETECT and app == 0xFFFF)
        or (sflags & SRC_APP_REF_F_DETECT and app == 0xFFFF and ref == 0xFFFFFFFF)
        or (sflags & SRC_ALL_F_DETECT and all_f)
    ):
        return 0
    exp_ref, exp_app = tags.at(i)
    st = 0
    if not sflags & SRC_GUARD_CHECK_DISABLE and g != guard(blk[:bs], dflags):
        st |= DIF_STATUS_GUARD
    if (app & ~tags.mask) != (exp_app & ~tags.mask):
        st |= DIF_STATUS_APP
    if not sflags & SRC_REF_CHECK_DISABLE and ref != exp_ref:
        st |= DIF_STATUS_REF
    return st


def _tuple(data: bytes, dflags: int, ref: int, app: int) -> bytes:
    return guard(data, dflags).to_bytes(2, "big") + app.to_bytes(2, "big") + ref.to_bytes(4, "big")


def op_dif(ctx: DmaCtx, d: DsaHwDesc, cr: DsaCompletionRecord) -> None:
    """All four DIF operations (one home: they share block walking and checks)."""
    op = d.opcode
    dflags = d.op_specific[2]
    bs = block_size(dflags)
    sblk = src_block_bytes(op, dflags)
    size = d.xfer_size
    src, rfault = ctx.read(d.src_addr, size)
    nblocks = len(src) // sblk
    if op == idxd.DSA_OPCODE_DIF_INS:
        chk = None
        gen = _Tags(
            d.ins_ref_tag_seed,
            d.ins_app_tag_seed,
            d.ins_app_tag_mask,
            bool(d.dest_dif_flag & DST_REF_FIXED),
            bool(d.dest_dif_flag & DST_APP_INCREMENT),
        )
        dst_flags = d.dest_dif_flag
    else:
        sflags = d.src_dif_flags
        chk = _Tags(
            d.chk_ref_tag_seed,
            d.chk_app_tag_seed,
            d.chk_app_tag_mask,
            bool(sflags & SRC_REF_FIXED),
            bool(sflags & SRC_APP_INCREMENT),
        )
        dst_flags = d.upd_dest_flags if op == idxd.DSA_OPCODE_DIF_UPDT else 0
        gen = _Tags(
            d.dest_ref_tag_seed,
            d.dest_app_tag_seed,
            d.dest_app_tag_mask,
            bool(dst_flags & DST_REF_FIXED),
            bool(dst_flags & DST_APP_INCREMENT),
        )
    out = bytearray()
    status = 0
    done = 0
    for i in range(nblocks):
        blk = src[i * sblk : (i + 1) * sblk]
        if chk is not None:
            status = _check(blk, i, d.src_dif_flags, dflags, chk)
            if status:
                break
        data = blk[:bs]
        if op == idxd.DSA_OPCODE_DIF_INS:
            out += data + _tuple(data, dflags, *gen.at(i))
        elif op == idxd.DSA_OPCODE_DIF_STRP:
            out += data
        elif op == idxd.DSA_OPCODE_DIF_UPDT:
            ref, app = gen.at(i)
            if dst_flags & DST_REF_PASS:
                ref = int.from_bytes(blk[bs + 4 : bs + 8], "big")
            if dst_flags & DST_APP_PASS:
                app = int.from_bytes(blk[bs + 2 : bs + 4], "big")
            out += data + _tuple(data, dflags, ref, app)
        done += 1
    wrote, wfault = ctx.write(d.dst_addr, out) if op != idxd.DSA_OPCODE_DIF_CHECK else (0, None)
    _tags_out(op, cr, chk, gen, done)
    if wfault is not None:
        out_blk = len(out) // done if done else 1
        set_fault(cr, ctx, wfault, (wrote // out_blk) * sblk)
    elif status:
        cr.status = idxd.DSA_COMP_DIF_ERR
        cr.dif_status = status
        cr.bytes_completed = done * sblk
    elif rfault is not None:
        set_fault(cr, ctx, rfault, done * sblk)
    else:
        cr.status = idxd.DSA_COMP_SUCCESS


def _tags_out(op: int, cr: DsaCompletionRecord, chk: _Tags | None, gen: _Tags, n: int) -> None:
    if op == idxd.DSA_OPCODE_DIF_INS:
        cr.dif_ins_ref_tag, cr.dif_ins_app_tag = gen.at(n)
        cr.dif_ins_app_tag_mask = gen.mask
        return
    assert chk is not None
    cr.dif_chk_ref_tag, cr.dif_chk_app_tag = chk.at(n)
    cr.dif_chk_app_tag_mask = chk.mask
    if op == idxd.DSA_OPCODE_DIF_UPDT:
        cr.dif_upd_dest_ref_tag, cr.dif_upd_dest_app_tag = gen.at(n)
        cr.dif_upd_dest_app_tag_mask = gen.mask
