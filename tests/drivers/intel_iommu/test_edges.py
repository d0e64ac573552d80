"""Edge cases and bad input at the driver's own interfaces: register windows, waits that
never end, queue state left by firmware or a stuck queue, interrupt setup failures,
domain/PASID misuse, 5-level and non-coherent units, and the seed-v3 flush paths."""

from __future__ import annotations

import copy

import pytest
from attrs import frozen

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.cache import calculate_psi_aligned_address
from drivers.intel_iommu.dmar import (
    IOMMU_WAIT_OP,
    __dmar_enable_qi,
    dmar_disable_qi,
    dmar_state,
    map_iommu,
    qi_desc_piotlb,
    qi_submit_sync,
)
from drivers.intel_iommu.iommu import (
    intel_iommu_capable,
    intel_iommu_domain_free,
    intel_iommu_set_dev_pasid,
    paging_domain_compatible,
)
from drivers.intel_iommu.pasid import (
    PASID_FLAG_FL5LP,
    intel_pasid_alloc_table,
    intel_pasid_get_entry,
    intel_pasid_replace_first_level,
    intel_pasid_replace_second_level,
    intel_pasid_setup_first_level,
    intel_pasid_setup_pass_through,
    intel_pasid_setup_second_level,
    pasid_entry_read,
)
from drivers.intel_iommu.pgtable import __domain_mapping, iova_to_phys
from drivers.intel_iommu.structs import DmarDomain, IntelIommu
from hw.machine import Machine, MachineSpec
from iommulab.presets import PRESETS
from kernel.boot import boot
from kernel.delay import msleep
from kernel.device import Device
from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.errno import EBUSY, EINVAL, ENODEV, ENOMEM, ENOSPC, EPERM, ETIMEDOUT
from kernel.fault_inject import injector
from kernel.iommu.dma_iommu import iommu_attach_dma_pasid, iommu_detach_dma_pasid
from kernel.iommu.iommu import (
    iommu_attach_device,
    iommu_detach_device,
    iommu_domain_free,
    iommu_get_domain_for_dev,
    iommu_paging_domain_alloc,
)
from kernel.iommu.iommu_h import (
    IOMMU_CAP_DIRTY_TRACKING,
    IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
    IOMMU_READ,
    IOMMU_WRITE,
)
from kernel.iommu.iommu_map import iommu_map, iommu_unmap
from kernel.iommu.pasid import iommu_attach_device_pasid, iommu_detach_device_pasid
from kernel.mm import GFP_KERNEL, kfree, kmalloc, memory_write, read64
from kernel.trace import capture
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory, pdev, vtd_spec
from tests.kernel.iommu.helpers import device_read

BASE = 0xFED9_0000
RW = IOMMU_READ | IOMMU_WRITE


def _iommu() -> IntelIommu:
    return dmar_state().units[0]


def _mapped(v: Vtd, dev: object) -> tuple[int, int]:
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    memory_write(buf, b"edge" * 16)
    handle = dma_map_single(dev, buf, 4096, DMA_TO_DEVICE)  # type: ignore[arg-type]
    assert not dma_mapping_error(dev, handle)  # type: ignore[arg-type]
    return buf, handle


@frozen
class FakeDrhd:
    name: str = "bogus"
    register_base: int = 0xFEE0_0000
    register_size: int = 0x1000
    segment: int = 0
    include_pci_all: bool = True
    device_scope: tuple[object, ...] = ()

    def covers(self, addr: object) -> bool:
        return True


def test_a_unit_whose_registers_read_all_ones_is_refused(vtd: Vtd) -> None:
    iommu = IntelIommu(name="dmar9")
    with pytest.raises(ENODEV):
        map_iommu(iommu, FakeDrhd())
    assert "DMAR: IOMMU: dmar9: reg_base_addr fee00000 returns all ones" in vtd.kernel.dmesg()
    assert iommu.reg is None


def test_fault_records_beyond_the_first_page_get_a_bigger_mapping(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"nfr": 256})
    assert _iommu().reg_size == 0x2000
    assert v.dma_read(v.edu, 0x7000_0000, 8)[1] is not None
    assert "[fault reason 0x71]" in v.kernel.dmesg()


def test_a_register_that_never_answers_times_out(vtd: Vtd) -> None:
    iommu = _iommu()
    with pytest.raises(ETIMEDOUT):
        IOMMU_WAIT_OP(iommu, ir.DMAR_GSTS_REG, iommu.regs.readl, lambda v: False)
    assert "DMAR hardware is malfunctioning" in vtd.kernel.dmesg()


def test_a_wait_may_ask_the_unit_to_drain_page_requests(vtd: Vtd) -> None:
    with capture("hw_vtd:qi_descriptor") as events:
        assert qi_submit_sync(_iommu(), [], ir.QI_OPT_WAIT_DRAIN) == 0
    (wait,) = events
    assert wait.fields["qw"][0] & ir.QI_IWD_PRQ_DRAIN  # type: ignore[index]


def test_queued_invalidation_left_on_by_firmware_is_restarted() -> None:
    m = Machine(vtd_spec())
    m.mmio_write(BASE + ir.DMAR_IQA_REG, 8, 0x10_0000)
    m.mmio_write(BASE + ir.DMAR_GCMD_REG, 4, ir.DMA_GCMD_QIE)
    m.clock.advance(1000)
    k = boot(m, "", builtins=("drivers.intel_iommu",), entry_points=False)
    try:
        assert m.iommus["dmar0"].regs["IQA"] & ~0xFFF != 0x10_0000
        assert "DMAR: dmar0: Using Queued invalidation" in k.dmesg()
    finally:
        k.shutdown()


def test_a_queue_stuck_on_an_error_is_disabled_anyway(vtd: Vtd) -> None:
    iommu = _iommu()
    qi = iommu.qi
    assert qi is not None
    memory_write(qi.desc + (qi.free_head << 5), b"\x0f" + bytes(31))
    iommu.regs.writel((qi.free_head + 1) << 5, ir.DMAR_IQT_REG)
    msleep(1)
    regs = vtd.unit.regs
    assert regs["FSTS"] & ir.DMA_FSTS_IQE and regs["IQH"] != regs["IQT"]
    dmar_disable_qi(iommu)
    assert not regs["GSTS"] & ir.DMA_GSTS_QIES
    iommu.regs.writel(ir.DMA_FSTS_IQE, ir.DMAR_FSTS_REG)
    __dmar_enable_qi(iommu)
    assert qi_submit_sync(iommu, [qi_desc_piotlb(2, 0, 0, -1, 0)]) == 0


def test_a_full_batch_right_after_an_error_waits_for_free_slots(vtd: Vtd) -> None:
    iommu = _iommu()
    assert qi_submit_sync(iommu, [(0xF, 0, 0, 0)]) == -22
    assert qi_submit_sync(iommu, [qi_desc_piotlb(2, 0, 0, -1, 0)] * 254) == 0


@pytest.mark.parametrize(
    ("target", "line"),
    [("irq_alloc", "DMAR: No free IRQ vectors"), ("request_irq", "DMAR: Can't request irq")],
)
def test_without_a_fault_interrupt_the_unit_is_not_used(
    monkeypatch: pytest.MonkeyPatch, target: str, line: str
) -> None:
    from drivers.intel_iommu import dmar

    def refuse(*args: object) -> None:
        raise ENOSPC("no vector")

    monkeypatch.setattr(dmar, target, refuse)
    m = Machine(vtd_spec())
    k = boot(m, "", builtins=("drivers.intel_iommu",), entry_points=False)
    try:
        assert line in k.dmesg()
        assert "iommu: intel_iommu failed to bring up dmar0" in k.dmesg()
        assert not m.iommus["dmar0"].te
    finally:
        k.shutdown()
    assert [a.site for a in k.mm.live()] == ["init_task stack"]


def test_non_paging_domains_are_refused_where_tables_are_needed(vtd: Vtd) -> None:
    identity = dmar_state().ops.identity_domain
    with pytest.raises(EPERM):
        paging_domain_compatible(identity, vtd.dsa)
    with pytest.raises(EINVAL):
        intel_iommu_set_dev_pasid(identity, vtd.dsa, 3, None)
    assert vtd.take_warnings() == [
        "attaching a non-paging domain",
        "set_dev_pasid of a non-paging domain",
    ]


def test_set_dev_pasid_over_a_used_pasid_unwinds(vtd: Vtd) -> None:
    dsa = vtd.dsa
    dom = iommu_get_domain_for_dev(dsa)
    assert dom is not None
    iommu_attach_device_pasid(dom, dsa, 6)
    other = iommu_paging_domain_alloc(dsa)
    assert isinstance(other, DmarDomain)
    with pytest.raises(EBUSY):
        intel_iommu_set_dev_pasid(other, dsa, 6, None)
    assert other.dev_pasids == [] and other.iommu_array == {} and other.cache_tags == []
    iommu_detach_device_pasid(dom, dsa, 6)
    iommu_domain_free(other)


def test_freeing_an_attached_domain_warns_and_keeps_it(vtd: Vtd) -> None:
    dom = iommu_paging_domain_alloc(vtd.edu)
    iommu_attach_device(dom, vtd.edu)
    intel_iommu_domain_free(dom)
    assert vtd.take_warnings() == ["freeing a domain with devices attached"]
    iommu_detach_device(dom, vtd.edu)
    iommu_domain_free(dom)


def test_capabilities_reported_to_the_core(vtd: Vtd) -> None:
    assert not intel_iommu_capable(vtd.edu, IOMMU_CAP_ENFORCE_CACHE_COHERENCY)
    assert not intel_iommu_capable(vtd.edu, IOMMU_CAP_DIRTY_TRACKING)


def test_devices_the_driver_did_not_probe_are_refused(make_vtd: VtdFactory) -> None:
    v = make_vtd(scope=["0000:00:02.0"])
    ops = dmar_state().ops
    with pytest.raises(ENODEV):
        ops.probe_device(Device("platform0"))
    with pytest.raises(ENODEV):
        ops.domain_alloc_paging(v.edu)


def test_lookups_outside_the_table_find_nothing(vtd: Vtd) -> None:
    dom = iommu_paging_domain_alloc(vtd.edu)
    assert isinstance(dom, DmarDomain)
    assert iova_to_phys(dom, 1 << 50) == 0
    with pytest.raises(EINVAL):
        __domain_mapping(dom, 1 << 40, 0, 1, ir.DMA_PTE_READ, GFP_KERNEL)
    iommu_domain_free(dom)


def test_a_failed_first_leaf_maps_nothing(vtd: Vtd) -> None:
    dom = iommu_paging_domain_alloc(vtd.edu)
    iommu_map(dom, 0, 0x100000, 0x1000, RW, GFP_KERNEL)
    inj = injector()
    inj.arm(1, frozenset({"iommu_pgtable"}))
    with pytest.raises(ENOMEM):
        iommu_map(dom, 0x5000, 0x200000, 0x2000, RW, GFP_KERNEL)
    inj.disarm()
    iommu_unmap(dom, 0, 0x1000)
    iommu_domain_free(dom)


def test_the_last_page_below_the_width_can_be_mapped(vtd: Vtd) -> None:
    dom = iommu_paging_domain_alloc(vtd.edu)
    assert isinstance(dom, DmarDomain)
    top = (1 << 48) - 0x1000
    iommu_map(dom, top, 0x100000, 0x1000, RW, GFP_KERNEL)
    assert dom.max_addr == 1 << 48
    assert iommu_unmap(dom, top, 0x1000) == 0x1000
    assert dom.max_addr == top
    iommu_domain_free(dom)


def test_pasid_beyond_the_table_cannot_be_set_up(vtd: Vtd) -> None:
    with pytest.raises(ENODEV):
        intel_pasid_setup_pass_through(_iommu(), vtd.dsa, 1 << 20)
    with pytest.raises(ENODEV):
        intel_pasid_replace_first_level(_iommu(), vtd.dsa, 0, 1 << 20, 2, 2, 0)
    assert len(vtd.take_warnings()) == 2


def test_pasid_table_is_allocated_once(vtd: Vtd) -> None:
    with pytest.raises(EINVAL):
        intel_pasid_alloc_table(vtd.dsa, 1 << 20)
    assert vtd.take_warnings() == [""]


@pytest.mark.parametrize(
    ("config", "call", "line"),
    [
        ({"flts": False}, "setup_first", "DMAR: No first level translation support on dmar0"),
        ({"flts": False}, "replace_first", "DMAR: No first level translation support on dmar0"),
        ({}, "setup_5level", "DMAR: No 5-level paging support for first-level on dmar0"),
        (
            {"slts": False, "sagaw": 0},
            "setup_second",
            "DMAR: No second level translation support on dmar0",
        ),
        (
            {"slts": False, "sagaw": 0},
            "replace_second",
            "DMAR: No second level translation support on dmar0",
        ),
    ],
)
def test_entries_of_a_stage_the_unit_lacks_are_refused(
    make_vtd: VtdFactory, config: dict[str, object], call: str, line: str
) -> None:
    v = make_vtd(config=config)
    iommu, dsa = _iommu(), v.dsa
    dom = iommu_get_domain_for_dev(dsa)
    assert isinstance(dom, DmarDomain)
    calls = {
        "setup_first": lambda: intel_pasid_setup_first_level(iommu, dsa, 0, 5, 2, 0),
        "replace_first": lambda: intel_pasid_replace_first_level(iommu, dsa, 0, 5, 2, 2, 0),
        "setup_5level": lambda: intel_pasid_setup_first_level(
            iommu, dsa, 0, 5, 2, PASID_FLAG_FL5LP
        ),
        "setup_second": lambda: intel_pasid_setup_second_level(iommu, dom, dsa, 5),
        "replace_second": lambda: intel_pasid_replace_second_level(iommu, dom, dsa, 2, 5),
    }
    with pytest.raises(EINVAL):
        calls[call]()
    assert line in v.kernel.dmesg()


def test_five_level_first_stage_tables(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"fl5lp": True, "mgaw": 57, "sagaw": 0b1110})
    dom = iommu_get_domain_for_dev(v.edu)
    assert isinstance(dom, DmarDomain) and dom.agaw == 3
    pte = intel_pasid_get_entry(v.edu, 0)
    assert pte is not None and pasid_entry_read(pte)[2] & 0xC == 4
    buf, handle = _mapped(v, v.edu)
    assert device_read(v.edu, handle, 64) == 0
    dma_unmap_single(v.edu, handle, 4096, DMA_TO_DEVICE)
    kfree(buf)


def test_non_coherent_walks_leave_page_walk_snoop_off(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"coherent": False})
    pte = intel_pasid_get_entry(v.edu, 0)
    assert pte is not None and not pasid_entry_read(pte)[1] & (1 << 23)


@pytest.mark.parametrize(
    "config", [{"coherent": False}, {"mgaw": 39, "sagaw": 0b0010, "flts": False}]
)
def test_domains_do_not_move_to_an_incompatible_unit(config: dict[str, object]) -> None:
    d = copy.deepcopy(PRESETS["default"])
    d["ram"] = "64M"
    d["iommus"] = [
        {"kind": "vtd", "name": "dmar0", "scope": ["0000:00:02.0"], "config": {"flts": False}},
        {"kind": "vtd", "name": "dmar1", "scope": "all", "config": config},
    ]
    k = boot(Machine(MachineSpec.from_dict(d)), "", builtins=("drivers.intel_iommu",))
    try:
        dom = iommu_paging_domain_alloc(pdev("0000:00:02.0"))
        with pytest.raises(EINVAL):
            iommu_attach_device(dom, pdev("0000:00:03.0"))
        iommu_domain_free(dom)
        assert k.warnings() == []
    finally:
        k.shutdown()


def test_legacy_caching_mode_flushes_new_context_entries(make_vtd: VtdFactory) -> None:
    v = make_vtd("intel_iommu=sm_off", config={"cm": True})
    with capture("hw_vtd:qi_descriptor") as events:
        dom = iommu_paging_domain_alloc(v.edu)
        iommu_attach_device(dom, v.edu)
    types = [e.fields["type"] for e in events]
    assert types.count(ir.QI_CC_TYPE) == 2 and ir.QI_IOTLB_TYPE in types
    iommu_detach_device(dom, v.edu)
    iommu_domain_free(dom)


def test_devices_above_devfn_0x7f_use_the_upper_context_table(make_vtd: VtdFactory) -> None:
    d = copy.deepcopy(PRESETS["default"])
    d["ram"] = "64M"
    d["devices"][1]["bdf"] = "0000:00:10.0"
    d["iommus"][0]["config"] = {"strict_stale": True}
    m = Machine(MachineSpec.from_dict(d))
    k = boot(m, "", builtins=("drivers.intel_iommu",), entry_points=False)
    try:
        edu = pdev("0000:00:10.0")
        root = m.iommus["dmar0"].root
        assert m.memory.read_u64(root + 8) & 1
        buf = kmalloc(4096, GFP_KERNEL)
        assert buf is not None
        handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
        assert not dma_mapping_error(edu, handle)
        assert device_read(edu, handle, 16) == 0
        dma_unmap_single(edu, handle, 4096, DMA_TO_DEVICE)
        kfree(buf)
    finally:
        k.shutdown()


def test_second_stage_without_psi_flushes_the_domain(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"flts": False, "psi": False})
    buf, handle = _mapped(v, v.edu)
    with capture("hw_vtd:qi_descriptor") as events:
        dma_unmap_single(v.edu, handle, 4096, DMA_TO_DEVICE)
    assert events[0].fields["type"] == ir.QI_IOTLB_TYPE
    assert events[0].fields["qw"][0] >> 4 & 3 == 2  # type: ignore[index]
    kfree(buf)


def test_intel_iommu_trace_events(vtd: Vtd) -> None:
    dsa = vtd.dsa
    dom = iommu_get_domain_for_dev(dsa)
    assert dom is not None
    with capture("intel_iommu:*") as events:
        iommu_attach_device_pasid(dom, dsa, 4)
        buf, handle = _mapped(vtd, dsa)
        dma_unmap_single(dsa, handle, 4096, DMA_TO_DEVICE)
        assert dom.ops is not None
        dom.ops.flush_iotlb_all(dom)  # type: ignore[attr-defined]
        iommu_detach_device_pasid(dom, dsa, 4)
    names = {e.name for e in events}
    assert names == {
        "intel_iommu:qi_submit",
        "intel_iommu:cache_tag_assign",
        "intel_iommu:cache_tag_unassign",
        "intel_iommu:cache_tag_flush_range",
        "intel_iommu:cache_tag_flush_all",
    }
    kfree(buf)


def test_psi_ranges_are_aligned_to_a_power_of_two() -> None:
    assert calculate_psi_aligned_address(0x1000, 0x1FFF) == (0x1000, 1, 0)
    assert calculate_psi_aligned_address(0x1000, 0x2FFF) == (0, 4, 2)
    assert calculate_psi_aligned_address(0x3000, 0x4FFF) == (0, 8, 3)
    assert calculate_psi_aligned_address(0x7FFF_F000, 0x8000_0FFF) == (0, 1 << 20, 20)


def test_seed_v3_second_stage_unmap_flushes_by_page(make_vtd: VtdFactory) -> None:
    v = make_vtd("iommu.pasid_api=seed-v3", config={"flts": False})
    pasid = iommu_attach_dma_pasid(v.dsa)
    buf, handle = _mapped(v, v.dsa)
    assert v.dma_read(v.dsa, handle, 16, pasid)[1] is None
    with capture("hw_vtd:qi_descriptor") as events:
        dma_unmap_single(v.dsa, handle, 4096, DMA_TO_DEVICE)
    assert events[0].fields["type"] == ir.QI_IOTLB_TYPE
    assert v.dma_read(v.dsa, handle, 16, pasid)[1] is not None
    iommu_detach_dma_pasid(v.dsa)
    kfree(buf)


def test_seed_v3_flush_queue_flush_misses_the_dma_pasid(make_vtd: VtdFactory) -> None:
    """v3 patched ``iommu_flush_iotlb_psi`` only: in lazy mode the flush queue's
    ``flush_iotlb_all`` (which v3 did not touch) flushes RID2PASID alone, so even the
    DMA API's own PASID keeps a stale entry after the deferred flush."""
    v = make_vtd(
        "iommu.pasid_api=seed-v3 iommu.strict=0",
        config={"strict_stale": False},
        allow_stale=True,
    )
    dsa = v.dsa
    pasid = iommu_attach_dma_pasid(dsa)
    buf, handle = _mapped(v, dsa)
    assert v.dma_read(dsa, handle, 16, pasid)[1] is None
    assert v.dma_read(dsa, handle, 16)[1] is None
    dma_unmap_single(dsa, handle, 4096, DMA_TO_DEVICE)
    msleep(11)
    _, rid_fault = v.dma_read(dsa, handle, 16)
    assert rid_fault is not None
    assert v.dma_read(dsa, handle, 16, pasid)[1] is None
    assert v.unit.stats.stale_uses == 1
    iommu_detach_dma_pasid(dsa)
    kfree(buf)


def test_identity_entries_have_a_pass_through_did(vtd: Vtd) -> None:
    identity = dmar_state().ops.identity_domain
    iommu_attach_device_pasid(identity, vtd.dsa, 21)
    pte = intel_pasid_get_entry(vtd.dsa, 21)
    assert pte is not None and read64(pte + 8) & 0xFFFF == ir.FLPT_DEFAULT_DID
    iommu_detach_device_pasid(identity, vtd.dsa, 21)
