"""Units that lack a capability the driver would use: it falls back or refuses the way
Linux does, and says so in dmesg where Linux does."""

from __future__ import annotations

import pytest

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import dmar_state
from drivers.intel_iommu.iommu import intel_iommu_set_dev_pasid
from hw.vtd import VtdUnit
from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.errno import EINVAL, ENODEV, EOPNOTSUPP
from kernel.iommu.dma_iommu import iommu_attach_dma_pasid
from kernel.iommu.iommu import (
    iommu_attach_device,
    iommu_get_domain_for_dev,
    iommu_paging_domain_alloc,
    iommu_state,
)
from kernel.iommu.iommu_h import IOMMU_DOMAIN_DMA, IOMMU_PASID_INVALID
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from kernel.mm import GFP_KERNEL, kfree, kmalloc, memory_write
from kernel.trace import capture
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory, pdev
from tests.kernel.iommu.helpers import device_read

LEGACY = {"smts": False, "pasid": False}


def _map(v: Vtd, dev: object = None) -> tuple[int, int]:
    d = v.edu if dev is None else dev
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    memory_write(buf, b"\x5a" * 64)
    handle = dma_map_single(d, buf, 4096, DMA_TO_DEVICE)  # type: ignore[arg-type]
    assert not dma_mapping_error(d, handle)  # type: ignore[arg-type]
    return buf, handle


def test_no_smts_falls_back_to_legacy_mode_without_pasids(make_vtd: VtdFactory) -> None:
    v = make_vtd(config=LEGACY)
    assert "DMAR: dmar0: legacy mode, second-stage DMA domains" in v.kernel.dmesg()
    assert v.unit.ttm == 0
    dsa = v.dsa
    assert dsa.iommu.max_pasids == 0 and not dsa.pasid_enabled
    assert iommu_alloc_global_pasid(dsa) == IOMMU_PASID_INVALID
    dom = iommu_get_domain_for_dev(dsa)
    assert dom is not None
    with pytest.raises(EOPNOTSUPP):
        intel_iommu_set_dev_pasid(dom, dsa, 1, None)
    buf, handle = _map(v)
    assert device_read(v.edu, handle, 64) == 0
    dma_unmap_single(v.edu, handle, 4096, DMA_TO_DEVICE)
    assert device_read(v.edu, handle, 64) == 1
    kfree(buf)


def test_seed_v3_dma_pasid_needs_pasid_support(make_vtd: VtdFactory) -> None:
    v = make_vtd("iommu.pasid_api=seed-v3", config=LEGACY)
    with pytest.raises(ENODEV):
        iommu_attach_dma_pasid(v.dsa)


def test_no_flts_gives_second_stage_dma_domains(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"flts": False})
    assert "DMAR: dmar0: scalable mode, second-stage DMA domains" in v.kernel.dmesg()
    ctx = v.unit.walker.context(v.unit.root, True, v.edu.rid)
    assert v.unit.walker.pasid_entry(ctx, 0).pgtt == 2
    buf, handle = _map(v)
    assert device_read(v.edu, handle, 64) == 0
    dma_unmap_single(v.edu, handle, 4096, DMA_TO_DEVICE)
    assert device_read(v.edu, handle, 64) == 1
    assert "[fault reason 0x86] SM: No read permission for Read/AtomicOp request" in (
        v.kernel.dmesg()
    )
    kfree(buf)


def test_first_stage_only_unit_uses_first_stage(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"slts": False, "sagaw": 0})
    assert "DMAR: dmar0: scalable mode, first-stage DMA domains" in v.kernel.dmesg()
    buf, handle = _map(v)
    assert device_read(v.edu, handle, 64) == 0
    dma_unmap_single(v.edu, handle, 4096, DMA_TO_DEVICE)
    kfree(buf)


def test_small_pss_limits_the_pasids_the_device_may_use(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"pss": 3})
    dsa = v.dsa
    iommu = dmar_state().units[0]
    assert iommu.max_pasids == 16 and dsa.iommu.max_pasids == 16
    assert dmar_state().pasid_max_id == 16
    dom = iommu_get_domain_for_dev(dsa)
    assert dom is not None
    with pytest.raises(EINVAL):
        iommu_attach_device_pasid(dom, dsa, 20)
    assert iommu_alloc_global_pasid(dsa) < 16


def test_caching_mode_with_second_stage_forces_strict_and_flushes_new_entries(
    make_vtd: VtdFactory,
) -> None:
    v = make_vtd("iommu.strict=0", config={"cm": True, "flts": False})
    assert "DMAR: IOMMU batching disallowed due to virtualization" in v.kernel.dmesg()
    assert iommu_state().strict
    dom = iommu_get_domain_for_dev(v.edu)
    assert dom is not None and dom.type == IOMMU_DOMAIN_DMA
    dsa = v.dsa
    pasid = iommu_alloc_global_pasid(dsa)
    ddom = iommu_get_domain_for_dev(dsa)
    assert ddom is not None
    with capture("hw_vtd:qi_descriptor") as events:
        iommu_attach_device_pasid(ddom, dsa, pasid)
        buf, handle = _map(v, dsa)
    types = [e.fields["type"] for e in events]
    # new PASID entry: PASID cache + P_IOTLB; new mapping: page-selective IOTLB
    assert types[:4] == [7, 5, 6, 5] and 2 in types[4:]
    dma_unmap_single(dsa, handle, 4096, DMA_TO_DEVICE)
    kfree(buf)
    iommu_detach_device_pasid(ddom, dsa, pasid)
    iommu_free_global_pasid(pasid)


def test_caching_mode_with_first_stage_keeps_lazy_invalidation(make_vtd: VtdFactory) -> None:
    v = make_vtd("iommu.strict=0", config={"cm": True})
    assert "IOMMU batching disallowed" not in v.kernel.dmesg()
    assert not iommu_state().strict


def test_no_qi_uses_register_based_invalidation(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={**LEGACY, "qi": False})
    assert "DMAR: dmar0: Using Register based invalidation" in v.kernel.dmesg()
    buf, handle = _map(v)
    assert device_read(v.edu, handle, 64) == 0
    dma_unmap_single(v.edu, handle, 4096, DMA_TO_DEVICE)
    assert device_read(v.edu, handle, 64) == 1
    assert v.unit.stats.qi_descriptors == 0
    kfree(buf)


def test_rwbf_units_get_write_buffer_flushes(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"rwbf": True})
    before = v.unit.stats.gcmd_writes
    buf, handle = _map(v)
    assert v.unit.stats.gcmd_writes > before
    dma_unmap_single(v.edu, handle, 4096, DMA_TO_DEVICE)
    kfree(buf)


def test_no_pass_through_keeps_dma_domains_under_iommu_passthrough(make_vtd: VtdFactory) -> None:
    v = make_vtd("iommu.passthrough=1", config={"pt": False})
    dom = iommu_get_domain_for_dev(v.edu)
    assert dom is not None and dom.type == IOMMU_DOMAIN_DMA


def test_no_usable_address_width_refuses_the_unit(make_vtd: VtdFactory) -> None:
    v = make_vtd("intel_iommu=sm_off", config={"slts": False, "sagaw": 0})
    log = v.kernel.dmesg()
    assert "DMAR: Cannot get a valid agaw for iommu (seq_id = 0)" in log
    assert "iommu: intel_iommu failed to bring up dmar0" in log
    assert not v.unit.te and iommu_get_domain_for_dev(v.edu) is None


def test_device_outside_the_units_scope_is_not_probed(make_vtd: VtdFactory) -> None:
    v = make_vtd(scope=["0000:00:02.0"])
    edu = v.edu
    assert edu.iommu_group is None and not edu.dma_iommu
    ops = dmar_state().ops
    with pytest.raises(ENODEV):
        ops.probe_device(edu)
    dom = iommu_paging_domain_alloc(v.dsa)
    with pytest.raises(ENODEV):
        iommu_attach_device(dom, edu)
    from kernel.iommu.iommu import iommu_domain_free

    iommu_domain_free(dom)


def test_without_first_stage_1g_pages_sva_is_disabled(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"fl1gp": False})
    assert "DMAR: dmar0 SVM disabled, incompatible 1GB page capability" in v.kernel.dmesg()
    with pytest.raises(EOPNOTSUPP):
        dmar_state().ops.domain_alloc_sva(v.dsa, None)


def test_second_unit_gets_its_own_name_and_domain_ids(make_vtd: VtdFactory) -> None:
    from hw.machine import Machine, MachineSpec
    from iommulab.presets import PRESETS
    from kernel.boot import boot

    d = dict(PRESETS["default"])
    d["iommus"] = [
        {
            "kind": "vtd",
            "name": "dmar0",
            "scope": ["0000:00:02.0"],
            "config": {"strict_stale": True},
        },
        {"kind": "vtd", "name": "dmar1", "scope": "all", "config": {"flts": False}},
    ]
    m = Machine(MachineSpec.from_dict(d))
    k = boot(m, "", builtins=("drivers.intel_iommu",), entry_points=False)
    try:
        units = dmar_state().units
        assert [u.name for u in units] == ["dmar0", "dmar1"]
        dsa, edu = pdev("0000:00:02.0"), pdev("0000:00:03.0")
        assert dsa.iommu.iommu_dev is units[0] and edu.iommu.iommu_dev is units[1]
        first = iommu_paging_domain_alloc(dsa)
        with pytest.raises(EINVAL):
            iommu_attach_device(first, edu)
        from kernel.iommu.iommu import iommu_domain_free

        iommu_domain_free(first)
        assert [w.message for w in k.warnings()] == []
        unit1 = m.iommus["dmar1"]
        assert isinstance(unit1, VtdUnit) and unit1.te
        buf = kmalloc(4096, GFP_KERNEL)
        assert buf is not None
        handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
        assert not dma_mapping_error(edu, handle)
        assert device_read(edu, handle, 16) == 0
        dma_unmap_single(edu, handle, 4096, DMA_TO_DEVICE)
        kfree(buf)
    finally:
        k.shutdown()


def test_width_register_decoders() -> None:
    cap = VtdUnit("x", {}).cfg.cap()
    assert ir.cap_ndoms(cap) == 65536 and ir.cap_num_fault_regs(cap) == 8
    assert ir.agaw_to_width(2) == 48 and ir.width_to_agaw(57) == 3
