"""Like test_stateful, over whole 2 MiB blocks so the block summaries of the hit path
are built, used and invalidated: random remaps, permission changes and unmaps of pages
inside mapped blocks, random invalidations, random (often block-sized, unaligned)
requests. Every translated page matches what software mapped (a Python shadow of the
table) or the use is reported stale; a fault matches a fresh walk or is reported stale;
no exception escapes."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hw.vtd import entries as ent
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

    @rule(page=PAGES, frame=st.integers(0, NPAGES - 1), w=st.booleans())
    def remap(self, page: int, frame: int, w: bool) -> None:
        self.pt.map(page << 12, PHYS + (frame << 12), w=w)
        self.shadow[page] = (PHYS + (frame << 12), w)

    @rule(page=PAGES)
    def unmap(self, page: int) -> None:
        self.pt.unmap(page << 12)
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
        unit = self.unit
        before = unit.stats.stale_uses
        addr = (start << 12) + off
        size = min(npages << 12, (NPAGES << 12) - addr)
        r = unit.translate(RID, PASID, False, addr, size, write)
        stale = unit.stats.stale_uses > before
        a = addr
        for phys, length in r.runs:  # each page against what software mapped
            pos = 0
            while pos < length:
                now = self.shadow[(a + pos) >> 12]
                ok = now is not None and (now[1] or not write)
                assert stale or (ok and now is not None and now[0] == (phys + pos) & ~0xFFF)
                pos = ((a + pos) | 0xFFF) + 1 - a
            a += length
        assert a == addr + size or r.fault is not None
        if r.fault is not None:
            fresh = unit.fresh_outcome(RID, PASID, False, False, write, r.fault.addr)
            assert stale or fresh == (-1, r.fault.reason)

    @rule(block=st.integers(0, 1), write=st.booleans())
    def translate_block(self, block: int, write: bool) -> None:
        self.translate(block * 512, 512, 0, write)

    @rule(write=st.booleans())
    def translate_two_blocks(self, write: bool) -> None:
        self.translate(0, 1024, 0, write)

    @invariant()
    def queue_never_errors(self) -> None:
        assert self.unit.stats.qi_errors == 0


VtdBlockMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
TestVtdBlocks = VtdBlockMachine.TestCase
