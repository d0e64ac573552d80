"""The VT-d model's findings: a stale use names the cache that answered, the cached
and current entries, the table write that changed them and the invalidation that
would have removed the entry; a fault carries its fault record decoded and the walk
up to where it stopped (:mod:`hw.vtd.findings`)."""

from __future__ import annotations

import json

import pytest

from hw.vtd import StaleTranslationError
from hw.vtd import entries as ent
from hw.vtd import registers as vr
from hw.vtd.dump import dump_caches
from tests.hw.vtd.helpers import RID, PageTable, legacy_setup, sm_setup
from tests.hw.vtd.test_devtlb import sm_rig, unmap_without_devtlb_flush
from tests.hw.vtd.test_irq_remap import Ir, irte, remappable


def test_a_fault_carries_its_record_and_the_walk_to_the_missing_entry() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x1000, 0x20_0000)
    res = unit.translate(RID, None, False, 0x2000, 4, False)
    assert res.fault is not None
    found = unit.findings[-1]
    assert found.check == "fault" and found.iova == 0x2000 and found.requester == "00:02.0"
    hi = unit.regs["FRCD0_HI"]  # the fault recording register, decoded independently
    record = dict(found.record)
    assert int(record["FR"], 16) == vr.FRCD_HI.FR.get(hi) == res.fault.reason
    assert record["SID"] == "00:02.0" and vr.FRCD_HI.SID.get(hi) == RID
    assert (record["T"], record["status"], record["FI"]) == ("read", "recorded", "0x2000")
    assert [s.what for s in found.walk] == [
        "root",
        "context",
        *(f"level {n}" for n in (4, 3, 2, 1)),
    ]
    last = found.walk[-1]
    assert (last.addr, last.value, last.note) == (pt.entry_addr(0x2000, 1), 0, "not present")
    assert found.walk[-2].note == f"table {pt.entry_addr(0x2000, 1) & ~0xFFF:#x}"


def test_a_stale_context_entry_names_the_context_cache_invalidation() -> None:
    m, unit, pages, t, pt = legacy_setup({"strict_stale": False})
    pt.map(0x1000, 0x20_0000)
    unit.translate(RID, None, False, 0x1000, 4, False)
    other = PageTable(m, pages, 4)
    other.map(0x1000, 0x30_0000)
    ctx = t.legacy_ctx(RID, other.root, did=1)  # rewritten, no invalidation
    unit.translate(RID, None, False, 0x1000, 4, False)
    [found] = [f for f in unit.findings if f.check == "stale"]
    assert found.cache == "context cache" and found.domain == "DID 1"
    assert found.cached is not None and found.cached.phys == 0x20_0000
    assert found.current is not None and found.current.phys == 0x30_0000
    assert [w.addr for w in found.writes] == [ctx]  # the context entry's low qword
    assert [i.text() for i in found.missing] == [
        "context-cache invalidation (cc_inv_dsc, type 0x1): "
        "G=device-selective DID=1 SID=00:02.0 FM=0"
    ]


def test_a_stale_pasid_entry_names_the_pasid_cache_invalidation() -> None:
    m, unit, pages, t = sm_setup({"strict_stale": False})
    pa, pb = PageTable(m, pages, 4, fl=True), PageTable(m, pages, 4, fl=True)
    pa.map(0x1000, 0xA000)
    pb.map(0x1000, 0xB000)
    t.pasid_entry(RID, 1, ent.PGTT_FL, did=5, pt=pa)
    unit.translate(RID, 1, False, 0x1000, 4, False)
    t.pasid_entry(RID, 1, ent.PGTT_FL, did=5, pt=pb)  # repointed, no invalidation
    unit.translate(RID, 1, False, 0x1000, 4, False)
    [found] = [f for f in unit.findings if f.check == "stale"]
    assert (found.cache, found.pasid, found.domain) == ("PASID cache", 1, "DID 5")
    assert found.current is not None and found.current.phys == 0xB000
    assert [i.text() for i in found.missing] == [
        "PASID-cache invalidation (pc_inv_dsc, type 0x7): G=PASID-selective DID=5 PASID=1"
    ]


def test_a_stale_iotlb_use_raises_with_the_report_and_renders_as_json() -> None:
    m, unit, pages, t = sm_setup({"strict_stale": True})
    pa = PageTable(m, pages, 4, fl=True)
    leaf = pa.map(0x20_0000, 0x40_0000, level=2)  # a 2 MiB first-stage page
    t.pasid_entry(RID, 3, ent.PGTT_FL, did=7, pt=pa)
    unit.translate(RID, 3, False, 0x20_0000, 4, False)
    m.memory.write_u64(leaf, 0)  # unmapped, no invalidation
    with pytest.raises(StaleTranslationError) as err:
        unit.translate(RID, 3, False, 0x20_1000, 4, False)
    text = str(err.value)
    assert "cached entry:  iova 0x200000 -> 0x400000 2MiB level 2 r" in text
    assert (
        "missing invalidation: PASID-based IOTLB invalidation (p_iotlb_inv_dsc, type 0x6): "
        "G=page-selective-within-PASID DID=7 PASID=3 ADDR=0x200000 AM=9"
    ) in text
    doc = json.loads(json.dumps(unit.findings[-1].to_json()))
    assert doc["cached"] == {
        "iova": "0x200000",
        "phys": "0x400000",
        "size": "0x200000",
        "level": 2,
        "perms": doc["cached"]["perms"],
        "fault": "",
    }
    assert doc["writes"][0]["addr"] == hex(leaf) and doc["writes"][0]["new"] == "0x0"
    assert doc["missing"][0]["fields"]["AM"] == "9"


def test_a_stale_device_tlb_entry_names_the_device_tlb_invalidation() -> None:
    r, pt = sm_rig()
    q = r.queue()
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    unmap_without_devtlb_flush(r, pt, 0x1000, q)
    r.read(0x1000, 8)
    [found] = [f for f in r.unit.findings if f.check == "stale"]
    assert found.cache == "device TLB" and found.iova == 0x1000
    assert found.cached is not None and (found.cached.phys, found.cached.perms) == (0x200000, "r-")
    assert found.current is not None and found.current.phys is None
    assert [w.addr for w in found.writes] == [pt.entry_addr(0x1000, 1)]
    [inv] = found.missing
    fields = dict(inv.fields)
    assert (fields["SID"], fields["ADDR"], fields["S"]) == ("00:02.0", "0x1000", "0")
    assert found.pasid is None  # a request without PASID: the non-PASID descriptor
    assert inv.name == "Device-TLB invalidation (dev_iotlb_inv_dsc, type 0x3)"


def test_a_stale_interrupt_entry_names_the_iec_invalidation() -> None:
    ir = Ir()
    ir.put(1, irte(0x50))
    ir.send(remappable(1))
    ir.put(1, irte(0x51))  # rewritten, no interrupt entry cache invalidation
    ir.send(remappable(1))
    [found] = [f for f in ir.unit.findings if f.check == "stale"]
    assert found.cache == "interrupt entry cache" and dict(found.record) == {"index": "0x1"}
    cached, current = found.detail.splitlines()
    assert cached.startswith("cached IRTE:  P=1 FPD=0 vector=0x50 dest=")
    assert current.startswith("current IRTE: P=1 FPD=0 vector=0x51 dest=")
    assert [w.addr for w in found.writes] == [ir.table + 16]  # the IRTE's low qword
    assert [i.text() for i in found.missing] == [
        "interrupt entry cache invalidation (iec_inv_dsc, type 0x4): "
        "G=index-selective IIDX=0x1 IM=0"
    ]


def test_the_cache_dump_lists_the_interrupt_entry_cache() -> None:
    ir = Ir()
    ir.put(1, irte(0x50))
    ir.send(remappable(1))
    ir.put(1, irte(0x51))
    lines = dump_caches(ir.unit, "iec").splitlines()
    assert lines[:2] == ["dmar0: caches", "  interrupt entry cache: 1 entries"]
    [entry] = lines[2:]
    assert entry.startswith("    index=0x1 P=1 FPD=0 vector=0x50 ")
    assert entry.endswith(" suspect")  # its IRTE was rewritten since it was cached
