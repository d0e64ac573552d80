"""Random map/unmap of page tables and random invalidations: every translation matches
a fresh walk of the tables or is reported stale, and no exception escapes."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hw.vtd import entries as ent
from tests.hw.vtd.helpers import (
    RID,
    PageTable,
    Queue,
    cc_inval,
    iotlb_dsi,
    iotlb_global,
    iotlb_psi,
    pc_inval,
    piotlb,
    sm_setup,
)

PASIDS = (1, 2)
PAGES = st.integers(0, 15)
FRAMES = st.integers(0x400, 0x4FF)


class VtdCacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        m, unit, pages, t = sm_setup()
        self.m, self.unit, self.t = m, unit, t
        self.q = Queue(m, unit, pages)
        self.sl = PageTable(m, pages, 4)
        self.fl = {p: PageTable(m, pages, 4, fl=True) for p in PASIDS}
        t.pasid_entry(RID, 0, ent.PGTT_SL, did=1, pt=self.sl)
        for p in PASIDS:
            t.pasid_entry(RID, p, ent.PGTT_FL, did=2, pt=self.fl[p])

    def _table(self, which: int) -> PageTable:
        return self.sl if which == 0 else self.fl[which]

    @rule(which=st.sampled_from((0, *PASIDS)), page=PAGES, frame=FRAMES, w=st.booleans())
    def map(self, which: int, page: int, frame: int, w: bool) -> None:
        self._table(which).map(page << 12, frame << 12, w=w)

    @rule(which=st.sampled_from((0, *PASIDS)), page=PAGES)
    def unmap(self, which: int, page: int) -> None:
        self._table(which).unmap(page << 12)

    @rule(
        desc=st.sampled_from(
            (
                iotlb_global(),
                iotlb_dsi(1),
                piotlb(2, 1),
                piotlb(2, 2),
                pc_inval(3),
                pc_inval(1, did=2, pasid=1),
                cc_inval(1),
            )
        )
    )
    def invalidate(self, desc: tuple[int, int]) -> None:
        self.q.submit(desc)

    @rule(page=PAGES, am=st.integers(0, 2))
    def invalidate_psi(self, page: int, am: int) -> None:
        self.q.submit(iotlb_psi(1, (page << 12) & ~((1 << (12 + am)) - 1), am))

    @rule(page=PAGES, which=st.sampled_from(PASIDS))
    def invalidate_piotlb_page(self, page: int, which: int) -> None:
        self.q.submit(piotlb(2, which, page << 12))

    @rule(
        which=st.sampled_from((None, *PASIDS)),
        page=PAGES,
        npages=st.integers(1, 4),
        write=st.booleans(),
    )
    def translate(self, which: int | None, page: int, npages: int, write: bool) -> None:
        unit = self.unit
        before = unit.stats.stale_uses
        addr = page << 12
        r = unit.translate(RID, which, False, addr, npages << 12, write)
        stale = unit.stats.stale_uses > before
        # Compare the result page by page with a fresh walk.
        a = addr
        for phys, length in r.runs:
            for off in range(0, length, 4096):
                fresh = unit.fresh_outcome(RID, which, False, False, write, a + off)
                assert stale or fresh == ((phys + off) & ~0xFFF, 0)
            a += length
        if r.fault is not None and r.fault.reason >= 0:
            fresh = unit.fresh_outcome(RID, which, False, False, write, r.fault.addr)
            assert stale or fresh == (-1, r.fault.reason)

    @invariant()
    def queue_never_errors(self) -> None:
        assert self.unit.stats.qi_errors == 0


VtdCacheMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
TestVtdCaches = VtdCacheMachine.TestCase
