"""SMMUv3 stale-use findings at stage 2, through both stages and with HTTU dirty state:
the cache, the cached and the current entry (a fresh walk of every stage the STE
enables), the table write and the commands that would have removed the entry, in the
SMMU's terms. The machine is driven through its registers, command queue and RAM."""

from __future__ import annotations

from hw.bus import Finding
from hw.smmuv3 import entries as ent
from tests.hw.smmuv3.helpers import RID, ste_s2
from tests.hw.smmuv3.test_stage2 import GUEST_IPA, VA, VMID, Guest

ASID = 7


def _stale(g: Guest) -> Finding:
    [found] = [f for f in g.unit.findings if f.check == "stale"]
    assert found.unit == "smmu0" and found.requester == "00:02.0" and found.pasid is None
    assert found.cache == "TLB"
    return found


def test_stage2_only_stale_names_tlbi_s2_ipa_and_both_leaves() -> None:
    g = Guest()
    g.smmu.write_ste(RID, ste_s2(g.s2.root, VMID))
    ipa = GUEST_IPA + 3 * 4096
    g.dma(ipa)
    leaf = g.s2.map(ipa, g.pa(ipa + 4096))  # remapped, no TLBI_S2_IPA
    g.dma(ipa)
    found = _stale(g)
    assert found.iova == ipa and found.domain == f"VMID {VMID}"
    assert found.cached is not None and found.cached.phys == g.pa(ipa)
    assert found.current is not None and found.current.phys == g.pa(ipa + 4096)
    [write] = found.writes
    assert write.addr == leaf and write.new & ~0xFFF & ((1 << 48) - 1) == g.pa(ipa + 4096)
    assert [i.text() for i in found.missing] == [
        f"CMD_TLBI_S2_IPA: VMID={VMID} Address={ipa:#x} range=4KiB Leaf=1"
    ]
    assert found.detail == ""


def test_nested_stale_after_a_stage2_change_names_both_ways_and_the_current_output() -> None:
    """The current entry comes from walking stage 1 through stage 2 (a stage-1-only
    walk would read the guest's tables at their IPAs and fail)."""
    g = Guest()
    data, moved = g.alloc(), g.alloc()
    g.s1_map(VA, data)
    g.nest(asid=ASID)
    g.dma(VA)
    g.s2.map(data, g.pa(moved))
    g.dma(VA)
    found = _stale(g)
    assert found.iova == VA and found.domain == f"VMID {VMID} ASID {ASID}"
    assert found.cached is not None and found.cached.phys == g.pa(data)
    assert found.current is not None and found.current.phys == g.pa(moved)
    assert not found.current.fault
    assert [i.text() for i in found.missing] == [
        f"CMD_TLBI_NH_VA: VMID={VMID} ASID={ASID} Address={VA:#x} range=4KiB Leaf=1",
        f"CMD_TLBI_S12_VMALL: VMID={VMID}",
    ]
    assert len(found.writes) == 1


def test_write_that_made_no_dirty_update_says_so() -> None:
    g = Guest()
    data = g.alloc()
    leaf = g.s1_map(VA, data, ro=True, dbm=True)
    g.nest(asid=ASID, HA=1, HD=1)
    g.dma(VA, write=True)
    g.m.memory.write_u64(leaf, g.m.memory.read_u64(leaf) | ent.LpaeLeaf.AP2.mask)
    g.dma(VA, write=True)
    found = _stale(g)
    assert found.cached is not None and found.current is not None
    assert found.cached.phys == found.current.phys == g.pa(data)
    assert found.cached.perms == "rwu" and found.current.perms == "r-u"
    assert "no dirty update" in found.detail and "no dirty update" in found.report()
    assert [i.name for i in found.missing] == ["CMD_TLBI_NH_VA", "CMD_TLBI_S12_VMALL"]
    [write] = found.writes
    assert write.addr == leaf and write.new & ent.LpaeLeaf.AP2.mask
