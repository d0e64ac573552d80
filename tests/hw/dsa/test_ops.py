"""One test per DSA 1.0 opcode, checked against independent software (bitwise CRCs)."""

from __future__ import annotations

import pytest

from hw.uapi import idxd
from hw.uapi.idxd import DsaHwDesc
from tests.hw.dsa.dsa_helpers import BUF, CR_BASE, Dsa, desc

CRAV_RCR = idxd.IDXD_OP_FLAG_CRAV | idxd.IDXD_OP_FLAG_RCR
SRC, DST, DST2 = BUF, BUF + 0x100000, BUF + 0x201000


def crc32c_bitwise(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


def crc16_bitwise(data: bytes, crc: int = 0) -> int:
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8BB7) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


@pytest.fixture
def t() -> Dsa:
    dsa = Dsa()
    dsa.bring_up()
    return dsa


def run(t: Dsa, d: DsaHwDesc) -> idxd.DsaCompletionRecord:
    t.submit(d)
    t.run()
    return t.record()


def pattern(n: int, seed: int = 7) -> bytes:
    return bytes((i * seed + (i >> 8)) & 0xFF for i in range(n))


def test_noop_completes(t: Dsa) -> None:
    assert run(t, desc(idxd.DSA_OPCODE_NOOP)).status == idxd.DSA_COMP_SUCCESS


def test_memmove_copies_and_handles_overlap(t: Dsa) -> None:
    data = pattern(10000)
    t.m.memory.write(SRC, data)
    assert run(t, desc(3, src_addr=SRC, dst_addr=DST, xfer_size=10000)).status == 1
    assert t.m.memory.read(DST, 10000) == data
    assert run(t, desc(3, src_addr=SRC, dst_addr=SRC + 3, xfer_size=10000)).status == 1
    assert t.m.memory.read(SRC + 3, 10000) == data


def test_memfill_repeats_the_pattern(t: Dsa) -> None:
    assert run(t, desc(4, pattern=0x0807060504030201, dst_addr=DST, xfer_size=21)).status == 1
    assert t.m.memory.read(DST, 24) == (bytes(range(1, 9)) * 3)[:21] + b"\0\0\0"


def test_compare_reports_first_mismatch_and_predicate(t: Dsa) -> None:
    a = pattern(5000)
    t.m.memory.write(SRC, a)
    t.m.memory.write(DST, a[:4321] + b"\xff" + a[4322:])
    r = run(t, desc(5, src_addr=SRC, src2_addr=DST, xfer_size=5000))
    assert (r.status, r.result, r.bytes_completed) == (1, 1, 4321)
    flags = CRAV_RCR | idxd.IDXD_OP_FLAG_CR
    r = run(t, desc(5, flags=flags, src_addr=SRC, src2_addr=DST, xfer_size=5000))
    assert r.status == idxd.DSA_COMP_SUCCESS_PRED
    r = run(t, desc(5, src_addr=SRC, src2_addr=SRC, xfer_size=5000))
    assert (r.status, r.result) == (1, 0)


def test_compval_against_pattern(t: Dsa) -> None:
    t.m.memory.write(SRC, b"abcdefgh" * 8)
    r = run(
        t, desc(6, src_addr=SRC, comp_pattern=int.from_bytes(b"abcdefgh", "little"), xfer_size=64)
    )
    assert (r.status, r.result) == (1, 0)
    r = run(t, desc(6, src_addr=SRC, comp_pattern=0, xfer_size=64))
    assert (r.result, r.bytes_completed) == (1, 0)


def test_create_and_apply_delta_record(t: Dsa) -> None:
    a = pattern(4096)
    b = bytearray(a)
    b[8:16] = b"ABCDEFGH"
    b[4000:4008] = b"zzzzzzzz"
    t.m.memory.write(SRC, a)
    t.m.memory.write(DST, bytes(b))
    d = desc(7, src_addr=SRC, src2_addr=DST, xfer_size=4096)
    d.delta_addr, d.max_delta_size = DST2, 100
    r = run(t, d)
    assert (r.status, r.result, r.delta_rec_size) == (1, 1, 20)
    rec = t.m.memory.read(DST2, 20)
    assert (
        rec == (1).to_bytes(2, "little") + b"ABCDEFGH" + (500).to_bytes(2, "little") + b"zzzzzzzz"
    )
    ap = desc(8, src_addr=DST2, dst_addr=SRC, xfer_size=4096)
    ap.delta_rec_size = 20
    assert run(t, ap).status == 1
    assert t.m.memory.read(SRC, 4096) == bytes(b)
    d.max_delta_size = 10
    r = run(t, d)  # no difference any more
    assert r.result == 0
    t.m.memory.write(SRC, a)
    r = run(t, d)
    assert r.result == 2
    d.flags |= idxd.IDXD_OP_FLAG_CR
    d.expected_res_mask = 1
    assert run(t, d).status == idxd.DSA_COMP_SUCCESS_PRED


def test_apply_delta_rejects_bad_offsets(t: Dsa) -> None:
    t.m.memory.write(
        SRC, (5).to_bytes(2, "little") + bytes(8) + (3).to_bytes(2, "little") + bytes(8)
    )
    ap = desc(8, src_addr=SRC, dst_addr=DST, xfer_size=64)
    ap.delta_rec_size = 20
    assert run(t, ap).status == idxd.DSA_COMP_DR_OFFSET_NOINC
    t.m.memory.write(SRC, (8).to_bytes(2, "little"))
    ap.delta_rec_size = 10
    assert run(t, ap).status == idxd.DSA_COMP_DR_OFFSET_ERANGE
    ap.delta_rec_size = 7
    assert run(t, ap).status == idxd.DSA_COMP_DR_ERANGE


def test_dualcast_writes_both_and_checks_low_bits(t: Dsa) -> None:
    data = pattern(3000)
    t.m.memory.write(SRC, data)
    d = desc(9, src_addr=SRC, dst_addr=DST, xfer_size=3000)
    d.dest2 = DST2 - 0x1000
    assert run(t, d).status == 1
    assert t.m.memory.read(DST, 3000) == data == t.m.memory.read(DST2 - 0x1000, 3000)
    d.dest2 = DST2 + 8
    assert run(t, d).status == idxd.DSA_COMP_DCAST_ERR


@pytest.mark.parametrize("invert", [True, False])
def test_crcgen_matches_bitwise_crc32c(t: Dsa, invert: bool) -> None:
    data = pattern(777)
    t.m.memory.write(SRC, data)
    flags = CRAV_RCR | (0 if invert else 1 << 17)
    d = desc(0x10, flags=flags, src_addr=SRC, xfer_size=777)
    d.crc_seed = 0x1234
    r = run(t, d)
    if invert:
        assert r.crc_val == crc32c_bitwise(data, 0x1234 ^ 0xFFFFFFFF) ^ 0xFFFFFFFF
    else:
        assert r.crc_val == crc32c_bitwise(data, 0x1234)


def test_crcgen_reads_seed_from_memory_and_copy_crc_copies(t: Dsa) -> None:
    data = b"123456789"
    t.m.memory.write(SRC, data)
    t.m.memory.write_u32(DST2, 0)
    d = desc(0x11, flags=CRAV_RCR | 1 << 16, src_addr=SRC, dst_addr=DST, xfer_size=9)
    d.seed_addr = DST2
    r = run(t, d)
    assert (r.status, r.crc_val) == (1, 0xE3069283)
    assert t.m.memory.read(DST, 9) == data
    d.seed_addr = DST2 + 2
    assert run(t, d).status == idxd.DSA_COMP_ADDR_ALIGN


def _protect(data: bytes, bs: int, ref: int, app: int) -> bytes:
    out = b""
    for i in range(len(data) // bs):
        blk = data[i * bs : (i + 1) * bs]
        out += blk + crc16_bitwise(blk).to_bytes(2, "big") + app.to_bytes(2, "big")
        out += ((ref + i) & 0xFFFFFFFF).to_bytes(4, "big")
    return out


def test_dif_insert_check_strip_update(t: Dsa) -> None:
    data = pattern(2048, 13)
    t.m.memory.write(SRC, data)
    ins = desc(0x13, src_addr=SRC, dst_addr=DST, xfer_size=2048)
    ins.ins_ref_tag_seed, ins.ins_app_tag_seed = 100, 0xBEEF
    r = run(t, ins)
    assert r.status == 1 and r.dif_ins_ref_tag == 104
    prot = _protect(data, 512, 100, 0xBEEF)
    assert t.m.memory.read(DST, len(prot)) == prot
    chk = desc(0x12, src_addr=DST, xfer_size=len(prot))
    chk.chk_ref_tag_seed, chk.chk_app_tag_seed = 100, 0xBEEF
    assert run(t, chk).status == 1
    t.m.memory.write(DST + 520 * 2 + 3, b"\x00")  # corrupt block 2 data
    r = run(t, chk)
    assert (r.status, r.dif_status, r.bytes_completed) == (9, 1, 1040)
    chk.src_dif_flags = 0x20  # guard check disabled
    assert run(t, chk).status == 1
    t.m.memory.write(DST, prot)
    strp = desc(0x14, src_addr=DST, dst_addr=DST2, xfer_size=len(prot))
    strp.chk_ref_tag_seed, strp.chk_app_tag_seed = 100, 0xBEEF
    assert run(t, strp).status == 1
    assert t.m.memory.read(DST2, 2048) == data
    upd = desc(0x15, src_addr=DST, dst_addr=DST2, xfer_size=len(prot))
    upd.src_ref_tag_seed, upd.src_app_tag_seed = 100, 0xBEEF
    upd.dest_ref_tag_seed, upd.dest_app_tag_seed = 7, 0x1111
    r = run(t, upd)
    assert r.status == 1 and r.dif_upd_dest_ref_tag == 11
    assert t.m.memory.read(DST2, len(prot)) == _protect(data, 512, 7, 0x1111)
    upd.src_ref_tag_seed = 5
    r = run(t, upd)
    assert (r.status, r.dif_status) == (9, 4)


def test_cflush_and_drain_complete(t: Dsa) -> None:
    assert run(t, desc(0x20, dst_addr=DST, xfer_size=4096)).status == 1
    assert run(t, desc(2)).status == 1


def test_batch_runs_list_and_fence_stops_after_failure(t: Dsa) -> None:
    t.m.memory.write(SRC, b"x" * 64)
    subs = [
        desc(3, cr=CR_BASE + 64, src_addr=SRC, dst_addr=DST, xfer_size=64),
        desc(0x55, cr=CR_BASE + 96),
        desc(4, cr=CR_BASE + 128, flags=CRAV_RCR | 1, dst_addr=DST2, xfer_size=8, pattern=1),
    ]
    t.m.memory.write(BUF + 0x300000, b"".join(s.to_bytes() for s in subs))
    r = run(t, desc(1, desc_list_addr=BUF + 0x300000, desc_count=3))
    assert (r.status, r.bytes_completed) == (idxd.DSA_COMP_BATCH_FAIL, 2)
    assert t.record(CR_BASE + 64).status == 1
    assert t.record(CR_BASE + 96).status == idxd.DSA_COMP_BAD_OPCODE
    assert t.record(CR_BASE + 128).status == 0
    assert t.m.memory.read(DST, 64) == b"x" * 64


def test_batch_in_batch_and_bad_lists(t: Dsa) -> None:
    inner = desc(1, cr=CR_BASE + 64, desc_list_addr=0, desc_count=2)
    t.m.memory.write(BUF, inner.to_bytes() + desc(0, cr=CR_BASE + 96).to_bytes())
    r = run(t, desc(1, desc_list_addr=BUF, desc_count=2))
    assert r.status == idxd.DSA_COMP_BATCH_FAIL
    assert t.record(CR_BASE + 64).status == idxd.DSA_COMP_BAD_OPCODE
    assert run(t, desc(1, desc_list_addr=BUF + 8, desc_count=2)).status == 0x18
    assert run(t, desc(1, desc_list_addr=BUF, desc_count=1)).status == 0x14
    assert run(t, desc(1, desc_list_addr=BUF, desc_count=2000)).status == 0x14
    r = run(t, desc(1, desc_list_addr=(64 << 20) - 64, desc_count=2))
    assert r.status == idxd.DSA_COMP_TRANSLATION_FAIL


def test_invalid_flags_report_the_bits(t: Dsa) -> None:
    r = run(t, desc(3, flags=CRAV_RCR | 0x40 | idxd.IDXD_OP_FLAG_CR, dst_addr=DST, xfer_size=8))
    assert (r.status, r.invalid_flags) == (idxd.DSA_COMP_INVALID_FLAGS, 0xC0)


def test_reserved_field_nonzero(t: Dsa) -> None:
    d = desc(0, src_addr=1)
    assert run(t, d).status == idxd.DSA_COMP_NOZERO_RESERVE
    assert run(t, desc(0, rsvd=1)).status == idxd.DSA_COMP_NOZERO_RESERVE


def test_misaligned_completion_address_goes_to_swerr(t: Dsa) -> None:
    t.submit(desc(0, cr=CR_BASE + 8))
    t.run()
    qw0, _, qw2 = t.swerr()
    assert qw0 & 1 and (qw0 >> 8) & 0xFF == idxd.DSA_COMP_CRA_ALIGN and qw2 == CR_BASE + 8
    assert t.m.memory.read(CR_BASE, 64) == bytes(64)


def test_transfer_size_over_wq_max() -> None:
    t = Dsa()
    t.enable_msix()
    t.config_wq(0, shifts=12 | 3 << 5)
    t.config_group(0, 1, 1)
    assert t.cmd(1) & 0xFF == 0 and t.cmd(6, 0) & 0xFF == 0
    r = run(t, desc(3, src_addr=SRC, dst_addr=DST, xfer_size=4097))
    assert r.status == idxd.DSA_COMP_XFER_ERANGE
    assert t.m.memory.read(DST, 16) == bytes(16)


def test_zero_size_succeeds_without_touching_memory(t: Dsa) -> None:
    r = run(t, desc(4, pattern=0xFF, dst_addr=DST, xfer_size=0))
    assert (r.status, r.bytes_completed) == (1, 0)
    assert t.m.memory.read(DST, 8) == bytes(8)


def test_page_fault_gives_partial_completion(t: Dsa) -> None:
    end = 64 << 20
    t.m.memory.write(end - 100, b"q" * 100)
    r = run(t, desc(3, src_addr=end - 100, dst_addr=DST, xfer_size=300))
    assert (r.status, r.bytes_completed, r.fault_addr) == (0x22, 100, end)
    r = run(t, desc(3, src_addr=SRC, dst_addr=end - 50, xfer_size=300))
    assert (r.status, r.bytes_completed) == (0x22 | 0x80, 50)


def test_completion_record_fault_goes_to_swerr(t: Dsa) -> None:
    t.submit(desc(0, cr=64 << 20))
    t.run()
    qw0, _, qw2 = t.swerr()
    assert (qw0 >> 8) & 0xFF == idxd.DSA_COMP_CRA_XLAT and qw2 == 64 << 20


def test_completion_interrupt_uses_the_handle(t: Dsa) -> None:
    t.msis.clear()
    run(t, desc(0, flags=CRAV_RCR | idxd.IDXD_OP_FLAG_RCI, int_handle=1))
    assert t.msis == [(0xFEE00000, 0x41)]
    r = run(t, desc(0, flags=CRAV_RCR | idxd.IDXD_OP_FLAG_RCI, int_handle=99))
    assert r.status == idxd.DSA_COMP_INT_HANDLE_INVAL
