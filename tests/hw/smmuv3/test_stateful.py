"""Random map/unmap of stage-1 tables, CD rewrites and random invalidations: every
translation matches a fresh walk of the structures or is reported stale, and no
exception escapes (DESIGN §6)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.hw.smmuv3.helpers import (
    RID,
    Rig,
    cmd_cfgi_cd,
    cmd_cfgi_cd_all,
    cmd_cfgi_ste,
    cmd_tlbi_nh_all,
    cmd_tlbi_nh_asid,
    cmd_tlbi_nh_va,
)

ASIDS = (1, 2, 3)
SSIDS = (1, 2, 3, 4)
PAGES = st.integers(0, 15)
FRAMES = st.integers(0x400, 0x4FF)


class SmmuCacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.r = r = Rig()
        r.cd(0, 1)
        for ssid in SSIDS:
            r.cd(ssid, 2 if ssid < 3 else 3)  # SSIDs 1 and 2 share ASID 2

    @rule(asid=st.sampled_from(ASIDS), page=PAGES, frame=FRAMES, ro=st.booleans())
    def map(self, asid: int, page: int, frame: int, ro: bool) -> None:
        self.r.table(asid).map(page << 12, frame << 12, ro=ro)

    @rule(asid=st.sampled_from(ASIDS), page=PAGES)
    def unmap(self, asid: int, page: int) -> None:
        self.r.table(asid).unmap(page << 12)

    @rule(ssid=st.sampled_from(SSIDS), asid=st.sampled_from(ASIDS), valid=st.booleans())
    def rewrite_cd(self, ssid: int, asid: int, valid: bool) -> None:
        if valid:
            self.r.cd(ssid, asid)
        else:
            self.r.cds.write(ssid, (0, 0, 0, 0))

    @rule(
        cmd=st.sampled_from(
            (
                cmd_tlbi_nh_asid(1),
                cmd_tlbi_nh_asid(2),
                cmd_tlbi_nh_asid(3),
                cmd_tlbi_nh_all(),
                cmd_cfgi_ste(RID),
                cmd_cfgi_cd_all(RID),
            )
        )
    )
    def invalidate(self, cmd: tuple[int, int]) -> None:
        self.r.smmu.submit(cmd)

    @rule(asid=st.sampled_from(ASIDS), page=PAGES)
    def invalidate_va(self, asid: int, page: int) -> None:
        self.r.smmu.submit(cmd_tlbi_nh_va(asid, page << 12))

    @rule(ssid=st.sampled_from((0, *SSIDS)))
    def invalidate_cd(self, ssid: int) -> None:
        self.r.smmu.submit(cmd_cfgi_cd(RID, ssid))

    @rule(
        ssid=st.sampled_from((None, *SSIDS)),
        page=PAGES,
        npages=st.integers(1, 4),
        write=st.booleans(),
    )
    def translate(self, ssid: int | None, page: int, npages: int, write: bool) -> None:
        unit = self.r.unit
        before = unit.stats.stale_uses
        addr = page << 12
        res = unit.translate(RID, ssid, False, addr, npages << 12, write)
        stale = unit.stats.stale_uses > before
        a = addr
        for phys, length in res.runs:
            for off in range(0, length, 4096):
                fresh = unit.fresh_outcome(RID, ssid, False, write, a + off)
                assert stale or fresh == ((phys + off) & ~0xFFF, 0)
            a += length
        if res.fault is not None:
            fresh = unit.fresh_outcome(RID, ssid, False, write, res.fault.addr)
            assert stale or fresh == (-1, res.fault.reason)

    @invariant()
    def command_queue_never_errors(self) -> None:
        assert self.r.unit.stats.cmd_errors == 0


SmmuCacheMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)
TestSmmuCaches = SmmuCacheMachine.TestCase
