"""Random map/unmap of page tables with the invalidations a correct driver issues,
plus random extra invalidations: every translation gives what the test mapped (an
independent reference: the mappings the test asked for), faults where the test mapped
nothing or mapped read-only, the model never reports a stale use, and no exception
escapes. The comparison is never skipped.

A correct driver (Linux ``intel_iommu`` with CM=0): mapping into a non-present entry
needs no invalidation; clearing or replacing a present leaf is followed by a
page-selective invalidation (IOTLB PSI for the second stage, P_IOTLB for a PASID's
first stage). :func:`test_fuzz_fails_without_iotlb_invalidation` shows the comparison
bites: with the model's IOTLB invalidation made a no-op the run fails.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from hw.vtd import entries as ent
from hw.vtd.caches import Caches
from hw.vtd.faults import FR
from tests.hw.fuzz import BREAK_SETTINGS
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
SL_DID = 1
FL_DID = 2
PAGES = st.integers(0, 15)
FRAMES = st.integers(0x400, 0x4FF)
Which = int | None
"""None: requests without PASID (RID_PASID, second stage); a PASID: its first stage."""


class VtdCacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        m, unit, pages, t = sm_setup()
        self.m, self.unit, self.t = m, unit, t
        self.q = Queue(m, unit, pages)
        self.sl = PageTable(m, pages, 4)
        self.fl = {p: PageTable(m, pages, 4, fl=True) for p in PASIDS}
        t.pasid_entry(RID, 0, ent.PGTT_SL, did=SL_DID, pt=self.sl)
        for p in PASIDS:
            t.pasid_entry(RID, p, ent.PGTT_FL, did=FL_DID, pt=self.fl[p])
        self.ref: dict[Which, dict[int, tuple[int, bool]]] = {w: {} for w in (None, *PASIDS)}
        """What the test mapped: page -> (frame, writable), per table."""
        self.touched: set[tuple[Which, int]] = set()

    def _table(self, which: Which) -> PageTable:
        return self.sl if which is None else self.fl[which]

    def _invalidate_page(self, which: Which, page: int) -> None:
        """What the driver does after changing a present leaf."""
        if which is None:
            self.q.submit(iotlb_psi(SL_DID, page << 12))
        else:
            self.q.submit(piotlb(FL_DID, which, page << 12))

    def _mapped(self) -> list[tuple[Which, int]]:
        return sorted(((w, p) for w, pages in self.ref.items() for p in pages), key=str)

    @rule(which=st.sampled_from((None, *PASIDS)), page=PAGES, frame=FRAMES, w=st.booleans())
    def map(self, which: Which, page: int, frame: int, w: bool) -> None:
        if page in self.ref[which]:  # break before make
            self._unmap(which, page)
        self._table(which).map(page << 12, frame << 12, w=w)
        self.ref[which][page] = (frame << 12, w)
        self.touched.add((which, page))

    def _unmap(self, which: Which, page: int) -> None:
        del self.ref[which][page]
        self._table(which).unmap(page << 12)
        self._invalidate_page(which, page)

    @rule(data=st.data())
    def unmap(self, data: st.DataObject) -> None:
        if mapped := self._mapped():
            self._unmap(*data.draw(st.sampled_from(mapped)))

    @rule(data=st.data(), frame=FRAMES, w=st.booleans())
    def remap(self, data: st.DataObject, frame: int, w: bool) -> None:
        if mapped := self._mapped():
            which, page = data.draw(st.sampled_from(mapped))
            self.map(which, page, frame, w)

    @rule(
        desc=st.sampled_from(
            (
                iotlb_global(),
                iotlb_dsi(SL_DID),
                piotlb(FL_DID, 1),
                piotlb(FL_DID, 2),
                pc_inval(3),
                pc_inval(1, did=FL_DID, pasid=1),
                cc_inval(1),
            )
        )
    )
    def extra_invalidation(self, desc: tuple[int, int]) -> None:
        self.q.submit(desc)

    @rule(page=PAGES, am=st.integers(0, 2))
    def extra_invalidate_psi(self, page: int, am: int) -> None:
        self.q.submit(iotlb_psi(SL_DID, (page << 12) & ~((1 << (12 + am)) - 1), am))

    def _expected_fault(self, which: Which, write: bool, mapped: bool) -> int:
        if mapped or which is None:  # write to read-only, or SL not present (R=W=0)
            return FR.SM_WRITE if write else FR.SM_READ
        return FR.FS_NOT_PRESENT

    @rule(
        which=st.sampled_from((None, *PASIDS)),
        page=PAGES,
        npages=st.integers(1, 4),
        write=st.booleans(),
    )
    def translate(self, which: Which, page: int, npages: int, write: bool) -> None:
        r = self.unit.translate(RID, which, False, page << 12, npages << 12, write)
        got = [phys + off for phys, length in r.runs for off in range(0, length, 4096)]
        want: list[int] = []
        fault: tuple[int, int] | None = None
        for p in range(page, page + npages):
            mapped = self.ref[which].get(p)
            if mapped is None or (write and not mapped[1]):
                fault = (p << 12, self._expected_fault(which, write, mapped is not None))
                break
            want.append(mapped[0])
        assert got == want
        if fault is None:
            assert r.fault is None
        else:
            assert r.fault is not None and (r.fault.addr, r.fault.reason) == fault

    @rule(data=st.data(), write=st.booleans())
    def translate_a_touched_page(self, data: st.DataObject, write: bool) -> None:
        """Most random requests fault; this one asks for a page the test mapped at some
        point (mapped now, or unmapped since), so the IOTLB fills and cached entries
        meet the changes made after them."""
        if self.touched:
            which, page = data.draw(st.sampled_from(sorted(self.touched, key=str)))
            self.translate(which, page, 1, write)

    @invariant()
    def no_stale_use_and_no_queue_error(self) -> None:
        assert self.unit.stats.stale_uses == 0
        assert self.unit.stats.qi_errors == 0


VtdCacheMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
TestVtdCaches = VtdCacheMachine.TestCase


def test_fuzz_fails_without_iotlb_invalidation(monkeypatch: pytest.MonkeyPatch) -> None:
    """With IOTLB invalidation disabled in the model (``hw.vtd.caches.Caches.flush_tlb``,
    where IOTLB PSI/DSI/global and P_IOTLB descriptors end, made a no-op) a cached
    translation outlives its unmap and the state machine fails."""
    monkeypatch.setattr(Caches, "flush_tlb", lambda self, *a, **k: 0)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(VtdCacheMachine, settings=BREAK_SETTINGS)
