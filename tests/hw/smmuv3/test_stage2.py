"""Stage 2, stage 1 + stage 2 nesting and HTTU dirty state (IHI 0070 §3.3, §5.2, §7.3;
IDR0.S2P, IDR0.HTTU=2): translations through both stages against a reference built
from the test's own map of both stages, faults at the right stage, TLB tags and the
invalidations each stage needs, DBM pages made writable by a write."""

from __future__ import annotations

import pytest

from hw.smmuv3 import Evt
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from tests.hw.smmuv3.helpers import (
    RID,
    CdTable,
    Pages,
    PageTable,
    S2Table,
    Smmu,
    cd_words,
    cmd_cfgi_all,
    cmd_tlbi_nh_all,
    cmd_tlbi_nh_va,
    cmd_tlbi_s2_ipa,
    cmd_tlbi_s12_vmall,
    make,
    reason,
    reg_read,
    ste_s2,
)

GUEST_IPA = 0x4000_0000
GUEST_PAGES = 48
VA = 0x7_0000_0000
VMID = 3


class Guest:
    """A VM: ``GUEST_PAGES`` pages of IPA space at :data:`GUEST_IPA`, backed by host
    pages and mapped by a stage-2 table; its CD table and stage-1 tables hold IPAs."""

    def __init__(self, config: dict[str, object] | None = None) -> None:
        self.m, self.unit = make({"s2p": True, "httu": 2, **(config or {})})
        self.pages = Pages(self.m)
        self.smmu = Smmu(self.m, self.unit, self.pages)
        self.host = self.pages.alloc(GUEST_PAGES)
        self.s2 = S2Table(self.m, self.pages)
        for i in range(GUEST_PAGES):
            self.s2.map(GUEST_IPA + 4096 * i, self.host + 4096 * i)
        self.next = 0
        self.cd_table = self.alloc()
        self.s1_root = self.alloc()

    def alloc(self) -> int:
        ipa = GUEST_IPA + 4096 * self.next
        self.next += 1
        return ipa

    def pa(self, ipa: int) -> int:
        """The reference: where the guest's IPA lives in host memory."""
        return self.host + ipa - GUEST_IPA

    def s1_entry(self, va: int) -> int:
        table = self.s1_root
        mem = self.m.memory
        for level in range(3):
            addr = self.pa(table + ((va >> (39 - 9 * level)) & 0x1FF) * 8)
            pte = mem.read_u64(addr)
            if not pte & 1:
                nxt = self.alloc()
                mem.write_u64(addr, nxt | 3)
                table = nxt
            else:
                table = pte & ent.LpaeLeaf.OA.mask
        return table + ((va >> 12) & 0x1FF) * 8

    def s1_map(self, va: int, ipa: int, ro: bool = False, dbm: bool = False) -> int:
        """Map ``va`` to ``ipa`` in the guest's stage-1 table; the leaf's PA."""
        addr = self.pa(self.s1_entry(va))
        pte = PageTable.leaf(ipa, ro=ro) | (ent.LpaeLeaf.DBM.mask if dbm else 0)
        self.m.memory.write_u64(addr, pte)
        return addr

    def nest(self, asid: int = 7, s2r: int = 1, **cd: int) -> None:
        """Install the guest's CD 0 and the nested STE (``arm_smmu_make_nested_cd_table_ste``:
        the stage-2 STE with Config 0b111 and the guest's S1ContextPtr)."""
        self.m.memory.write(self.pa(self.cd_table), _words(*cd_words(self.s1_root, asid, **cd)))
        dw0 = ent.SteDw0.encode(S1CTXPTR=self.cd_table >> 6)
        dw1 = ent.SteDw1.encode(S1DSS=ent.S1DSS_SSID0, S1CIR=1, S1COR=1, S1CSH=3)
        self.smmu.write_ste(RID, ste_s2(self.s2.root, VMID, ent.STE_CFG_NESTED, dw0, dw1, S2R=s2r))

    def dma(self, va: int, write: bool = False, size: int = 8) -> tuple[tuple[int, int], ...]:
        res = self.unit.translate(RID, None, False, va, size, write)
        assert res.fault is None, res
        return res.runs


def _words(*qs: int) -> bytes:
    return b"".join(q.to_bytes(8, "little") for q in qs)


def test_stage2_alone_translates_ipa_and_refuses_a_substream() -> None:
    g = Guest()
    g.smmu.write_ste(RID, ste_s2(g.s2.root, VMID))
    ipa = GUEST_IPA + 5 * 4096 + 0x10
    assert g.dma(ipa) == ((g.pa(ipa), 8),)
    assert reason(g.unit.translate(RID, 1, False, ipa, 8, False)) == Evt.C_BAD_SUBSTREAMID
    assert reason(g.unit.translate(RID, None, False, 1 << 39, 8, False)) == Evt.F_TRANSLATION
    assert g.unit.caches.tlb.entries()[0].tag == (VMID, -2)


def test_nested_dma_walks_both_stages_and_lands_on_the_right_bytes() -> None:
    g = Guest()
    data = g.alloc()
    g.s1_map(VA, data)
    g.nest()
    g.m.memory.write(g.pa(data) + 0x40, b"through both stages")
    runs = g.dma(VA + 0x40, size=19)
    assert runs == ((g.pa(data) + 0x40, 19),)
    assert g.m.memory.read(runs[0][0], 19) == b"through both stages"
    assert g.unit.caches.tlb.entries()[0].tag == (VMID, 7)


def test_stage1_table_missing_at_stage2_is_a_stage2_walk_fault_with_the_ipa() -> None:
    g = Guest()
    data = g.alloc()
    g.s1_map(VA, data)
    g.nest()
    leaf_table = g.s1_entry(VA) & ~0xFFF
    g.s2.unmap(leaf_table)
    assert reason(g.unit.translate(RID, None, False, VA, 8, False)) == Evt.F_TRANSLATION
    (e,) = g.smmu.events()
    assert ent.EvtDw1.S2.get(e[1]) == 1 and ent.EvtDw1.CLASS.get(e[1]) == ent.EVT_CLASS_TT
    assert e[2] == VA and ent.EvtDw3S2.IPA.get(e[3]) << 12 == leaf_table


def test_output_refused_at_stage2_is_recorded_by_s2r_only() -> None:
    g = Guest()
    data = g.alloc()
    g.s1_map(VA, data)
    g.s2.map(data, g.pa(data), w=False)
    g.nest()
    assert g.dma(VA) == ((g.pa(data), 8),)
    assert reason(g.unit.translate(RID, None, False, VA, 8, True)) == Evt.F_PERMISSION
    (e,) = g.smmu.events()
    assert ent.EvtDw1.S2.get(e[1]) == 1 and ent.EvtDw1.CLASS.get(e[1]) == ent.EVT_CLASS_IN
    assert ent.EvtDw3S2.IPA.get(e[3]) << 12 == data
    g.s2.unmap(data)
    g.nest(s2r=0)
    g.smmu.submit(cmd_tlbi_s12_vmall(VMID), cmd_cfgi_all())
    assert reason(g.unit.translate(RID, None, False, VA, 8, False)) == Evt.F_TRANSLATION
    assert g.smmu.events() == []


def test_stage1_read_only_is_a_stage1_permission_fault() -> None:
    g = Guest()
    data = g.alloc()
    g.s1_map(VA, data, ro=True)
    g.nest()
    assert reason(g.unit.translate(RID, None, False, VA, 8, True)) == Evt.F_PERMISSION
    (e,) = g.smmu.events()
    assert ent.EvtDw1.S2.get(e[1]) == 0


def test_stage2_change_needs_s12_vmall_for_nested_entries_not_s2_ipa() -> None:
    """A nested entry holds the combined translation: TLBI_S2_IPA (which names an IPA)
    cannot find it; the stale use names the stage-1 invalidation; TLBI_S12_VMALL
    removes it."""
    g = Guest()
    data, moved = g.alloc(), g.alloc()
    g.s1_map(VA, data)
    g.nest()
    g.dma(VA)
    g.s2.map(data, g.pa(moved))
    g.smmu.submit(cmd_tlbi_s2_ipa(data, VMID))
    assert g.dma(VA) == ((g.pa(data), 8),)
    assert g.unit.stats.stale_uses == 1
    g.smmu.submit(cmd_tlbi_s12_vmall(VMID + 1))
    g.dma(VA)
    assert g.unit.stats.stale_uses == 2  # another VMID's invalidation leaves it
    g.smmu.submit(cmd_tlbi_s12_vmall(VMID))
    assert g.dma(VA) == ((g.pa(moved), 8),)
    assert g.unit.stats.stale_uses == 2


def test_stage2_only_entries_need_tlbi_s2_ipa_and_ignore_nh_commands() -> None:
    g = Guest()
    g.smmu.write_ste(RID, ste_s2(g.s2.root, VMID))
    ipa = GUEST_IPA + 3 * 4096
    g.dma(ipa)
    g.s2.map(ipa, g.pa(ipa + 4096))
    g.smmu.submit(cmd_tlbi_nh_all(VMID), cmd_tlbi_nh_va(0, ipa, VMID))
    assert g.dma(ipa) == ((g.pa(ipa), 8),)
    assert g.unit.stats.stale_uses == 1
    g.smmu.submit(cmd_tlbi_s2_ipa(ipa, VMID))
    assert g.dma(ipa) == ((g.pa(ipa + 4096), 8),)
    assert g.unit.stats.stale_uses == 1


def test_stage1_change_in_the_guest_needs_tlbi_nh_va() -> None:
    g = Guest()
    data, other = g.alloc(), g.alloc()
    g.s1_map(VA, data)
    g.nest()
    g.dma(VA)
    g.s1_map(VA, other)
    assert g.dma(VA) == ((g.pa(data), 8),)
    assert g.unit.stats.stale_uses == 1
    g.smmu.submit(cmd_tlbi_nh_va(7, VA, VMID))
    assert g.dma(VA) == ((g.pa(other), 8),)


def test_stage1_dbm_page_becomes_writable_on_the_first_write_only() -> None:
    """CD.HD: a read leaves the writable-clean leaf alone (AP[2]=1, DBM=1); a write
    clears AP[2] (dirty) and proceeds; a page without DBM stays a permission fault."""
    g = Guest()
    data, ro = g.alloc(), g.alloc()
    leaf = g.s1_map(VA, data, ro=True, dbm=True)
    g.s1_map(VA + 4096, ro, ro=True)
    g.nest(HA=1, HD=1)
    g.dma(VA)
    assert g.m.memory.read_u64(leaf) & ent.LpaeLeaf.AP2.mask
    assert g.dma(VA, write=True) == ((g.pa(data), 8),)
    assert not g.m.memory.read_u64(leaf) & ent.LpaeLeaf.AP2.mask
    assert reason(g.unit.translate(RID, None, False, VA + 4096, 8, True)) == Evt.F_PERMISSION
    assert g.unit.stats.stale_uses == 0


def test_stage2_dbm_page_gets_s2ap_write_on_a_write() -> None:
    g = Guest()
    g.smmu.write_ste(RID, ste_s2(g.s2.root, VMID, S2HA=1, S2HD=1))
    ipa = GUEST_IPA + 9 * 4096
    leaf = g.s2.map(ipa, g.pa(ipa), w=False, dbm=True)
    g.dma(ipa)
    assert not g.m.memory.read_u64(leaf) & ent.LpaeS2Leaf.S2AP_W.mask
    g.dma(ipa, write=True)
    assert g.m.memory.read_u64(leaf) & ent.LpaeS2Leaf.S2AP_W.mask


@pytest.mark.parametrize(
    ("config", "fields"),
    [
        ({"s2p": False}, {}),
        ({"httu": 1}, {"S2HD": 1}),
        ({}, {"S2TG": 1}),
        ({}, {"S2SL0": 3}),
        ({}, {"S2T0SZ": 16}),  # 48-bit IPA from level 1 needs 512 concatenated tables
        ({}, {"S2AA64": 0}),
    ],
)
def test_bad_stage2_ste_is_c_bad_ste(config: dict[str, object], fields: dict[str, int]) -> None:
    g = Guest(config)
    g.smmu.write_ste(RID, ste_s2(g.s2.root, VMID, **fields))
    assert reason(g.unit.translate(RID, None, False, GUEST_IPA, 8, False)) == Evt.C_BAD_STE


def test_cd_hd_needs_httu_2() -> None:
    m, unit = make({"httu": 1})
    pages = Pages(m)
    smmu = Smmu(m, unit, pages)
    cds = CdTable(m, pages, 0)
    cds.write(0, cd_words(PageTable(m, pages).root, 1, HA=1, HD=1))
    smmu.write_ste(RID, cds.ste())
    assert reason(unit.translate(RID, None, False, VA, 8, False)) == Evt.C_BAD_CD


def test_stage2_commands_are_illegal_without_s2p() -> None:
    m, unit = make()
    smmu = Smmu(m, unit, Pages(m))
    assert sr.IDR0.S2P.get(reg_read(m, sr.IDR0_OFF)) == 0
    smmu.put(cmd_tlbi_s12_vmall(1))
    smmu.ring()
    assert sr.CMDQ_CONS.ERR.get(smmu.cons_reg()) == sr.CERROR_ILL


def test_write_through_a_cached_writable_entry_of_a_cleaned_dbm_page_is_stale() -> None:
    """Software makes a dirty DBM leaf writable-clean again (AP[2]=1): without
    TLBI_NH_VA the cached writable entry takes the next write and marks nothing
    dirty, a stale use; after it the write dirties the leaf again."""
    g = Guest()
    data = g.alloc()
    leaf = g.s1_map(VA, data, ro=True, dbm=True)
    g.nest(HA=1, HD=1)
    g.dma(VA, write=True)
    g.m.memory.write_u64(leaf, g.m.memory.read_u64(leaf) | ent.LpaeLeaf.AP2.mask)
    g.dma(VA, write=True)
    assert g.unit.stats.stale_uses == 1
    assert g.m.memory.read_u64(leaf) & ent.LpaeLeaf.AP2.mask
    g.dma(VA)  # a read through it is no stale use: the translation is the same
    assert g.unit.stats.stale_uses == 1
    g.smmu.submit(cmd_tlbi_nh_va(7, VA, VMID))
    g.dma(VA, write=True)
    assert not g.m.memory.read_u64(leaf) & ent.LpaeLeaf.AP2.mask
    assert g.unit.stats.stale_uses == 1


def test_dump_decodes_stage2_and_nested_stes_and_lists_both_stages() -> None:
    """The debug dump names Config 0b110/0b111 with their stage-2 controls, lists the
    stage-2 leaves as ``ipa -> phys`` with S2AP, and a nested STE's guest CD and
    stage-1 leaves (``va -> ipa``) read through stage 2."""
    g = Guest()
    ipa = GUEST_IPA + 5 * 4096
    g.smmu.write_ste(RID, ste_s2(g.s2.root, VMID))
    text = g.unit.dump()
    assert f"sid {RID:#x}: stage-2 vmid={VMID} s2ttb={g.s2.root:#x} ipa_bits=39 s2sl=1" in text
    assert f"s2 {ipa:#x} -> {g.pa(ipa):#x} 0x1000 rw af" in text
    data = g.alloc()
    g.s2.map(data, g.pa(data), w=False)
    g.s1_map(VA, data, ro=True)
    g.nest(asid=9)
    g.smmu.submit(cmd_cfgi_all())
    text = g.unit.dump()
    assert f"sid {RID:#x}: nested vmid={VMID} cdtable={g.cd_table:#x}" in text
    assert f"s2ttb={g.s2.root:#x}" in text
    assert f"cd 0: asid=9 ttb0={g.s1_root:#x}" in text
    assert f"{VA:#x} -> ipa {data:#x} 0x1000 r-u af" in text
    assert f"s2 {data:#x} -> {g.pa(data):#x} 0x1000 r- af" in text
    g.s2.unmap(g.s1_root)
    assert f"table {g.s1_root:#x}: unreadable" in g.unit.dump()
