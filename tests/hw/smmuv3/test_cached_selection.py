"""A request whose STE (and CD) entries are cached and clean takes its selection kept
on the STE entry; that gives exactly what selecting through the caches gives: the
same runs, faults, event records, stale uses and cache counters, through table
rewrites with and without their CFGI commands, and for every SubstreamID, Priv and
direction. The reference unit forgets every kept selection before each request."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hw.bus import DmaResult
from hw.smmuv3 import entries as ent
from tests.hw.smmuv3.helpers import (
    RID,
    PageTable,
    Rig,
    cd_words,
    cmd_cfgi_cd,
    cmd_cfgi_cd_all,
    cmd_cfgi_ste,
    cmd_tlbi_nh_all,
    ste_abort,
    ste_bypass,
)

IOVA = 0x4000_0000
PHYS = 0x100_0000

Step = Callable[[Rig], object]


def _setup() -> Rig:
    r = Rig()
    for ssid, asid in ((0, 1), (1, 2), (3, 3)):
        r.cd(ssid, asid)
        for i in range(4):
            r.table(asid).map(IOVA + (i << 12), PHYS + (asid << 16) + (i << 12), user=i != 2)
    return r


def _req(pasid: int | None, priv: bool = False, write: bool = False, n: int = 4) -> Step:
    return lambda r: r.unit.translate(RID, pasid, priv, IOVA, n << 12, write)


def _rewrite_cd(ssid: int, asid: int) -> Step:
    return lambda r: r.cds.write(ssid, cd_words(r.table(asid).root, asid))


def _clear_cd(ssid: int) -> Step:
    return lambda r: r.cds.write(ssid, (0, 0, 0, 0))


def _ste(words: tuple[int, ...]) -> Step:
    return lambda r: r.smmu.write_ste(RID, words)


def _cmd(*cmds: tuple[int, int]) -> Step:
    return lambda r: r.smmu.submit(*cmds)


def _remap(asid: int, i: int, phys: int) -> Step:
    return lambda r: r.table(asid).map(IOVA + (i << 12), phys)


REQUESTS = [
    _req(None),
    _req(1),
    _req(1, write=True),
    _req(1, priv=True),
    _req(3, priv=True, write=True),
    _req(0),
    _req(2),
    _req(99),
]

SCRIPTS: dict[str, list[Step]] = {
    "warm": [],
    "cd-rewritten-then-cfgi-cd": [
        _rewrite_cd(1, 3),
        *REQUESTS,
        _cmd(cmd_cfgi_cd(RID, 1), cmd_tlbi_nh_all()),
    ],
    "cd-cleared-then-cfgi-cd-all": [_clear_cd(3), *REQUESTS, _cmd(cmd_cfgi_cd_all(RID))],
    "ste-abort-then-cfgi-ste": [_ste(ste_abort()), *REQUESTS, _cmd(cmd_cfgi_ste(RID))],
    "ste-bypass-then-cfgi-ste": [_ste(ste_bypass()), *REQUESTS, _cmd(cmd_cfgi_ste(RID))],
    "ste-cdmax-shrunk": [
        lambda r: r.smmu.write_ste(RID, r.cds.ste(dss=ent.S1DSS_BYPASS)),
        *REQUESTS,
        _cmd(cmd_cfgi_ste(RID)),
    ],
    "leaf-remapped-then-tlbi": [
        _remap(2, 1, PHYS + (40 << 12)),
        *REQUESTS,
        _cmd(cmd_tlbi_nh_all()),
    ],
    "cd-rewritten-same": [_rewrite_cd(1, 2), *REQUESTS],
    "cfgi-cd-unchanged": [_cmd(cmd_cfgi_cd(RID, 1))],
    "cfgi-cd-all-unchanged": [_cmd(cmd_cfgi_cd_all(RID))],
    "cfgi-ste-unchanged": [_cmd(cmd_cfgi_ste(RID))],
}


def _observe(r: Rig, res: object) -> tuple[object, ...]:
    s = r.unit.stats
    counters = (
        s.ste_hits,
        s.ste_misses,
        s.cd_hits,
        s.cd_misses,
        s.iotlb_hits,
        s.iotlb_misses,
        s.faults,
        s.stale_uses,
    )
    got = (res.runs, res.fault) if isinstance(res, DmaResult) else None
    return got, counters, r.smmu.events()


@pytest.mark.parametrize("script", list(SCRIPTS), ids=list(SCRIPTS))
def test_kept_selection_gives_what_selecting_through_the_caches_gives(script: str) -> None:
    kept, ref = _setup(), _setup()
    steps = [*REQUESTS, *SCRIPTS[script], *REQUESTS, *REQUESTS]
    for step in steps:
        for se in ref.unit.caches.ste.values():
            se.sels.clear()
        assert _observe(kept, step(kept)) == _observe(ref, step(ref))
    assert [f.check for f in kept.unit.findings] == [f.check for f in ref.unit.findings]


def test_a_warm_request_takes_the_kept_selection() -> None:
    """After one request the STE entry keeps the selection; the next request counts
    one STE and one CD hit and builds no selection."""
    r = _setup()
    _req(1)(r)
    se = r.unit.caches.ste[RID]
    sel = se.sels[1]
    s = r.unit.stats
    before = (s.ste_hits, s.cd_hits, s.ste_misses, s.cd_misses)
    _req(1)(r)
    assert se.sels[1] is sel
    assert (s.ste_hits, s.cd_hits, s.ste_misses, s.cd_misses) == (
        before[0] + 1,
        before[1] + 1,
        before[2],
        before[3],
    )


def test_faulting_selections_are_not_kept() -> None:
    r = _setup()
    for pasid in (0, 2, 99):
        res = _req(pasid)(r)
        assert res.fault is not None
    assert set(r.unit.caches.ste[RID].sels) == set()


def test_cfgi_cd_forgets_the_selections_of_its_stream() -> None:
    r = _setup()
    _req(1)(r)
    _req(None)(r)
    _req(3)(r)
    sels = r.unit.caches.ste[RID].sels
    assert set(sels) == {1, None, 3}
    r.smmu.submit(cmd_cfgi_cd(RID, 3))
    assert set(sels) == {1, None}
    r.smmu.submit(cmd_cfgi_cd(RID, 2))  # nothing cached for CD 2: nothing to forget
    assert set(sels) == {1, None}
    r.smmu.submit(cmd_cfgi_cd_all(RID))
    assert sels == {}


def test_privileged_request_needs_its_own_rights() -> None:
    """The kept selection serves each request kind with its own needs: an
    unprivileged read of a privileged-only page faults, a privileged one does not."""
    r = _setup()
    assert _req(1)(r).fault is not None  # page 2 of the run is privileged-only
    user = r.unit.translate(RID, 1, False, IOVA + (2 << 12), 4096, False)
    priv = r.unit.translate(RID, 1, True, IOVA + (2 << 12), 4096, False)
    assert user.fault is not None and priv.fault is None
    assert PageTable.leaf(0, user=False) & ent.LpaeLeaf.AP1.mask == 0
