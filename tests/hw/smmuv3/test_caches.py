"""Caches keep entries until invalidated; each CFGI/TLBI drops exactly its entries;
a stale use is detected and names the command that was missing (IHI 0070 §4.3, §4.4,
§16.2; facts A11)."""

from __future__ import annotations

import pytest

from hw.smmuv3 import StaleTranslationError
from hw.smmuv3 import entries as ent
from tests.hw.smmuv3.helpers import (
    RID,
    Rig,
    cd_words,
    cmd_cfgi_all,
    cmd_cfgi_cd,
    cmd_cfgi_cd_all,
    cmd_cfgi_ste,
    cmd_tlbi_nh_all,
    cmd_tlbi_nh_asid,
    cmd_tlbi_nh_va,
    cmd_tlbi_nh_vaa,
    cmd_tlbi_nsnh_all,
    ste_bypass,
)

IOVA = 0x4000_0000


def shared_asid_rig(config: dict[str, object] | None = None) -> Rig:
    """CD 0 and CDs 1..3 all carry ASID 5 and the same tables (Linux
    ``arm_smmu_s1_set_dev_pasid``: the same CD contents at every PASID)."""
    r = Rig(config)
    for ssid in range(4):
        r.cd(ssid, 5)
    r.table(5).map(IOVA, 0x20_0000)
    return r


def stale_events(r: Rig) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    r.m.set_hw_trace_sink(
        lambda name, ts, fields: (
            events.append(fields) if name.endswith("stale_translation") else None
        )
    )
    return events


def test_second_translation_hits_the_tlb() -> None:
    r = shared_asid_rig()
    r.translate(IOVA)
    r.translate(IOVA)
    assert (r.unit.stats.tlb_misses, r.unit.stats.tlb_hits) == (1, 1)


def test_pasids_sharing_an_asid_share_tlb_entries() -> None:
    """The SubstreamID is not a TLB tag: PASID 2 hits the entry PASID 1 filled."""
    r = shared_asid_rig()
    r.translate(IOVA, pasid=1)
    r.translate(IOVA, pasid=2)
    assert (r.unit.stats.tlb_misses, r.unit.caches.tlb_size) == (1, 1)


def test_pte_cleared_without_tlbi_is_reported_stale_naming_tlbi_nh_va() -> None:
    r = shared_asid_rig()
    events = stale_events(r)
    r.translate(IOVA, pasid=1)
    r.table(5).unmap(IOVA)
    res = r.translate(IOVA, pasid=1)
    assert res.runs == ((0x20_0000, 4),)  # the TLB still answers
    assert r.unit.stats.stale_uses == 1
    assert events[0]["missing"] == "TLBI_NH_VA"
    assert events[0]["cached"] == (0x20_0000, 0) and events[0]["current"] == (-1, 0x10)


def test_pte_cleared_with_tlbi_nh_va_is_not_stale() -> None:
    r = shared_asid_rig()
    r.translate(IOVA, pasid=1)
    r.table(5).unmap(IOVA)
    r.smmu.submit(cmd_tlbi_nh_va(5, IOVA))
    assert r.translate(IOVA, pasid=1).fault is not None
    assert r.unit.stats.stale_uses == 0


def test_unrelated_write_to_a_table_page_is_not_stale() -> None:
    r = shared_asid_rig()
    r.translate(IOVA)
    r.table(5).map(IOVA + 0x1000, 0x30_0000)
    assert r.translate(IOVA).runs == ((0x20_0000, 4),)
    assert r.unit.stats.stale_uses == 0


def test_one_tlbi_nh_asid_invalidates_every_pasid_using_that_asid() -> None:
    """The vendor difference from VT-d: one ASID-scoped flush covers all PASIDs."""
    r = shared_asid_rig()
    for pasid in (None, 1, 2, 3):
        r.translate(IOVA, pasid=pasid)
    r.table(5).unmap(IOVA)
    r.smmu.submit(cmd_tlbi_nh_asid(5))
    for pasid in (None, 1, 2, 3):
        assert r.translate(IOVA, pasid=pasid).fault is not None
    assert r.unit.stats.stale_uses == 0


def test_tlbi_nh_va_for_the_asid_covers_every_pasid() -> None:
    r = shared_asid_rig()
    for pasid in (1, 2, 3):
        r.translate(IOVA, pasid=pasid)
    r.table(5).map(IOVA, 0x30_0000)
    r.smmu.submit(cmd_tlbi_nh_va(5, IOVA))
    assert [r.translate(IOVA, pasid=p).runs for p in (1, 2, 3)] == [((0x30_0000, 4),)] * 3
    assert r.unit.stats.stale_uses == 0


def test_tlbi_of_another_asid_leaves_the_entry() -> None:
    r = shared_asid_rig()
    r.cd(3, 6)
    r.table(6).map(IOVA, 0x40_0000)
    r.translate(IOVA, pasid=1)
    r.translate(IOVA, pasid=3)
    r.smmu.submit(cmd_tlbi_nh_asid(6), cmd_tlbi_nh_va(6, IOVA), cmd_tlbi_nh_asid(5, vmid=1))
    assert list(r.unit.caches.tlb.tables) == [(0, 5)]


def test_tlbi_nh_va_drops_only_the_page_named() -> None:
    r = shared_asid_rig()
    r.table(5).map(IOVA + 0x1000, 0x30_0000)
    r.translate(IOVA, 0x2000)
    r.smmu.submit(cmd_tlbi_nh_va(5, IOVA + 0x1000))
    assert r.unit.caches.tlb_size == 1


def test_tlbi_nh_va_drops_a_block_covering_the_address() -> None:
    r = Rig()
    r.cd(0, 5)
    r.table(5).map(0, 0x40_0000, level=2)
    r.translate(0x1000)
    r.smmu.submit(cmd_tlbi_nh_va(5, 0x1F_F000))
    assert r.unit.caches.tlb_size == 0


def test_range_tlbi_with_ril_drops_the_whole_range() -> None:
    r = shared_asid_rig({"ril": True})
    for i in range(8):
        r.table(5).map(IOVA + 0x1000 * i, 0x20_0000 + 0x1000 * i)
    r.translate(IOVA, 0x8000)
    r.smmu.submit(cmd_tlbi_nh_va(5, IOVA, num=3, scale=1, tg=1))
    assert r.unit.caches.tlb_size == 0


def test_range_fields_are_ignored_without_ril() -> None:
    r = shared_asid_rig()
    r.table(5).map(IOVA + 0x1000, 0x30_0000)
    r.translate(IOVA, 0x2000)
    r.smmu.submit(cmd_tlbi_nh_va(5, IOVA, num=3, scale=1, tg=1))
    assert r.unit.caches.tlb_size == 1


def test_global_entries_match_every_asid_and_survive_tlbi_nh_asid() -> None:
    r = Rig()
    r.cd(0, 5)
    r.cd(1, 6)
    r.table(5).map(IOVA, 0x20_0000, ng=False)
    r.cds.write(1, cd_words(r.table(5).root, 6))
    r.translate(IOVA)
    r.translate(IOVA, pasid=1)
    assert r.unit.stats.tlb_misses == 1
    r.smmu.submit(cmd_tlbi_nh_asid(5))
    assert r.unit.caches.tlb_size == 1
    r.smmu.submit(cmd_tlbi_nh_vaa(IOVA))
    assert r.unit.caches.tlb_size == 0


def test_global_pte_cleared_without_tlbi_names_tlbi_nh_vaa() -> None:
    r = Rig()
    r.cd(0, 5)
    events = stale_events(r)
    r.table(5).map(IOVA, 0x20_0000, ng=False)
    r.translate(IOVA)
    r.table(5).unmap(IOVA)
    r.translate(IOVA)
    assert events[0]["missing"] == "TLBI_NH_VAA"


@pytest.mark.parametrize(
    "cmd", [cmd_tlbi_nh_all(), cmd_tlbi_nsnh_all()], ids=["nh_all", "nsnh_all"]
)
def test_tlbi_all_forms_drop_every_entry_of_the_vmid(cmd: tuple[int, int]) -> None:
    r = shared_asid_rig()
    r.translate(IOVA)
    r.smmu.submit(cmd)
    assert r.unit.caches.tlb_size == 0


def test_cd_rewritten_without_cfgi_cd_is_reported_stale_naming_cfgi_cd() -> None:
    r = shared_asid_rig()
    events = stale_events(r)
    r.cd(2, 6)
    r.table(6).map(IOVA, 0x40_0000)
    r.translate(IOVA, pasid=2)
    r.cds.write(2, cd_words(r.table(5).root, 5))  # back to ASID 5, no CFGI_CD
    res = r.translate(IOVA, pasid=2)
    assert res.runs == ((0x40_0000, 4),)
    assert events[0]["missing"] == "CFGI_CD"


def test_cd_rewritten_with_cfgi_cd_is_not_stale() -> None:
    r = shared_asid_rig()
    r.cd(2, 6)
    r.table(6).map(IOVA, 0x40_0000)
    r.translate(IOVA, pasid=2)
    r.cds.write(2, cd_words(r.table(5).root, 5))
    r.smmu.submit(cmd_cfgi_cd(RID, 2))
    assert r.translate(IOVA, pasid=2).runs == ((0x20_0000, 4),)
    assert r.unit.stats.stale_uses == 0


def test_cd_cleared_without_cfgi_cd_is_stale() -> None:
    r = shared_asid_rig()
    events = stale_events(r)
    r.translate(IOVA, pasid=1)
    r.cds.write(1, (0, 0, 0, 0))
    r.translate(IOVA, pasid=1)
    assert events[0]["missing"] == "CFGI_CD" and events[0]["current"] == (-1, 0x0A)


def test_ste_rewritten_without_cfgi_ste_is_reported_stale_naming_cfgi_ste() -> None:
    r = shared_asid_rig()
    events = stale_events(r)
    r.translate(IOVA)
    r.smmu.write_ste(RID, ste_bypass())
    assert r.translate(IOVA).runs == ((0x20_0000, 4),)
    assert events[0]["missing"] == "CFGI_STE"


def test_ste_stale_into_a_fault_is_reported() -> None:
    r = shared_asid_rig()
    r.smmu.write_ste(0x20, ste_bypass())
    r.unit.translate(0x20, None, False, IOVA, 4, False)
    r.smmu.write_ste(0x20, (0, 0, 0))
    r.unit.translate(0x20, None, False, IOVA, 4, False)
    assert r.unit.stats.stale_uses == 1


def test_cfgi_ste_also_drops_the_cds_of_the_stream() -> None:
    r = shared_asid_rig()
    r.translate(IOVA, pasid=1)
    r.smmu.submit(cmd_cfgi_ste(RID))
    assert not r.unit.caches.ste and not r.unit.caches.cd


@pytest.mark.parametrize(
    ("cmd", "left"),
    [(cmd_cfgi_cd(RID, 1), 1), (cmd_cfgi_cd_all(RID), 0), (cmd_cfgi_cd(RID + 1, 0), 2)],
    ids=["one", "all", "other-sid"],
)
def test_cfgi_cd_forms_drop_their_cds(cmd: tuple[int, int], left: int) -> None:
    r = shared_asid_rig()
    r.translate(IOVA, pasid=1)
    r.translate(IOVA, pasid=2)
    r.smmu.submit(cmd)
    assert len(r.unit.caches.cd) == left


def test_cfgi_all_drops_every_ste_and_cd() -> None:
    r = shared_asid_rig()
    r.translate(IOVA, pasid=1)
    r.smmu.submit(cmd_cfgi_all())
    assert not r.unit.caches.ste and not r.unit.caches.cd
    assert r.unit.caches.tlb_size == 1


def test_asid_reused_for_other_tables_without_tlbi_names_tlbi_nh_asid() -> None:
    r = shared_asid_rig()
    events = stale_events(r)
    r.translate(IOVA)
    r.table(9).map(IOVA, 0x50_0000)
    r.cds.write(3, cd_words(r.table(9).root, 5))
    r.smmu.submit(cmd_cfgi_cd(RID, 3))
    assert r.translate(IOVA, pasid=3).runs == ((0x20_0000, 4),)
    assert events[0]["missing"] == "TLBI_NH_ASID"


def test_strict_stale_raises_naming_the_missing_command() -> None:
    r = shared_asid_rig({"strict_stale": True})
    r.translate(IOVA)
    r.table(5).unmap(IOVA)
    with pytest.raises(StaleTranslationError, match="missing TLBI_NH_VA"):
        r.translate(IOVA)


def test_stale_use_is_counted_without_a_trace_sink() -> None:
    r = shared_asid_rig()
    r.translate(IOVA)
    r.table(5).map(IOVA, 0x30_0000)
    r.translate(IOVA)
    assert r.unit.stats.stale_uses == 1 and r.m.hw_trace is None


def test_permission_loss_without_tlbi_is_stale() -> None:
    r = shared_asid_rig()
    r.translate(IOVA, write=True)
    r.table(5).map(IOVA, 0x20_0000, ro=True)
    assert r.translate(IOVA, write=True).fault is None
    assert r.unit.stats.stale_uses == 1


def test_permission_fault_on_a_stale_entry_is_checked() -> None:
    r = shared_asid_rig()
    r.table(5).map(IOVA, 0x20_0000, ro=True)
    r.translate(IOVA)
    r.table(5).map(IOVA, 0x20_0000)
    assert r.translate(IOVA, write=True).fault is not None
    assert r.unit.stats.stale_uses == 1


def test_stale_cd_with_a_fault_on_the_old_tables_is_checked() -> None:
    r = shared_asid_rig()
    r.translate(IOVA, pasid=1)
    r.table(6).map(IOVA + 0x1000, 0x40_0000)
    r.cds.write(1, cd_words(r.table(6).root, 6))
    assert r.translate(IOVA + 0x1000, pasid=1).fault is not None
    assert r.unit.stats.stale_uses == 1


def test_bypass_through_a_stale_ste_is_checked() -> None:
    r = Rig()
    r.smmu.write_ste(0x20, ste_bypass())
    r.unit.translate(0x20, None, False, 0x1000, 4, False)
    r.smmu.write_ste(0x20, (ent.SteDw0.encode(V=1, CONFIG=0), 0, 0))
    assert r.unit.translate(0x20, None, False, 0x1000, 4, False).fault is None
    assert r.unit.stats.stale_uses == 1
