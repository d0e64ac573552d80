"""Random map/unmap of stage-1 tables and CD rewrites with the invalidations a correct
driver issues, plus random extra invalidations: every translation gives what the test
mapped for the ASID the SSID's CD names (an independent reference: the mappings and
CDs the test asked for), faults with the spec's event where it mapped nothing, mapped
read-only or left the CD invalid, the model never reports a stale use, and no
exception escapes (DESIGN §6). The comparison is never skipped.

A correct driver (Linux ``arm_smmu_v3``): a new leaf in a non-valid entry needs no
invalidation; clearing or replacing a valid leaf is followed by TLBI_NH_VA for its
ASID, rewriting a CD by CFGI_CD (each followed by CMD_SYNC).
:func:`test_fuzz_fails_without_tlb_invalidation` shows the comparison bites: with the
model's TLB invalidation made a no-op the run fails.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from hw.smmuv3.caches import Caches
from hw.smmuv3.entries import Evt
from tests.hw.fuzz import BREAK_SETTINGS
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
        self.cd_asid: dict[int | None, int | None] = {None: 1}
        """SSID (None: no SSID, the S1DSS CD 0) -> ASID of its CD, None when invalid."""
        r.cd(0, 1)
        for ssid in SSIDS:
            asid = 2 if ssid < 3 else 3  # SSIDs 1 and 2 share ASID 2
            r.cd(ssid, asid)
            self.cd_asid[ssid] = asid
        self.ref: dict[int, dict[int, tuple[int, bool]]] = {a: {} for a in ASIDS}
        """What the test mapped: ASID -> page -> (frame, read-only)."""
        self.touched: set[tuple[int | None, int]] = set()
        """(SSID, page) pairs whose page was mapped at some point."""

    def _mapped(self) -> list[tuple[int, int]]:
        return sorted((a, p) for a, pages in self.ref.items() for p in pages)

    @rule(asid=st.sampled_from(ASIDS), page=PAGES, frame=FRAMES, ro=st.booleans())
    def map(self, asid: int, page: int, frame: int, ro: bool) -> None:
        if page in self.ref[asid]:  # break before make
            self._unmap(asid, page)
        self.r.table(asid).map(page << 12, frame << 12, ro=ro)
        self.ref[asid][page] = (frame << 12, ro)
        self.touched.update((s, page) for s, a in self.cd_asid.items() if a == asid)

    def _unmap(self, asid: int, page: int) -> None:
        del self.ref[asid][page]
        self.r.table(asid).unmap(page << 12)
        self.r.smmu.submit(cmd_tlbi_nh_va(asid, page << 12))

    @rule(data=st.data())
    def unmap(self, data: st.DataObject) -> None:
        if mapped := self._mapped():
            self._unmap(*data.draw(st.sampled_from(mapped)))

    @rule(data=st.data(), frame=FRAMES, ro=st.booleans())
    def remap(self, data: st.DataObject, frame: int, ro: bool) -> None:
        if mapped := self._mapped():
            asid, page = data.draw(st.sampled_from(mapped))
            self.map(asid, page, frame, ro)

    @rule(ssid=st.sampled_from(SSIDS), asid=st.sampled_from((None, *ASIDS)))
    def rewrite_cd(self, ssid: int, asid: int | None) -> None:
        if asid is None:
            self.r.cds.write(ssid, (0, 0, 0, 0))
        else:
            self.r.cd(ssid, asid)
        self.r.smmu.submit(cmd_cfgi_cd(RID, ssid))
        self.cd_asid[ssid] = asid

    @rule(
        cmd=st.sampled_from(
            (
                cmd_tlbi_nh_asid(1),
                cmd_tlbi_nh_asid(2),
                cmd_tlbi_nh_asid(3),
                cmd_tlbi_nh_all(),
                cmd_cfgi_ste(RID),
                cmd_cfgi_cd_all(RID),
                cmd_cfgi_cd(RID, 0),
            )
        )
    )
    def extra_invalidation(self, cmd: tuple[int, int]) -> None:
        self.r.smmu.submit(cmd)

    @rule(asid=st.sampled_from(ASIDS), page=PAGES)
    def extra_invalidate_va(self, asid: int, page: int) -> None:
        self.r.smmu.submit(cmd_tlbi_nh_va(asid, page << 12))

    @rule(
        ssid=st.sampled_from((None, *SSIDS)),
        page=PAGES,
        npages=st.integers(1, 4),
        write=st.booleans(),
    )
    def translate(self, ssid: int | None, page: int, npages: int, write: bool) -> None:
        res = self.r.unit.translate(RID, ssid, False, page << 12, npages << 12, write)
        got = [phys + off for phys, length in res.runs for off in range(0, length, 4096)]
        want: list[int] = []
        fault: tuple[int, int] | None = None
        asid = self.cd_asid[ssid]
        for p in range(page, page + npages):
            if asid is None:
                fault = (p << 12, Evt.C_BAD_CD)
                break
            mapped = self.ref[asid].get(p)
            if mapped is None:
                fault = (p << 12, Evt.F_TRANSLATION)
                break
            if write and mapped[1]:
                fault = (p << 12, Evt.F_PERMISSION)
                break
            want.append(mapped[0])
        assert got == want
        if fault is None:
            assert res.fault is None
        else:
            assert res.fault is not None and (res.fault.addr, res.fault.reason) == fault

    @rule(data=st.data(), write=st.booleans())
    def translate_a_touched_page(self, data: st.DataObject, write: bool) -> None:
        """Most random requests fault; this one asks for a page the test mapped at some
        point (mapped now, or unmapped since), so the TLB fills and cached entries meet
        the changes made after them."""
        if self.touched:
            ssid, page = data.draw(st.sampled_from(sorted(self.touched, key=str)))
            self.translate(ssid, page, 1, write)

    @invariant()
    def no_stale_use_and_no_command_error(self) -> None:
        assert self.r.unit.stats.stale_uses == 0
        assert self.r.unit.stats.cmd_errors == 0


SmmuCacheMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)
TestSmmuCaches = SmmuCacheMachine.TestCase


def test_fuzz_fails_without_tlb_invalidation(monkeypatch: pytest.MonkeyPatch) -> None:
    """With TLB invalidation disabled in the model (``hw.smmuv3.caches.Caches.flush_tlb``,
    where every TLBI command ends, made a no-op) a cached translation outlives its
    unmap and the state machine fails."""
    monkeypatch.setattr(Caches, "flush_tlb", lambda self, *a, **k: 0)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(SmmuCacheMachine, settings=BREAK_SETTINGS)
