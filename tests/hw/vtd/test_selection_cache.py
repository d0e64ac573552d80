"""A request whose context (and PASID) entries are cached and clean takes its table
selection from ``Caches.sels`` (one lookup) instead of looking both entries up. The
unit must behave as when every request selects the general way: the reference unit
here empties ``sels`` before each request. Randomized sequences of context and PASID
entry rewrites (other domain, other table type, not present, PASIDE, SRE and ERE
toggled), with and without the context/PASID-cache invalidations they need, IOTLB
flushes, and requests of every kind (with and without a PASID, user and
supervisor, execute, reads and writes) must give the same results, faults, fault
records, counters, stale uses and IOTLB contents on both."""

from __future__ import annotations

import random

import pytest

from hw.bus import DmaResult
from hw.machine import Machine
from hw.vtd import VtdUnit
from hw.vtd import entries as ent
from tests.hw.vtd.helpers import RID, PageTable, Tables, sm_setup

PASIDS = (0, 1, 2)
IOVA = 0x40_0000
PAGES = 8
PHYS = 0x100_0000

Setup = tuple[Machine, VtdUnit, Tables, list[PageTable]]


def _setup(rng: random.Random) -> Setup:
    m, unit, pages, t = sm_setup({"srs": True, "ers": True})
    pts = [PageTable(m, pages, 4, fl=fl) for fl in (False, True)]
    for pt in pts:
        for i in range(PAGES):
            pt.map(IOVA + (i << 12), PHYS + (i << 12))
    for pasid in PASIDS:
        _pasid(rng, (m, unit, t, pts), pasid)
    return m, unit, t, pts


def _pasid(rng: random.Random, s: Setup, pasid: int) -> None:
    m, _unit, t, pts = s
    pgtt = rng.choice((ent.PGTT_SL, ent.PGTT_FL, ent.PGTT_PT))
    pt = pts[pgtt == ent.PGTT_FL] if pgtt != ent.PGTT_PT else None
    addr = t.pasid_entry(RID, pasid, pgtt, did=rng.randrange(1, 4), pt=pt, sre=rng.random() < 0.5)
    q2 = m.memory.read_u64(addr + 16)
    if rng.random() < 0.5:
        m.memory.write_u64(addr + 16, q2 | ent.PasidQw2.ERE.mask)
    if rng.random() < 0.1:
        m.memory.write_u64(addr, m.memory.read_u64(addr) & ~1)  # not present


def _state(unit: VtdUnit) -> tuple[object, ...]:
    iotlb = {
        (key, shift, vpn): (e.phys, e.perms, e.dirty, list(e.slots), e.suspect)
        for key, t in unit.caches.iotlb.tables.items()
        for shift, d in zip((12, 21, 30), t[:3], strict=True)
        for vpn, e in d.items()
    }
    s = unit.stats
    counters = (s.iotlb_misses, s.iotlb_hits, s.faults, s.stale_uses, s.ctx_hits, s.pasid_hits)
    records = [
        (unit.regs[f"FRCD{i}_LO"], unit.regs[f"FRCD{i}_HI"]) for i in range(unit.faults.count)
    ]
    return iotlb, counters, records, sorted(unit.caches.ctx), sorted(unit.caches.pasid)


def _request(unit: VtdUnit, reference: bool, args: tuple[object, ...]) -> DmaResult:
    if reference:
        unit.caches.sels.clear()
    pasid, priv, addr, size, write, exe = args
    return unit.translate_ex(RID, pasid, priv, addr, size, write, exe)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(6))
def test_cached_selections_give_what_selecting_gives(seed: int) -> None:
    rng = random.Random(seed)
    fast, ref = _setup(random.Random(seed)), _setup(random.Random(seed))
    for _ in range(400):
        roll = rng.random()
        if roll < 0.12:
            pasid, state = rng.choice(PASIDS), rng.getstate()
            for s in (fast, ref):
                rng.setstate(state)
                _pasid(rng, s, pasid)
        elif roll < 0.16:
            paside = rng.random() < 0.7
            for _m, _unit, t, _pts in (fast, ref):
                t.sm_ctx(RID, paside=paside)
        elif roll < 0.24:
            which = rng.random()
            for _m, unit, _t, _pts in (fast, ref):
                if which < 0.4:
                    unit.caches.flush_pasid()
                elif which < 0.7:
                    unit.caches.flush_ctx()
                else:
                    unit.caches.flush_tlb()
        else:
            pasid = None if rng.random() < 0.4 else rng.choice(PASIDS)
            off = rng.randrange(4096)
            args = (
                pasid,
                rng.random() < 0.3,
                IOVA + (rng.randrange(PAGES) << 12) + off,
                rng.choice((4, 4096 - off, 4096 * 3)),
                rng.random() < 0.5,
                rng.random() < 0.2,
            )
            got = _request(fast[1], False, args)
            want = _request(ref[1], True, args)
            assert got == want, args
        assert _state(fast[1]) == _state(ref[1])
    assert fast[1].stats.ctx_hits > 100
