"""Command queue (consumption as a clock event, CMD_SYNC completion, CERROR_ILL and
recovery) and event queue (records, wrap, overflow, interrupts) — IHI 0070 §3.5, 4, 7."""

from __future__ import annotations

import pytest

from hw.smmuv3 import Evt, Op
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from tests.hw.smmuv3.helpers import (
    MSI_ADDR,
    RID,
    Pages,
    Rig,
    Smmu,
    cmd_cfgi_ste,
    cmd_sync,
    make,
    reg_read,
    reg_write,
)


def test_commands_are_consumed_only_when_the_clock_runs() -> None:
    r = Rig()
    s = r.smmu
    s.put(cmd_cfgi_ste(RID))
    s.put(cmd_sync())
    reg_write(r.m, sr.CMDQ_PROD_OFF, s.prod)
    assert s.cons_reg() != s.prod
    r.m.clock.advance(1000)
    assert s.cons_reg() == s.prod


def test_cmd_sync_msi_write_signals_completion_into_ram() -> None:
    """Linux MSI polling: the SYNC's MSI address is the SYNC entry itself, data 0."""
    r = Rig()
    s = r.smmu
    s.put(cmd_cfgi_ste(RID))
    entry = s.cmdq + 16 * (s.prod & 0xFF)
    s.put(cmd_sync(ent.SYNC_CS_IRQ, msiaddr=entry, msidata=0))
    assert r.m.memory.read_u32(entry) != 0
    s.ring()
    assert r.m.memory.read_u32(entry) == 0


def test_cmd_sync_msi_outside_ram_is_an_interrupt() -> None:
    r = Rig()
    r.smmu.put(cmd_sync(ent.SYNC_CS_IRQ, msiaddr=MSI_ADDR, msidata=0x77))
    r.smmu.ring()
    assert r.m.lost_msis[-1] == (MSI_ADDR, 0x77)


def test_cmd_sync_sev_is_counted() -> None:
    r = Rig()
    r.smmu.put(cmd_sync(ent.SYNC_CS_SEV))
    r.smmu.ring()
    assert r.unit.stats.sev == 1


def test_cmd_sync_without_msi_support_writes_nothing() -> None:
    m, unit = make({"msi": False})
    pages = Pages(m)
    s = Smmu(m, unit, pages)
    word = pages.alloc()
    m.memory.write_u32(word, 5)
    s.put(cmd_sync(ent.SYNC_CS_IRQ, msiaddr=word))
    s.ring()
    assert m.memory.read_u32(word) == 5 and unit.stats.syncs >= 2


def _bad_command_rig(bad: tuple[int, int]) -> tuple[Rig, int]:
    r = Rig()
    s = r.smmu
    s.put(cmd_cfgi_ste(RID))
    at = s.prod
    s.put(bad)
    s.put(cmd_sync())
    s.ring()
    return r, at


@pytest.mark.parametrize(
    "bad",
    [
        (0x7F, 0),
        (Op.TLBI_EL2_ALL, 0),
        (Op.TLBI_S12_VMALL, 0),
        (Op.ATC_INV, 0),
        (Op.PRI_RESP, 0),
        (Op.RESUME, 0),
        (Op.CFGI_STE | (1 << 10), 0),
        (Op.CFGI_STE, 1 << 5),
        (ent.CmdSync0.encode(OP=Op.CMD_SYNC, CS=3), 0),
    ],
    ids=["unknown", "el2", "s2", "atc", "pri", "resume", "ssec", "rsvd-dw1", "sync-cs3"],
)
def test_illegal_command_stops_the_queue_with_cerror_ill(bad: tuple[int, int]) -> None:
    r, at = _bad_command_rig(bad)
    cons = r.smmu.cons_reg()
    assert cons & 0xFFFFF == at
    assert sr.CMDQ_CONS.ERR.get(cons) == sr.CERROR_ILL
    assert r.unit.gerror_active(sr.GERROR.CMDQ_ERR.mask)


def test_cmdq_error_raises_the_gerror_interrupt() -> None:
    r, _at = _bad_command_rig((0x7F, 0))
    assert (MSI_ADDR, 0x42) in r.m.lost_msis


def test_queue_stays_stopped_until_gerrorn_acknowledges() -> None:
    r, at = _bad_command_rig((0x7F, 0))
    reg_write(r.m, sr.CMDQ_PROD_OFF, r.smmu.prod)
    r.m.clock.advance(10_000)
    assert r.smmu.cons_reg() & 0xFFFFF == at


def test_linux_recovery_overwrites_the_bad_entry_with_sync_and_acks_gerrorn() -> None:
    """``arm_smmu_cmdq_skip_err``: replace the entry with CMD_SYNC, copy GERROR to GERRORN."""
    r, at = _bad_command_rig((0x7F, 0))
    r.m.memory.write(r.smmu.cmdq + 16 * at, bytes(16))
    r.m.memory.write_u64(r.smmu.cmdq + 16 * at, Op.CMD_SYNC)
    reg_write(r.m, sr.GERRORN_OFF, reg_read(r.m, sr.GERROR_OFF))
    r.m.clock.advance(10_000)
    assert r.smmu.cons_reg() & 0xFFFFF == r.smmu.prod
    assert not r.unit.gerror_active(sr.GERROR.CMDQ_ERR.mask)


def test_recovery_by_gerrorn_and_moving_cmdq_cons_past_the_bad_entry() -> None:
    r, at = _bad_command_rig((0x7F, 0))
    reg_write(r.m, sr.GERRORN_OFF, reg_read(r.m, sr.GERROR_OFF))
    r.smmu.cr0(sr.CR0.EVTQEN.mask | sr.CR0.SMMUEN.mask)
    reg_write(r.m, sr.CMDQ_CONS_OFF, at + 1)
    r.smmu.cr0(sr.CR0.CMDQEN.mask | sr.CR0.EVTQEN.mask | sr.CR0.SMMUEN.mask)
    r.m.clock.advance(10_000)
    assert r.smmu.cons_reg() & 0xFFFFF == r.smmu.prod
    assert r.unit.stats.cmd_errors == 1


def test_command_fetch_outside_ram_is_cerror_abt() -> None:
    r = Rig()
    r.smmu.cr0(sr.CR0.EVTQEN.mask | sr.CR0.SMMUEN.mask)
    reg_write(r.m, sr.CMDQ_BASE_OFF, (1 << 40) | 8, 8)
    reg_write(r.m, sr.CMDQ_CONS_OFF, 0)
    reg_write(r.m, sr.CMDQ_PROD_OFF, 1)
    r.smmu.cr0(sr.CR0.CMDQEN.mask | sr.CR0.EVTQEN.mask | sr.CR0.SMMUEN.mask)
    r.m.clock.advance(10_000)
    assert sr.CMDQ_CONS.ERR.get(r.smmu.cons_reg()) == sr.CERROR_ABT


def test_commands_wrap_around_the_queue() -> None:
    r = Rig()
    for _ in range(300):
        r.smmu.put(cmd_cfgi_ste(RID))
        if r.smmu.prod % 50 == 0:
            r.smmu.ring()
    r.smmu.ring()
    assert r.smmu.cons_reg() == r.smmu.prod
    assert r.smmu.prod & 0x100  # the wrap bit flipped


def test_queue_log2size_is_capped_by_idr1() -> None:
    r = Rig({"cmdqs": 4})
    assert r.unit.cmdq.geometry()[1] == 4


def test_commands_are_ignored_while_the_queue_is_disabled() -> None:
    r = Rig()
    r.smmu.cr0(sr.CR0.EVTQEN.mask | sr.CR0.SMMUEN.mask)
    r.smmu.put(cmd_sync())
    reg_write(r.m, sr.CMDQ_PROD_OFF, r.smmu.prod)
    r.m.clock.advance(10_000)
    assert r.smmu.cons_reg() != r.smmu.prod
    r.unit.cmdq.process()
    assert r.smmu.cons_reg() != r.smmu.prod


# -- event queue --------------------------------------------------------------------------
def test_events_appear_after_the_clock_runs_and_interrupt() -> None:
    r = Rig()
    r.translate(0x1000)
    assert reg_read(r.m, sr.EVTQ_PROD_OFF) == 0
    r.m.clock.advance(1000)
    assert reg_read(r.m, sr.EVTQ_PROD_OFF) == 1
    assert r.m.lost_msis[-1] == (MSI_ADDR, 0x41)


def test_event_queue_overflow_sets_ovflg_and_drops_events() -> None:
    r = Rig()
    for _ in range(130):
        r.translate(0x1000, pasid=30)
    r.m.clock.advance(1000)
    prod = reg_read(r.m, sr.EVTQ_PROD_OFF)
    assert sr.EVTQ_PROD.OVFLG.get(prod) == 1
    assert prod & 0xFF == 0x80  # full: index 0, wrap 1
    assert r.unit.stats.events_lost == 2


def test_overflow_is_flagged_once_until_acknowledged() -> None:
    r = Rig()
    for _ in range(130):
        r.translate(0x1000, pasid=30)
    r.m.clock.advance(1000)
    events = r.smmu.events()
    assert len(events) == 128
    for _ in range(200):
        r.translate(0x1000, pasid=30)
    r.m.clock.advance(1000)
    assert sr.EVTQ_PROD.OVFLG.get(reg_read(r.m, sr.EVTQ_PROD_OFF)) == 1
    cons = reg_read(r.m, sr.EVTQ_CONS_OFF)
    reg_write(r.m, sr.EVTQ_CONS_OFF, cons | sr.EVTQ_CONS.OVACKFLG.mask)
    r.translate(0x1000, pasid=30)
    r.m.clock.advance(1000)
    assert sr.EVTQ_PROD.OVFLG.get(reg_read(r.m, sr.EVTQ_PROD_OFF)) == 0


def test_events_are_dropped_while_the_event_queue_is_disabled() -> None:
    r = Rig()
    r.smmu.cr0(sr.CR0.CMDQEN.mask | sr.CR0.SMMUEN.mask)
    r.translate(0x1000)
    r.m.clock.advance(1000)
    assert reg_read(r.m, sr.EVTQ_PROD_OFF) == 0
    assert r.unit.stats.events_dropped == 1


def test_event_queue_disabled_before_the_write_drops_pending_records() -> None:
    r = Rig()
    r.translate(0x1000)
    r.unit.evtq_enabled = False
    r.m.clock.advance(1000)
    assert r.unit.stats.events_dropped == 1


def test_event_write_outside_ram_is_evtq_abt_err() -> None:
    r = Rig()
    r.smmu.cr0(sr.CR0.CMDQEN.mask | sr.CR0.SMMUEN.mask)
    reg_write(r.m, sr.EVTQ_BASE_OFF, (1 << 40) | 4, 8)
    r.smmu.cr0(sr.CR0.CMDQEN.mask | sr.CR0.EVTQEN.mask | sr.CR0.SMMUEN.mask)
    r.translate(0x1000)
    r.m.clock.advance(1000)
    assert r.unit.gerror_active(sr.GERROR.EVTQ_ABT_ERR.mask)


def test_event_interrupt_is_wired_when_msi_is_unprogrammed() -> None:
    m, unit = make()
    pages = Pages(m)
    s = Smmu(m, unit, pages, irqs=False)
    reg_write(m, sr.IRQ_CTRL_OFF, sr.IRQ_CTRL.EVTQ_IRQEN.mask)
    m.clock.advance(1000)
    unit.translate(RID, None, False, 0, 4, False)
    assert s.event_ids() == [Evt.C_BAD_STE]
    assert unit.wired_irqs["EVTQ"] == 1


def test_no_interrupt_when_irq_is_disabled() -> None:
    m, unit = make()
    s = Smmu(m, unit, Pages(m), irqs=False)
    unit.translate(RID, None, False, 0, 4, False)
    assert s.event_ids() == [Evt.C_BAD_STE]
    assert unit.wired_irqs["EVTQ"] == 0 and not m.lost_msis
