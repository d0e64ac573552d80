"""Like test_stateful, over whole 2 MiB blocks so the block summaries of the hit path
are built, used and invalidated: random remaps, permission changes and unmaps of pages
inside mapped blocks — each followed by the page-selective P_IOTLB a correct driver
issues — random extra invalidations, random (often block-sized, unaligned) requests.
Every translated page matches what the test mapped (its own record of the table, an
independent reference), a fault is where and why that record says, the model never
reports a stale use, and no exception escapes. The comparison is never skipped."""

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
    iotlb_global,
    pc_inval,
    piotlb,
    sm_setup,
)

PASID = 1
DID = 2
BLK = 2 << 20
NPAGES = 1024 + 64  # two full blocks and part of a third
PAGES = st.integers(0, NPAGES - 1)
PHYS = 0x100_0000


def _page_offsets(phys: int, length: int) -> list[int]:
    """Offsets into a run where its 4 KiB pages start (the first may be partial)."""
    offs = [0]
    nxt = ((phys | 0xFFF) + 1) - phys
    while nxt < length:
        offs.append(nxt)
        nxt += 0x1000
    return offs


class VtdBlockMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        m, unit, pages, t = sm_setup()
        self.m, self.unit = m, unit
        self.q = Queue(m, unit, pages)
        self.pt = PageTable(m, pages, 4, fl=True)
        self.shadow: dict[int, tuple[int, bool] | None] = {}
        for i in range(NPAGES):
            self.pt.map(i << 12, PHYS + (i << 12))
            self.shadow[i] = (PHYS + (i << 12), True)
        t.pasid_entry(RID, PASID, ent.PGTT_FL, did=DID, pt=self.pt)

    def _changed(self, page: int, was: tuple[int, bool] | None) -> None:
        """A present leaf changed: the driver's page-selective invalidation."""
        if was is not None:
            self.q.submit(piotlb(DID, PASID, page << 12))

    @rule(page=PAGES, frame=st.integers(0, NPAGES - 1), w=st.booleans())
    def remap(self, page: int, frame: int, w: bool) -> None:
        was = self.shadow[page]
        if was is not None:  # break before make
            self.pt.unmap(page << 12)
            self._changed(page, was)
        self.pt.map(page << 12, PHYS + (frame << 12), w=w)
        self.shadow[page] = (PHYS + (frame << 12), w)

    @rule(page=PAGES)
    def unmap(self, page: int) -> None:
        self.pt.unmap(page << 12)
        self._changed(page, self.shadow[page])
        self.shadow[page] = None

    @rule(page=PAGES)
    def clear_accessed_dirty(self, page: int) -> None:
        addr = self.pt.entry_addr(page << 12, 1)
        mem = self.m.memory
        mem.write_u64(addr, mem.read_u64(addr) & ~(ent.FlPte.A.mask | ent.FlPte.D.mask))

    @rule(
        desc=st.sampled_from(
            (iotlb_global(), piotlb(DID, PASID), pc_inval(1, did=DID, pasid=PASID), pc_inval(3))
        )
    )
    def invalidate(self, desc: tuple[int, int]) -> None:
        self.q.submit(desc)

    @rule(page=PAGES, am=st.integers(0, 9))
    def invalidate_range(self, page: int, am: int) -> None:
        self.q.submit(piotlb(DID, PASID, (page << 12) & ~((1 << (12 + am)) - 1), am))

    @rule(
        start=st.one_of(st.sampled_from((0, 512)), PAGES),
        npages=st.one_of(st.sampled_from((512, 1024)), st.integers(1, NPAGES)),
        off=st.sampled_from((0, 0, 0x10)),
        write=st.booleans(),
    )
    def translate(self, start: int, npages: int, off: int, write: bool) -> None:
        addr = (start << 12) + off
        size = min(npages << 12, (NPAGES << 12) - addr)
        r = self.unit.translate(RID, PASID, False, addr, size, write)
        want: list[tuple[int, int]] = []  # what the test mapped, as (phys, length) pieces
        fault: tuple[int, int] | None = None
        a = addr
        while a < addr + size:
            n = min(addr + size - a, 0x1000 - (a & 0xFFF))
            now = self.shadow[a >> 12]
            if now is None or (write and not now[1]):
                reason = FR.FS_NOT_PRESENT if now is None else FR.SM_WRITE
                fault = (a, reason)
                break
            want.append((now[0] | (a & 0xFFF), n))
            a += n
        got = [
            (phys + off, min(0x1000 - ((phys + off) & 0xFFF), length - off))
            for phys, length in r.runs
            for off in _page_offsets(phys, length)
        ]
        assert got == want
        if fault is None:
            assert r.fault is None
        else:
            assert r.fault is not None and (r.fault.addr, r.fault.reason) == fault

    @rule(block=st.integers(0, 1), write=st.booleans())
    def translate_block(self, block: int, write: bool) -> None:
        self.translate(block * 512, 512, 0, write)

    @rule(write=st.booleans())
    def translate_two_blocks(self, write: bool) -> None:
        self.translate(0, 1024, 0, write)

    @invariant()
    def no_stale_use_and_no_queue_error(self) -> None:
        assert self.unit.stats.stale_uses == 0
        assert self.unit.stats.qi_errors == 0


VtdBlockMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
TestVtdBlocks = VtdBlockMachine.TestCase


def test_fuzz_fails_without_iotlb_invalidation(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the model's IOTLB invalidation a no-op (``hw.vtd.caches.Caches.flush_tlb``)
    a cached page or block summary outlives its remap and the state machine fails."""
    monkeypatch.setattr(Caches, "flush_tlb", lambda self, *a, **k: 0)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(VtdBlockMachine, settings=BREAK_SETTINGS)
