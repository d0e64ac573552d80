"""A request whose context (and PASID) entries are cached and clean takes its table
selection from the cached entry; every request that selection cannot serve (a fault
of the selection itself) gets exactly the fault, fault record and cache counters it
gets with nothing cached, counting each cache hit once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hw.bus import DmaResult
from hw.machine import Machine
from hw.vtd import VtdUnit
from hw.vtd import entries as ent
from hw.vtd import registers as vr
from hw.vtd.faults import FR
from tests.hw.vtd.helpers import RID, PageTable, gcmd, legacy_setup, reg_write, sm_setup

IOVA = 0x40_0000
PHYS = 0x100_0000
PASID = 3

Request = Callable[[VtdUnit], DmaResult]


def _legacy() -> tuple[Machine, VtdUnit, Request]:
    m, unit, _pages, _t, pt = legacy_setup()
    pt.map(IOVA, PHYS)
    return m, unit, lambda u: u.translate(RID, None, False, IOVA, 4096, False)


def _scalable(paside: bool = True) -> tuple[Machine, VtdUnit, Request]:
    m, unit, pages, t = sm_setup()
    t.sm_ctx(RID, paside=paside)
    pt = PageTable(m, pages, 4, fl=True)
    pt.map(IOVA, PHYS)
    t.pasid_entry(RID, PASID, ent.PGTT_FL, did=4, pt=pt)
    sl = PageTable(m, pages, 4)
    sl.map(IOVA, PHYS)
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=4, pt=sl)
    good = (
        (lambda u: u.translate(RID, PASID, False, IOVA, 4096, False))
        if paside
        else (lambda u: u.translate(RID, None, False, IOVA, 4096, False))
    )
    return m, unit, good


def _bad_ttm(m: Machine, unit: VtdUnit) -> DmaResult:
    reg_write(m, vr.RTADDR_OFF, unit.root | 3 << 10, 8)  # TTM=11b: reserved
    gcmd(m, unit, vr.GCMD.SRTP.mask)
    return unit.translate(RID, None, False, IOVA, 4096, False)


CASES: dict[
    str, tuple[Callable[[], tuple[Machine, VtdUnit, Request]], Callable[..., DmaResult], FR]
] = {
    "legacy-with-pasid": (
        _legacy,
        lambda m, u: u.translate(RID, 1, False, IOVA, 4096, False),
        FR.SM_TTM_LEGACY_PASID,
    ),
    "pasid-without-paside": (
        lambda: _scalable(paside=False),
        lambda m, u: u.translate(RID, PASID, False, IOVA, 4096, False),
        FR.SM_CTX_PASIDE,
    ),
    "priv-without-sre": (
        _scalable,
        lambda m, u: u.translate(RID, PASID, True, IOVA, 4096, False),
        FR.SM_PASID_SRE,
    ),
    "exe-without-ere": (
        _scalable,
        lambda m, u: u.translate_ex(RID, PASID, False, IOVA, 4096, False, True),
        FR.SM_PASID_ERE,
    ),
    "reserved-ttm": (_legacy, _bad_ttm, FR.SM_RTADDR_INVALID),
}


def _record(unit: VtdUnit) -> tuple[int, int]:
    return unit.regs["FRCD0_LO"], unit.regs["FRCD0_HI"]


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_selection_fault_is_the_same_with_entries_cached(case: str) -> None:
    setup, bad, reason = CASES[case]
    m1, warm, good = setup()
    m2, cold, _good = setup()
    assert good(warm).fault is None  # context (and PASID) entries now cached
    before = (warm.stats.ctx_hits, warm.stats.pasid_hits)
    r1, r2 = bad(m1, warm), bad(m2, cold)
    assert r1.runs == r2.runs == ()
    assert r1.fault is not None and r2.fault is not None
    assert r1.fault.reason == r2.fault.reason
    assert (_record(warm)[1] >> 32) & 0xFF == reason
    assert _record(warm) == _record(cold)
    ctx_hits = warm.stats.ctx_hits - before[0]
    assert ctx_hits == (0 if case == "reserved-ttm" else 1)  # counted once
    assert warm.stats.pasid_hits - before[1] == (
        1 if reason in (FR.SM_PASID_SRE, FR.SM_PASID_ERE) else 0
    )
