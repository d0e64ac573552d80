"""Supervisor SVA of the ``kernel-sva`` generation (5.15 ``intel_svm_bind`` with
``SVM_FLAG_SUPERVISOR_MODE``): the PASID entry points first-stage translation at
``init_mm``'s page tables with SRE and WPE; the VT-d model lets supervisor requests
through it and refuses user ones; kernel page-table changes never reach the IOTLB;
unbind tears the entry down; bad binds get 5.15's errno; fail_nth unwinds."""

from __future__ import annotations

import pytest

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.pasid import intel_pasid_get_entry, pasid_entry_read
from hw.bus import PciAddr
from hw.vtd.faults import FR
from kernel.errno import EINVAL, EOPNOTSUPP, KernelError
from kernel.fault_inject import count_points, injector
from kernel.idr import ida_is_empty
from kernel.init_mm import init_mm, set_memory_ro, set_memory_rw
from kernel.iommu.iommu import iommu_state
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.iommu.kernel_sva import (
    SVM_FLAG_SUPERVISOR_MODE,
    IommuSva515,
    iommu_sva_bind_device,
    iommu_sva_get_pasid,
    iommu_sva_unbind_device,
)
from kernel.mm import (
    GFP_KERNEL,
    PAGE_SIZE,
    free_page,
    get_zeroed_page,
    memory_write,
    vfree,
    vmalloc,
)
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory, boot_vtd, pdev

KSVA = "iommu.pasid_api=kernel-sva"


def bind(vtd: Vtd) -> tuple[IommuSva515, int]:
    handle = iommu_sva_bind_device(vtd.dsa, None, SVM_FLAG_SUPERVISOR_MODE)
    return handle, iommu_sva_get_pasid(handle)


def read(vtd: Vtd, pasid: int, addr: int, size: int, priv: bool = True) -> tuple[bytes, int]:
    """A DSA read tagged (pasid, priv): the bytes and the fault reason (0: none)."""
    fn = vtd.machine.functions[PciAddr.parse(str(vtd.dsa.addr))]
    data, fault = fn.dma_read(pasid, priv, addr, size)
    return bytes(data), fault.reason if fault is not None else 0


def write(vtd: Vtd, pasid: int, addr: int, data: bytes) -> int:
    fn = vtd.machine.functions[PciAddr.parse(str(vtd.dsa.addr))]
    _, fault = fn.dma_write(pasid, True, addr, data)
    return fault.reason if fault is not None else 0


def test_supervisor_entry_points_at_init_mm_with_sre_and_wpe(make_vtd: VtdFactory) -> None:
    vtd = make_vtd(KSVA)
    handle, pasid = bind(vtd)
    pte = intel_pasid_get_entry(vtd.dsa, pasid)
    assert pte is not None
    val = pasid_entry_read(pte)
    assert val[2] & ~0xFFF == init_mm().pgd_phys
    assert val[2] & 1 and val[2] & 0x10  # SRE, WPE
    assert val[1] & 0xFFFF == ir.FLPT_DEFAULT_DID and val[0] >> 6 & 7 == 1  # first-stage
    assert init_mm().pasid == pasid and pasid >= 1
    iommu_sva_unbind_device(handle)


def test_supervisor_requests_read_kernel_memory_user_requests_fault(
    make_vtd: VtdFactory,
) -> None:
    vtd = make_vtd(KSVA)
    handle, pasid = bind(vtd)
    page = get_zeroed_page(GFP_KERNEL)
    buf = vmalloc(PAGE_SIZE)
    assert page is not None and buf is not None
    memory_write(page, b"direct map")
    memory_write(buf, b"vmalloc space")
    assert read(vtd, pasid, page, 10) == (b"direct map", 0)
    assert read(vtd, pasid, buf, 13) == (b"vmalloc space", 0)
    # Kernel pages have no U/S: a user-privilege request faults.
    assert read(vtd, pasid, buf, 13, priv=False)[1] == FR.SM_US
    iommu_sva_unbind_device(handle)
    # Unbind tore the entry down and flushed: nothing reaches kernel memory now.
    assert read(vtd, pasid, page, 10)[1] != 0
    vfree(buf)
    free_page(page)


def test_supervisor_request_without_sre_is_refused_by_the_model(make_vtd: VtdFactory) -> None:
    """The upstream generation's PASID entries are user-privilege (SRE=0): a
    supervisor request through one faults with reason 0x5D."""
    vtd = make_vtd("iommu.pasid_api=upstream")
    from kernel.iommu.iommu import iommu_get_domain_for_dev
    from kernel.iommu.pasid import (
        iommu_alloc_global_pasid,
        iommu_attach_device_pasid,
        iommu_detach_device_pasid,
        iommu_free_global_pasid,
    )

    dom = iommu_get_domain_for_dev(vtd.dsa)
    assert dom is not None
    pasid = iommu_alloc_global_pasid(vtd.dsa)
    iommu_attach_device_pasid(dom, vtd.dsa, pasid)
    assert read(vtd, pasid, 0x1000, 8)[1] == FR.SM_PASID_SRE
    iommu_detach_device_pasid(dom, vtd.dsa, pasid)
    iommu_free_global_pasid(pasid)


def test_set_memory_ro_reaches_the_iommu_only_when_nothing_was_cached(
    make_vtd: VtdFactory,
) -> None:
    """WPE makes a supervisor write honour R/W: a page made read-only before the
    device touched it refuses the write. A page the device wrote before
    ``set_memory_ro`` stays writable through the cached entry (a stale use)."""
    vtd = make_vtd(KSVA, config={"strict_stale": False}, allow_stale=True)
    handle, pasid = bind(vtd)
    fresh, cached = vmalloc(PAGE_SIZE), vmalloc(PAGE_SIZE)
    assert fresh is not None and cached is not None
    assert write(vtd, pasid, cached, b"before") == 0
    flushes = init_mm().tlb_flushes
    set_memory_ro(fresh, 1)
    set_memory_ro(cached, 1)
    assert init_mm().tlb_flushes == flushes + 2
    assert write(vtd, pasid, fresh, b"after") == FR.SM_WRITE
    stale = vtd.unit.stats.stale_uses
    assert write(vtd, pasid, cached, b"after") == 0
    assert vtd.unit.stats.stale_uses == stale + 1
    set_memory_rw(fresh, 1)
    set_memory_rw(cached, 1)
    iommu_sva_unbind_device(handle)
    vfree(fresh)
    vfree(cached)


def test_vfree_sends_no_invalidation_to_the_iommu(make_vtd: VtdFactory) -> None:
    vtd = make_vtd(KSVA)
    handle, pasid = bind(vtd)
    buf = vmalloc(PAGE_SIZE)
    assert buf is not None
    read(vtd, pasid, buf, 8)
    qi = vtd.unit.stats.qi_descriptors
    flushes = init_mm().tlb_flushes
    vfree(buf)
    assert init_mm().tlb_flushes == flushes + 1
    assert vtd.unit.stats.qi_descriptors == qi
    iommu_sva_unbind_device(handle)


def test_second_bind_shares_the_pasid_and_the_last_unbind_frees_it(make_vtd: VtdFactory) -> None:
    vtd = make_vtd(KSVA)
    h1, p1 = bind(vtd)
    h2, p2 = bind(vtd)
    assert h1 is h2 and p1 == p2 and init_mm().pasid_refs == 2
    iommu_sva_unbind_device(h1)
    assert read(vtd, p1, 0x10_0000 + 0xFFFF_8880_0000_0000, 8)[1] == 0
    iommu_sva_unbind_device(h2)
    assert init_mm().pasid == IOMMU_PASID_INVALID
    assert ida_is_empty(iommu_state().global_pasid_ida)


def test_bad_binds_get_the_5_15_errno(make_vtd: VtdFactory) -> None:
    vtd = make_vtd(KSVA)
    with pytest.raises(EINVAL):  # no supervisor flag: a user bind is not this generation's
        iommu_sva_bind_device(vtd.dsa, None, 0)
    with pytest.raises(EINVAL):  # supervisor mode with a user mm
        iommu_sva_bind_device(vtd.dsa, object(), SVM_FLAG_SUPERVISOR_MODE)
    assert "Supervisor PASID with user provided mm" in vtd.kernel.dmesg()
    assert ida_is_empty(iommu_state().global_pasid_ida)


def test_unit_without_supervisor_requests_refuses_the_bind(make_vtd: VtdFactory) -> None:
    vtd = make_vtd(KSVA, config={"srs": False})
    with pytest.raises(EOPNOTSUPP):
        bind(vtd)
    assert "dmar0: Supervisor PASID not supported" in vtd.kernel.dmesg()
    assert init_mm().pasid == IOMMU_PASID_INVALID


def test_without_kernel_sva_the_kernel_tables_are_not_built(make_vtd: VtdFactory) -> None:
    vtd = make_vtd()
    assert init_mm().pgd is None and vtd.kernel.mm.kernel_pgtables is None
    with pytest.raises(EOPNOTSUPP):
        bind(vtd)


# -- fail_nth over bind, a supervisor DMA, vmalloc/vfree, unbind ---------------------------


def _scenario() -> None:
    dsa = pdev("0000:00:02.0")
    handle = iommu_sva_bind_device(dsa, None, SVM_FLAG_SUPERVISOR_MODE)
    try:
        buf = vmalloc(3 * PAGE_SIZE)
        if buf is None:
            raise KernelError("vmalloc failed")
        vfree(buf)
    finally:
        iommu_sva_unbind_device(handle)


def _count() -> int:
    k, _ = boot_vtd(KSVA)
    try:
        pdev("0000:00:02.0")
        return len(count_points(_scenario))
    finally:
        k.shutdown()


POINTS = _count()


@pytest.mark.parametrize("nth", range(1, POINTS + 1))
def test_fail_nth_unwinds_the_supervisor_bind(nth: int) -> None:
    k, _ = boot_vtd(KSVA)
    pdev("0000:00:02.0")
    baseline = {(a.kind, a.addr) for a in k.mm.live()}
    injector().arm(nth)
    try:
        try:
            _scenario()
        except KernelError:
            pass
        finally:
            site = injector().injected_at
            injector().disarm()
        assert site is not None
        assert init_mm().pasid == IOMMU_PASID_INVALID and init_mm().pasid_refs == 0
        assert ida_is_empty(iommu_state().global_pasid_ida)
        assert not k.warnings(), [w.message for w in k.warnings()]
    finally:
        k.shutdown()
    leaked = [a for a in k.mm.live() if (a.kind, a.addr) not in baseline]
    assert leaked == [], f"failing {site} leaked {leaked}"
