"""Register access policies applied by the register file, and its refusal to raise."""

from __future__ import annotations

import pytest

from hw.regs import Access, Field, Register, RegisterFile, ViolationKind


class STATUS(Register):
    WIDTH = 32
    DONE = Field(0, 0, Access.RW1C)
    ERR = Field(1, 1, Access.RW1C)
    MODE = Field(7, 4, Access.RW, reset=0x3)
    VERSION = Field(15, 8, Access.RO, reset=0x10)
    GO = Field(16, 16, Access.WO)
    LOCK = Field(17, 17, Access.RW1S)
    KEEP = Field(23, 18, Access.RsvdP)


class BASE(Register):
    WIDTH = 64
    ADDR = Field(63, 12, Access.RW)


def make() -> tuple[RegisterFile, list[tuple[int, int, int]]]:
    rf = RegisterFile("dev", 0x100)
    seen: list[tuple[int, int, int]] = []
    rf.add(
        STATUS, 0x0, on_write=lambda s, old, written, touched: seen.append((old, written, s.value))
    )
    rf.add(BASE, 0x8)
    return rf, seen


def test_reset_values_come_from_fields() -> None:
    rf, _ = make()
    assert rf.read(0x0, 4) == (0x10 << 8) | (0x3 << 4)


def test_rw1c_bits_clear_on_one_and_ignore_zero() -> None:
    rf, _ = make()
    rf["STATUS"] = rf["STATUS"] | 0b11
    rf.write(0x0, 4, 0b01 | (0x3 << 4))
    assert rf.field("STATUS", STATUS.DONE) == 0
    assert rf.field("STATUS", STATUS.ERR) == 1


def test_ro_field_ignores_writes() -> None:
    rf, _ = make()
    rf.write(0x0, 4, 0xFF << 8)
    assert rf.field("STATUS", STATUS.VERSION) == 0x10
    assert not rf.violations


def test_rw_field_takes_the_written_value() -> None:
    rf, _ = make()
    rf.write(0x0, 4, 0x9 << 4)
    assert rf.field("STATUS", STATUS.MODE) == 0x9


def test_wo_bits_reach_the_side_effect_but_read_as_zero() -> None:
    rf, seen = make()
    rf.write(0x0, 4, 1 << 16)
    assert seen[-1][1] & (1 << 16)
    assert rf.read(0x0, 4) & (1 << 16) == 0


def test_rw1s_bit_sets_and_cannot_be_cleared_by_software() -> None:
    rf, _ = make()
    rf.write(0x0, 4, 1 << 17)
    rf.write(0x0, 4, 0)
    assert rf.field("STATUS", STATUS.LOCK) == 1


def test_rsvdz_violation_is_flagged_and_ignored() -> None:
    rf, _ = make()
    before = rf["STATUS"]
    rf.write(0x0, 4, before | 1 << 31)
    assert rf["STATUS"] == before
    assert rf.violations[-1].kind is ViolationKind.RSVDZ
    assert rf.violations[-1].register == "STATUS"


def test_rsvdp_bits_are_preserved_silently() -> None:
    rf, _ = make()
    rf.write(0x0, 4, 0x3F << 18)
    assert rf.field("STATUS", STATUS.KEEP) == 0
    assert not rf.violations


def test_64bit_register_accepts_dword_halves() -> None:
    rf, _ = make()
    rf.write(0x8, 4, 0x1234_5000)
    rf.write(0xC, 4, 0xAB)
    assert rf.read(0x8, 8) == 0xAB_1234_5000
    assert rf.read(0xC, 4) == 0xAB


def test_misaligned_access_reads_zero_and_is_recorded() -> None:
    rf, _ = make()
    assert rf.read(0x2, 4) == 0
    rf.write(0xA, 4, 0xFFFF_FFFF)
    assert rf["BASE"] == 0
    assert [v.kind for v in rf.violations] == [ViolationKind.MISALIGNED] * 2


def test_wrong_width_access_is_refused() -> None:
    rf, _ = make()
    rf.write(0x0, 8, 0xFF)
    assert rf.read(0x0, 2) == 0
    assert {v.kind for v in rf.violations} == {ViolationKind.WIDTH}


def test_unmapped_offset_reads_zero() -> None:
    rf, _ = make()
    assert rf.read(0x40, 4) == 0
    assert rf.violations[0].kind is ViolationKind.UNMAPPED


def test_reset_keeps_sticky_rw1cs_bits() -> None:
    class STICKY(Register):
        LOG = Field(0, 0, Access.RW1CS)
        EN = Field(1, 1, Access.RW)

    rf = RegisterFile("s", 0x10)
    rf.add(STICKY, 0)
    rf["STICKY"] = 0b11
    rf.reset()
    assert rf["STICKY"] == 0b01


def test_field_put_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        STATUS.MODE.put(0, 0x10)


def test_encode_and_decode_round_trip() -> None:
    value = STATUS.encode(MODE=5, VERSION=2)
    assert STATUS.decode(value)["MODE"] == 5
    with pytest.raises(ValueError, match="no field"):
        STATUS.encode(NOPE=1)


def test_overlapping_fields_are_rejected_at_definition() -> None:
    with pytest.raises(ValueError, match="overlaps"):

        class BAD(Register):
            A = Field(3, 0)
            B = Field(4, 3)


def test_register_layout_errors() -> None:
    rf = RegisterFile("x", 0x10)
    rf.add(STATUS, 0)
    with pytest.raises(ValueError, match="twice"):
        rf.add(STATUS, 4)
    with pytest.raises(ValueError, match="overlaps"):
        rf.add(STATUS, 0, name="OTHER")
    with pytest.raises(ValueError, match="outside"):
        rf.add(BASE, 0xC)


def test_every_write_of_a_remembered_access_is_checked_again() -> None:
    """The register file remembers how an accepted (offset, size) is applied; the
    value-dependent policy (RsvdZ, RW1C, the hook) still runs on every write, and an
    access that was refused is refused again."""
    rf, seen = make()
    for _ in range(2):
        rf.write(0x0, 4, 1 << 31)  # RsvdZ: flagged each time
        rf.write(0x0, 2, 0)  # a width STATUS does not take: refused each time
        rf.write(0x8, 4, 0x5000)  # accepted: the value lands each time
        assert rf["BASE"] == 0x5000
        rf.write(0x8, 4, 0)
    kinds = [v.kind for v in rf.violations]
    assert kinds == [ViolationKind.RSVDZ, ViolationKind.WIDTH] * 2
    assert len(seen) == 2  # STATUS's hook ran for each accepted write
    rf.write(0x0, 4, 0x3 << 17)  # set LOCK (RW1S) ...
    rf.write(0x0, 4, 0)  # ... and it stays set through the remembered access
    assert rf.field("STATUS", STATUS.LOCK) == 1
