"""Register protocols: CR0/CR0ACK, GBPA Update, IRQ_CTRL/ACK, GERROR/GERRORN toggles,
write protection of live tables and queues, MMIO robustness, and the dump."""

from __future__ import annotations

from hw.smmuv3 import Evt
from hw.smmuv3 import registers as sr
from tests.hw.smmuv3.helpers import (
    BASE,
    RID,
    Pages,
    Rig,
    Smmu,
    make,
    reason,
    reg_read,
    reg_write,
)


def test_cr0ack_follows_cr0_only_after_the_clock_runs() -> None:
    m, _unit = make()
    reg_write(m, sr.CR0_OFF, sr.CR0.CMDQEN.mask)
    assert reg_read(m, sr.CR0ACK_OFF) == 0
    m.clock.advance(1000)
    assert reg_read(m, sr.CR0ACK_OFF) == sr.CR0.CMDQEN.mask


def test_cr0_enables_the_model_does_not_have_are_not_acknowledged() -> None:
    m, unit = make()
    reg_write(m, sr.CR0_OFF, sr.CR0.PRIQEN.mask | sr.CR0.ATSCHK.mask | sr.CR0.EVTQEN.mask)
    m.clock.advance(1000)
    assert reg_read(m, sr.CR0ACK_OFF) == sr.CR0.EVTQEN.mask
    assert unit.errors


def test_cr0ack_is_read_only() -> None:
    m, _unit = make()
    reg_write(m, sr.CR0ACK_OFF, 0xF)
    assert reg_read(m, sr.CR0ACK_OFF) == 0


def test_smmu_disabled_bypasses_by_default() -> None:
    _m, unit = make()
    assert unit.translate(RID, None, False, 0x3000, 16, True).runs == ((0x3000, 16),)


def test_smmu_disabled_bypass_stops_at_the_end_of_ram() -> None:
    m, unit = make()
    res = unit.translate(RID, None, False, m.memory.size - 8, 16, False)
    assert res.runs == ((m.memory.size - 8, 8),) and res.fault is not None


def test_gbpa_abort_applies_after_the_update_handshake() -> None:
    m, unit = make()
    reg_write(m, sr.GBPA_OFF, sr.GBPA.UPDATE.mask | sr.GBPA.ABORT.mask)
    assert reg_read(m, sr.GBPA_OFF) & sr.GBPA.UPDATE.mask
    m.clock.advance(1000)
    assert reg_read(m, sr.GBPA_OFF) == sr.GBPA.ABORT.mask
    assert reason(unit.translate(RID, None, False, 0x3000, 16, True)) == Evt.ABORT


def test_gbpa_write_without_update_is_ignored() -> None:
    m, unit = make()
    reg_write(m, sr.GBPA_OFF, sr.GBPA.ABORT.mask)
    m.clock.advance(1000)
    assert reg_read(m, sr.GBPA_OFF) == 0 and not unit.gbpa_abort


def test_irq_ctrlack_follows_irq_ctrl() -> None:
    m, _unit = make()
    reg_write(m, sr.IRQ_CTRL_OFF, 0x7)
    m.clock.advance(1000)
    assert reg_read(m, sr.IRQ_CTRLACK_OFF) == 0x5  # no PRI queue


def test_gerror_is_read_only_and_gerrorn_acknowledges() -> None:
    r = Rig()
    reg_write(r.m, sr.GERROR_OFF, 1)
    assert reg_read(r.m, sr.GERROR_OFF) == 0
    r.unit.raise_gerror(sr.GERROR.SFM_ERR.mask)
    assert r.unit.gerror_active(sr.GERROR.SFM_ERR.mask)
    reg_write(r.m, sr.GERRORN_OFF, reg_read(r.m, sr.GERROR_OFF))
    assert not r.unit.gerror_active(sr.GERROR.SFM_ERR.mask)


def test_active_gerror_is_not_toggled_again() -> None:
    r = Rig()
    r.unit.raise_gerror(sr.GERROR.SFM_ERR.mask)
    r.unit.raise_gerror(sr.GERROR.SFM_ERR.mask)
    assert reg_read(r.m, sr.GERROR_OFF) == sr.GERROR.SFM_ERR.mask


def test_gerror_interrupt_is_an_msi() -> None:
    r = Rig()
    r.unit.raise_gerror(sr.GERROR.SFM_ERR.mask)
    assert r.m.lost_msis[-1] == (0xFEE0_0000, 0x42)


def test_gerror_interrupt_is_wired_without_msi_support() -> None:
    m, unit = make({"msi": False})
    Smmu(m, unit, Pages(m))
    unit.raise_gerror(sr.GERROR.SFM_ERR.mask)
    assert unit.wired_irqs["GERROR"] == 1


def test_strtab_base_cannot_change_while_smmuen() -> None:
    r = Rig()
    before = reg_read(r.m, sr.STRTAB_BASE_OFF, 8)
    reg_write(r.m, sr.STRTAB_BASE_OFF, 0x80_0000, 8)
    assert reg_read(r.m, sr.STRTAB_BASE_OFF, 8) == before
    assert any("STRTAB_BASE" in e for e in r.unit.errors)


def test_queue_registers_cannot_change_while_their_queue_is_enabled() -> None:
    r = Rig()
    cmdq, evtq = reg_read(r.m, sr.CMDQ_BASE_OFF, 8), reg_read(r.m, sr.EVTQ_BASE_OFF, 8)
    reg_write(r.m, sr.CMDQ_BASE_OFF, 0x80_0000, 8)
    reg_write(r.m, sr.CMDQ_CONS_OFF, 5)
    reg_write(r.m, sr.EVTQ_BASE_OFF, 0x80_0000, 8)
    reg_write(r.m, sr.EVTQ_PROD_OFF, 5)
    assert reg_read(r.m, sr.CMDQ_BASE_OFF, 8) == cmdq
    assert reg_read(r.m, sr.EVTQ_BASE_OFF, 8) == evtq
    assert reg_read(r.m, sr.CMDQ_CONS_OFF) != 5 and reg_read(r.m, sr.EVTQ_PROD_OFF) != 5


def test_mmio_never_raises_on_bad_accesses() -> None:
    m, unit = make()
    for off, size in ((0x3, 4), (0x1000, 4), (0x1FFFC, 4), (0x20, 8), (0x100A8, 2)):
        m.mmio_write(BASE + off, size, 0xFFFF_FFFF)
        m.mmio_read(BASE + off, size)
    assert unit.regs.violations


def test_dump_lists_streams_cds_and_leaves() -> None:
    r = Rig()
    r.cd(0, 1)
    r.cd(3, 2, R=0)
    r.table(1).map(0x4000_0000, 0x20_0000)
    r.table(2).map(0x1000, 0x40_0000, level=2)
    text = r.unit.dump()
    assert "sid 0x10: stage-1" in text
    assert "cd 0: asid=1" in text and "cd 3: asid=2" in text
    assert "0x40000000 -> 0x200000 0x1000 rwu af ng" in text
    assert "0x0 -> 0x400000 0x200000" in text


def test_dump_shows_two_level_tables_and_bad_entries() -> None:
    r = Rig(two_level=True, cdmax=12, fmt=2)
    r.cd(1, 1)
    r.smmu.write_ste(0x111, (1 | (0b101 << 1), 1 << 27, 0))
    text = r.unit.dump()
    assert "2-level" in text and "sid 0x10: stage-1" in text
    assert "cd 1: asid=1" in text
