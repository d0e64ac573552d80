"""Bad input (issue 9): any STE/CD/command/queue-pointer content gets the spec's event,
GERROR or CERROR code; no Python exception escapes; nothing is written outside the
event queue and the MSI targets commands name, and DMA reaches only pages a valid
mapping names."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hw.smmuv3 import Evt
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from hw.smmuv3.entries import Op
from hw.smmuv3.queues import LAYOUTS
from tests.hw.smmuv3.helpers import RID, Rig

RAM = 4 << 20
SID = 0x20
U64 = st.integers(0, (1 << 64) - 1)
OPS = st.one_of(st.sampled_from([int(o) for o in Op] + [0, 0x7F]), st.integers(0, 0xFF))

EVENTS_FROM_TRANSLATION = {
    Evt.C_BAD_STREAMID,
    Evt.F_STE_FETCH,
    Evt.C_BAD_STE,
    Evt.F_STREAM_DISABLED,
    Evt.C_BAD_SUBSTREAMID,
    Evt.F_CD_FETCH,
    Evt.C_BAD_CD,
    Evt.F_WALK_EABT,
    Evt.F_TRANSLATION,
    Evt.F_ADDR_SIZE,
    Evt.F_ACCESS,
    Evt.F_PERMISSION,
}


def _rig() -> Rig:
    r = Rig(ram=RAM)
    r.cd(0, 1)
    r.cd(1, 1)
    r.table(1).map(0x1000, 0x30_0000)
    return r


def _snapshot(r: Rig) -> bytes:
    return bytes(r.m.memory.data)


def _changed_outside(r: Rig, before: bytes, allowed: list[tuple[int, int]]) -> list[int]:
    after = r.m.memory.data
    out = []
    for i in range(0, RAM, 4096):
        if before[i : i + 4096] != after[i : i + 4096]:
            for j in range(i, i + 4096):
                if before[j] != after[j] and not any(lo <= j < hi for lo, hi in allowed):
                    out.append(j)
    return out


def _check_dma(r: Rig, sid: int, pasid: int | None, addr: int, write: bool) -> None:
    res = r.unit.translate(sid, pasid, False, addr, 0x2000, write)
    a = addr
    for phys, length in res.runs:
        for off in range(0, length, 4096):
            fresh = r.unit.fresh_outcome(sid, pasid, False, write, a + off)
            assert fresh == ((phys + off) & ~0xFFF, 0)
        a += length
    if res.fault is not None and res.fault.reason > 0:
        assert res.fault.reason in EVENTS_FROM_TRANSLATION


@settings(max_examples=60, deadline=None)
@given(
    ste=st.tuples(U64, U64, U64),
    config=st.sampled_from((None, 0b000, 0b100, 0b101, 0b110, 0b011)),
    cd=st.tuples(U64, U64, U64, U64),
    valid_cd=st.booleans(),
    pasid=st.one_of(st.none(), st.integers(0, (1 << 20) - 1), st.integers(0, 3)),
    addr=st.one_of(st.integers(0, (1 << 64) - 0x2000), st.integers(0, 0x8000)),
    write=st.booleans(),
)
def test_random_ste_and_cd_contents_give_events_and_never_raise(
    ste: tuple[int, int, int],
    config: int | None,
    cd: tuple[int, int, int, int],
    valid_cd: bool,
    pasid: int | None,
    addr: int,
    write: bool,
) -> None:
    r = _rig()
    dw0 = ste[0]
    if config is not None:
        dw0 = ent.SteDw0.CONFIG.put(dw0 | 1, config)
        dw0 = ent.SteDw0.S1CTXPTR.put(dw0, r.cds.base >> 6)
    r.smmu.write_ste(SID, (dw0, ste[1], ste[2]))
    d0 = cd[0] | ent.CdDw0.V.mask | ent.CdDw0.AA64.mask if valid_cd else cd[0]
    r.cds.write(2, (d0, cd[1], cd[2], cd[3]))
    before = _snapshot(r)
    evtq = (r.smmu.evtq, r.smmu.evtq + (32 << r.smmu.evtq_log2))
    for sid in (SID, RID):
        _check_dma(r, sid, pasid, addr, write)
    r.m.clock.advance(10_000)
    assert _changed_outside(r, before, [evtq]) == []
    for e in r.smmu.events():
        assert e[0] & 0xFF in EVENTS_FROM_TRANSLATION


def _illegal(dw0: int, dw1: int) -> bool:
    layout = LAYOUTS.get(dw0 & 0xFF)
    if layout is None or dw0 & layout[0].RSVDZ_MASK or dw1 & layout[1].RSVDZ_MASK:
        return True
    return dw0 & 0xFF == Op.CMD_SYNC and ent.CmdSync0.CS.get(dw0) == 3


@settings(max_examples=60, deadline=None)
@given(
    cmds=st.lists(st.tuples(OPS, U64, U64, st.booleans()), min_size=1, max_size=6),
    prod_noise=st.integers(0, 0xFFFF_FFFF),
    use_noise=st.booleans(),
)
def test_random_commands_and_queue_pointers_stop_at_cerror_ill_or_complete(
    cmds: list[tuple[int, int, int, bool]], prod_noise: int, use_noise: bool
) -> None:
    r = _rig()
    s = r.smmu
    allowed: list[tuple[int, int]] = [(s.evtq, s.evtq + (32 << s.evtq_log2))]
    entries: list[tuple[int, int]] = []
    for op, hi, dw1, keep_rsvd in cmds:
        dw0 = (hi & ~0xFF) | op
        if not keep_rsvd:
            layout = LAYOUTS.get(op)
            if layout is not None:
                dw0 &= ~layout[0].RSVDZ_MASK
                dw1 &= ~layout[1].RSVDZ_MASK
        entries.append((dw0, dw1))
        if op == Op.CMD_SYNC:
            target = dw1 & ent.CmdSync1.MSIADDR.mask
            allowed.append((target, target + 4))
        s.put((dw0, dw1))
    before = _snapshot(r)
    prod = prod_noise if use_noise else s.prod
    r.m.mmio_write(0xFED9_0000 + sr.CMDQ_PROD_OFF, 4, prod)
    r.m.clock.advance(100_000)
    cons = s.cons_reg()
    mask = (1 << 9) - 1
    if r.unit.gerror_active(sr.GERROR.CMDQ_ERR.mask):
        assert sr.CMDQ_CONS.ERR.get(cons) == sr.CERROR_ILL
        raw = r.m.memory.read(s.cmdq + 16 * (cons & 0xFF), 16)
        assert _illegal(int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little"))
    else:
        assert cons & mask == prod & mask
    assert _changed_outside(r, before, allowed) == []
    _check_dma(r, RID, None, 0x1000, False)


@settings(max_examples=30, deadline=None)
@given(
    strtab_cfg=st.integers(0, 0xFFFF_FFFF),
    strtab_base=U64,
    evtq_base=U64,
    sid=st.integers(0, 0xFFFF_FFFF),
)
def test_random_table_and_queue_base_registers_never_raise(
    strtab_cfg: int, strtab_base: int, evtq_base: int, sid: int
) -> None:
    r = _rig()
    s = r.smmu
    s.cr0(sr.CR0.CMDQEN.mask)
    base = 0xFED9_0000
    r.m.mmio_write(base + sr.STRTAB_BASE_CFG_OFF, 4, strtab_cfg)
    r.m.mmio_write(base + sr.STRTAB_BASE_OFF, 8, strtab_base)
    r.m.mmio_write(base + sr.EVTQ_BASE_OFF, 8, evtq_base)
    s.cr0(sr.CR0.CMDQEN.mask | sr.CR0.EVTQEN.mask | sr.CR0.SMMUEN.mask)
    before = _snapshot(r)
    res = r.unit.translate(sid, None, False, 0x1000, 0x1000, True)
    r.m.clock.advance(10_000)
    evtq, log2 = r.unit.evtq.geometry()
    assert _changed_outside(r, before, [(evtq, evtq + (32 << log2))]) == []
    if res.fault is not None and res.fault.reason > 0:
        assert res.fault.reason in EVENTS_FROM_TRANSLATION
    r.unit.dump()
