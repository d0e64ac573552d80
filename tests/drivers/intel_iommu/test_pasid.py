"""PASID tables and entries (pasid.c): layout in RAM, setup/replace/teardown rules and
their invalidation order, and both API generations' ops."""

from __future__ import annotations

import pytest

from drivers.intel_iommu.dmar import dmar_state
from drivers.intel_iommu.pasid import (
    intel_pasid_get_entry,
    intel_pasid_replace_pass_through,
    intel_pasid_setup_pass_through,
    intel_pasid_tear_down_entry,
    pasid_entry_read,
)
from drivers.intel_iommu.structs import DeviceDomainInfo, DmarDomain, IntelIommu
from kernel.errno import EBUSY, EINVAL, ENODEV
from kernel.iommu.dma_iommu import iommu_attach_dma_pasid, iommu_detach_dma_pasid
from kernel.iommu.iommu import (
    iommu_domain_free,
    iommu_get_domain_for_dev,
    iommu_group_claim_dma_owner,
    iommu_group_release_dma_owner,
    iommu_paging_domain_alloc,
)
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from kernel.mm import read64, virt_to_phys
from kernel.pci import PciDev
from kernel.trace import TraceEvent, capture
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory

PC, P_IOTLB, IOTLB, DEVTLB, P_DEVTLB, WAIT = 7, 6, 2, 3, 8, 5


def _iommu() -> IntelIommu:
    return dmar_state().units[0]


def _info(dev: PciDev) -> DeviceDomainInfo:
    info = dev.iommu.priv
    assert isinstance(info, DeviceDomainInfo)
    return info


def _types(events: list[TraceEvent]) -> list[int]:
    return [e.fields["type"] for e in events]  # type: ignore[misc]


def _default(dev: PciDev) -> DmarDomain:
    dom = iommu_get_domain_for_dev(dev)
    assert isinstance(dom, DmarDomain)
    return dom


def test_pasid_entries_point_at_the_domains_first_stage_table(vtd: Vtd) -> None:
    dsa = vtd.dsa
    dom = _default(dsa)
    pasid = iommu_alloc_global_pasid(dsa)
    iommu_attach_device_pasid(dom, dsa, pasid)
    did = dom.iommu_array[0].did
    for p in (0, pasid):
        pte = intel_pasid_get_entry(dsa, p)
        assert pte is not None
        val = pasid_entry_read(pte)
        assert val[0] == (2 << 2) | (1 << 6) | 1  # AW 48-bit, PGTT first-stage, P
        assert val[1] == did | (1 << 23)  # DID, PWSNP
        assert val[2] == virt_to_phys(dom.pgd) and val[3:] == [0] * 5
    iommu_detach_device_pasid(dom, dsa, pasid)
    iommu_free_global_pasid(pasid)


def test_context_entry_points_at_the_pasid_directory(vtd: Vtd) -> None:
    info = _info(vtd.dsa)
    table = info.pasid_table
    assert table is not None and table.max_pasid == 1 << 20
    ctx = vtd.unit.walker.context(vtd.unit.root, True, vtd.dsa.rid)
    assert ctx.dirptr == virt_to_phys(table.table) and ctx.pdts == 7
    assert ctx.rid_pasid == 0


def test_pasid_tables_are_allocated_on_first_use(vtd: Vtd) -> None:
    dsa = vtd.dsa
    table = _info(dsa).pasid_table
    assert table is not None
    assert read64(table.table + 8) == 0
    dom = _default(dsa)
    iommu_attach_device_pasid(dom, dsa, 100)
    assert read64(table.table + 8) & 1
    iommu_detach_device_pasid(dom, dsa, 100)


def test_setup_over_a_present_entry_is_ebusy(vtd: Vtd) -> None:
    with pytest.raises(EBUSY):
        intel_pasid_setup_pass_through(_iommu(), vtd.dsa, 0)


def test_replace_needs_a_present_entry(vtd: Vtd) -> None:
    with pytest.raises(EINVAL):
        intel_pasid_replace_pass_through(_iommu(), vtd.dsa, 2, 77)


def test_entry_beyond_the_table_warns(vtd: Vtd) -> None:
    assert intel_pasid_get_entry(vtd.dsa, 1 << 20) is None
    assert vtd.take_warnings() == [f"PASID {1 << 20} beyond the PASID table"]


def test_replacing_a_pasids_domain_flushes_it_as_a_modified_entry(vtd: Vtd) -> None:
    dsa = vtd.dsa
    old = _default(dsa)
    pasid = iommu_alloc_global_pasid(dsa)
    iommu_attach_device_pasid(old, dsa, pasid)
    new = iommu_paging_domain_alloc(dsa)
    assert isinstance(new, DmarDomain) and new.ops is not None
    with capture("hw_vtd:qi_descriptor") as events:
        new.ops.set_dev_pasid(new, dsa, pasid, old)  # type: ignore[attr-defined]
    assert _types(events) == [PC, WAIT, P_IOTLB, WAIT, P_DEVTLB, WAIT]
    assert events[0].fields["qw"][0] >> 16 & 0xFFFF == old.iommu_array[0].did  # type: ignore[index]
    pte = intel_pasid_get_entry(dsa, pasid)
    assert pte is not None and pasid_entry_read(pte)[2] == virt_to_phys(new.pgd)
    dsa.iommu_group.pasid_array[pasid] = new
    identity = dmar_state().ops.identity_domain
    identity.ops.set_dev_pasid(identity, dsa, pasid, new)
    assert pasid_entry_read(pte)[0] >> 6 & 7 == 4
    dsa.iommu_group.pasid_array[pasid] = identity
    iommu_detach_device_pasid(identity, dsa, pasid)
    iommu_free_global_pasid(pasid)
    iommu_domain_free(new)


def test_replacing_with_a_second_stage_domain(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"flts": False})
    dsa = v.dsa
    old = _default(dsa)
    iommu_attach_device_pasid(old, dsa, 9)
    new = iommu_paging_domain_alloc(dsa)
    assert isinstance(new, DmarDomain) and new.ops is not None
    new.ops.set_dev_pasid(new, dsa, 9, old)  # type: ignore[attr-defined]
    pte = intel_pasid_get_entry(dsa, 9)
    assert pte is not None
    val = pasid_entry_read(pte)
    assert val[0] >> 6 & 7 == 2 and val[0] & ~0xFFF == virt_to_phys(new.pgd)
    dsa.iommu_group.pasid_array[9] = new
    iommu_detach_device_pasid(new, dsa, 9)
    iommu_domain_free(new)


def test_teardown_flushes_pasid_cache_then_piotlb_then_device_tlb(vtd: Vtd) -> None:
    dsa = vtd.dsa
    dom = _default(dsa)
    iommu_attach_device_pasid(dom, dsa, 5)
    with capture("hw_vtd:qi_descriptor") as events:
        iommu_detach_device_pasid(dom, dsa, 5)
    assert _types(events) == [PC, WAIT, P_IOTLB, WAIT, P_DEVTLB, WAIT]


def test_second_stage_teardown_flushes_the_iotlb_by_domain(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"flts": False})
    dsa = v.dsa
    dom = _default(dsa)
    iommu_attach_device_pasid(dom, dsa, 5)
    with capture("hw_vtd:qi_descriptor") as events:
        iommu_detach_device_pasid(dom, dsa, 5)
    assert _types(events) == [PC, WAIT, IOTLB, WAIT, P_DEVTLB, WAIT]
    assert events[2].fields["qw"][0] >> 4 & 3 == 2  # type: ignore[index]


def test_rid_teardown_flushes_the_device_tlb_without_pasid(vtd: Vtd) -> None:
    group = vtd.dsa.iommu_group
    with capture("hw_vtd:qi_descriptor") as events:
        iommu_group_claim_dma_owner(group, "test")
    assert _types(events) == [PC, WAIT, P_IOTLB, WAIT, DEVTLB, WAIT]
    iommu_group_release_dma_owner(group)


def test_fault_ignore_teardown_leaves_fpd_until_cleared(vtd: Vtd) -> None:
    dsa, iommu = vtd.dsa, _iommu()
    intel_pasid_setup_pass_through(iommu, dsa, 77)
    intel_pasid_tear_down_entry(iommu, dsa, 77, True)
    pte = intel_pasid_get_entry(dsa, 77)
    assert pte is not None and read64(pte) == 2
    _, fault = vtd.dma_read(dsa, 0x1000, 8, pasid=77)
    assert fault is not None and vtd.unit.stats.faults_suppressed == 1
    intel_pasid_tear_down_entry(iommu, dsa, 77, False)
    assert read64(pte) == 0


def test_seed_v3_gives_a_device_one_dma_pasid(make_vtd: VtdFactory) -> None:
    """Patch 1/4: the same PASID again is a no-op; another one WARNs and is EBUSY."""
    v = make_vtd("iommu.pasid_api=seed-v3")
    dsa = v.dsa
    dom = _default(dsa)
    assert dom.ops is not None
    dom.ops.attach_dev_pasid(dom, dsa, 3)  # type: ignore[attr-defined]
    dom.ops.attach_dev_pasid(dom, dsa, 3)  # type: ignore[attr-defined]
    with pytest.raises(EBUSY):
        dom.ops.attach_dev_pasid(dom, dsa, 4)  # type: ignore[attr-defined]
    assert v.take_warnings() == ["DMAR: 0000:00:02.0 already has DMA PASID 3"]
    assert _info(dsa).pasid == 3
    dom.ops.detach_dev_pasid(dom, dsa, 3)  # type: ignore[attr-defined]
    assert _info(dsa).pasid == 0


def test_seed_v3_attach_needs_scalable_mode(make_vtd: VtdFactory) -> None:
    v = make_vtd("intel_iommu=sm_off iommu.pasid_api=seed-v3")
    dom = iommu_get_domain_for_dev(v.dsa)
    assert dom is not None and dom.ops is not None
    with pytest.raises(ENODEV):
        dom.ops.attach_dev_pasid(dom, v.dsa, 3)  # type: ignore[attr-defined]


def test_seed_v3_identity_default_domain_gets_a_pass_through_pasid(make_vtd: VtdFactory) -> None:
    v = make_vtd("iommu.passthrough=1 iommu.pasid_api=seed-v3")
    pasid = iommu_attach_dma_pasid(v.dsa)
    pte = intel_pasid_get_entry(v.dsa, pasid)
    assert pte is not None and read64(pte) >> 6 & 7 == 4
    assert v.dma_read(v.dsa, 0x300000, 8, pasid)[1] is None
    iommu_detach_dma_pasid(v.dsa)


def test_seed_v3_second_stage_dma_pasid(make_vtd: VtdFactory) -> None:
    v = make_vtd("iommu.pasid_api=seed-v3", config={"flts": False})
    pasid = iommu_attach_dma_pasid(v.dsa)
    pte = intel_pasid_get_entry(v.dsa, pasid)
    assert pte is not None and read64(pte) >> 6 & 7 == 2
    iommu_detach_dma_pasid(v.dsa)


def test_identity_domain_at_a_pasid_passes_through(vtd: Vtd) -> None:
    identity = dmar_state().ops.identity_domain
    dsa = vtd.dsa
    iommu_attach_device_pasid(identity, dsa, 12)
    assert vtd.dma_read(dsa, 0x300000, 8, pasid=12)[1] is None
    iommu_detach_device_pasid(identity, dsa, 12)
    assert vtd.dma_read(dsa, 0x300000, 8, pasid=12)[1] is not None


def test_upstream_pasid_attach_needs_pasid_support(make_vtd: VtdFactory) -> None:
    from drivers.intel_iommu.iommu import identity_domain_set_dev_pasid
    from kernel.errno import EOPNOTSUPP

    v = make_vtd("intel_iommu=sm_off")
    with pytest.raises(EOPNOTSUPP):
        identity_domain_set_dev_pasid(dmar_state().ops.identity_domain, v.dsa, 3, None)
