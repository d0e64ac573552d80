"""Shared Virtual Addressing: the process ``mm`` page tables, binding devices to an
mm at its global PASID, sharing the SVA domain, and the failure paths."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.errno import EINVAL, ENODEV, ENOMEM, ENOSPC, EOPNOTSUPP, EOVERFLOW
from kernel.fault_inject import injector
from kernel.fork import mm_alloc, mmput
from kernel.iommu.iommu import iommu_state
from kernel.iommu.iommu_h import IOMMU_READ, has_optional_op
from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_map, iommu_unmap
from kernel.iommu.iommu_sva import (
    iommu_sva_bind_device,
    iommu_sva_get_pasid,
    iommu_sva_unbind_device,
)
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_free_global_pasid,
    iommu_get_domain_for_dev_pasid,
)
from kernel.memory import populate_vma_page_range
from kernel.mm import GFP_KERNEL
from kernel.mm_types import MmStruct
from kernel.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, do_munmap, vm_mmap, vma_lookup
from kernel.mmu_notifier import MmuNotifier, mmu_notifier_register, mmu_notifier_unregister
from tests.kernel.conftest import EDU_BDF, PASID_BDF, KernelFactory, pdev_at, take_warnings
from tests.kernel.iommu.mock_hw import hw_entry, mock_unit

SZ_4K = 1 << 12
SECOND = "0000:00:05.0"


def _devices(width2: int = 8) -> list[dict[str, Any]]:
    return [
        {"kind": "edu", "bdf": EDU_BDF},
        {"kind": "pasid_edu", "bdf": PASID_BDF, "config": {"pasid_width": 8}},
        {"kind": "pasid_edu", "bdf": SECOND, "config": {"pasid_width": width2}},
    ]


def _mm() -> MmStruct:
    mm = mm_alloc()
    assert mm is not None
    return mm


def test_two_devices_bound_to_one_mm_share_its_pasid_and_sva_domain(
    make_kernel: KernelFactory,
) -> None:
    make_kernel(devices=_devices())
    a, b = pdev_at(PASID_BDF), pdev_at(SECOND)
    mm = _mm()
    ha = iommu_sva_bind_device(a, mm)
    hb = iommu_sva_bind_device(b, mm)
    pasid = iommu_sva_get_pasid(ha)
    assert iommu_sva_get_pasid(hb) == pasid
    assert hb.domain is ha.domain and ha.domain.users == 2 and mm.sva_domains == [ha.domain]
    hw = mock_unit()
    assert hw.entry(a.rid, pasid) == hw.entry(b.rid, pasid) != 0
    iommu_sva_unbind_device(ha)
    assert hw.entry(a.rid, pasid) == 0 and hw.entry(b.rid, pasid) != 0
    assert mm.sva_domains == [hb.domain]
    iommu_sva_unbind_device(hb)
    assert not mm.sva_domains and not mm.sva_handles
    mmput(mm)
    assert not iommu_state().global_pasid_ida.ids


def test_bind_refused_for_a_device_without_iommu_or_pasids(make_kernel: KernelFactory) -> None:
    make_kernel()
    mm = _mm()
    with pytest.raises(ENOSPC):
        iommu_sva_bind_device(pdev_at(EDU_BDF), mm)  # no PASID capability
    mmput(mm)


def test_bind_of_an_untranslated_device_is_enodev(make_kernel: KernelFactory) -> None:
    make_kernel(iommu=False)
    mm = _mm()
    with pytest.raises(ENODEV):
        iommu_sva_bind_device(pdev_at(PASID_BDF), mm)
    mmput(mm)


def test_mm_pasid_beyond_a_devices_pasid_range_is_eoverflow(make_kernel: KernelFactory) -> None:
    make_kernel(devices=_devices(width2=1))
    a, b = pdev_at(PASID_BDF), pdev_at(SECOND)
    assert b.iommu.max_pasids == 2
    taken = iommu_alloc_global_pasid(a)  # PASID 1: the mm gets 2, beyond b's range
    mm = _mm()
    h = iommu_sva_bind_device(a, mm)
    assert iommu_sva_get_pasid(h) == 2
    with pytest.raises(EOVERFLOW):
        iommu_sva_bind_device(b, mm)
    iommu_sva_unbind_device(h)
    mmput(mm)
    iommu_free_global_pasid(taken)


def test_sva_domain_without_map_ops_has_no_iova_space_through_the_core(
    make_kernel: KernelFactory,
) -> None:
    """The mock's SVA domain ops provide no map ops (the process page table is the
    mapping): the core refuses to map it, unmaps nothing and reads 0 for any IOVA;
    its optional ``free`` still runs when the last bond goes."""
    k = make_kernel()
    dev = pdev_at(PASID_BDF)
    mm = _mm()
    before = {(x.kind, x.addr) for x in k.mm.live()}
    handle = iommu_sva_bind_device(dev, mm)
    dom = handle.domain
    for op in ("map_pages", "unmap_pages", "iova_to_phys"):
        assert not has_optional_op(dom.ops, op)
    assert has_optional_op(dom.ops, "free")
    with pytest.raises(EINVAL):
        iommu_map(dom, 0x1000, 0x10_0000, SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert iommu_unmap(dom, 0x1000, SZ_4K) == 0
    assert iommu_iova_to_phys(dom, 0x1000) == 0
    iommu_sva_unbind_device(handle)
    assert {(x.kind, x.addr) for x in k.mm.live()} == before
    mmput(mm)
    assert not take_warnings(k)


def test_bind_needs_a_driver_with_sva_domains(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_kernel()
    dev = pdev_at(PASID_BDF)

    class OpsWithoutSva:  # a driver's iommu_ops with a NULL domain_alloc_sva
        pass

    mm = _mm()
    # Protocol isinstance checks are cached per class: swap the unit's ops object
    # rather than deleting a method from the mock's class.
    monkeypatch.setattr(dev.iommu.iommu_dev, "ops", OpsWithoutSva())
    with pytest.raises(EOPNOTSUPP):
        iommu_sva_bind_device(dev, mm)
    monkeypatch.undo()
    assert not mm.sva_domains and not mm.sva_handles
    mmput(mm)


def test_bind_out_of_memory_leaves_nothing_behind(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    dev = pdev_at(PASID_BDF)
    mm = _mm()
    before = {(x.kind, x.addr) for x in k.mm.live()}
    for nth in (1, 2, 3):  # the bond, the SVA domain, the driver's PASID state
        injector().arm(nth, frozenset({"kmalloc"}))
        try:
            with pytest.raises(ENOMEM):
                iommu_sva_bind_device(dev, mm)
        finally:
            injector().disarm()
        assert not mm.sva_domains and not mm.sva_handles
        assert {(x.kind, x.addr) for x in k.mm.live()} == before
    mmput(mm)
    assert not iommu_state().global_pasid_ida.ids


def test_existing_sva_domain_that_cannot_attach_is_skipped_for_a_new_one(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_kernel(devices=_devices())
    a, b = pdev_at(PASID_BDF), pdev_at(SECOND)
    mm = _mm()
    ha = iommu_sva_bind_device(a, mm)
    # The first domain is incompatible with b (as a domain of another IOMMU would be).
    monkeypatch.setattr(ha.domain, "owner", object())
    hb = iommu_sva_bind_device(b, mm)
    assert hb.domain is not ha.domain and len(mm.sva_domains) == 2
    monkeypatch.undo()
    iommu_sva_unbind_device(hb)
    iommu_sva_unbind_device(ha)
    mmput(mm)


def test_a_notifier_sees_munmap_and_exit_of_a_bound_mm(make_kernel: KernelFactory) -> None:
    """The mock SVA domain subscribes no notifier; one registered by hand sees the
    munmap of touched pages as a secondary-TLB invalidation and the exit as a
    release, while the bond keeps working."""
    make_kernel()
    dev = pdev_at(PASID_BDF)
    mm = _mm()
    h = iommu_sva_bind_device(dev, mm)
    seen: list[tuple[str, int, int]] = []

    class Ops:
        def arch_invalidate_secondary_tlbs(
            self, mn: MmuNotifier, m: MmStruct, start: int, end: int
        ) -> None:
            seen.append(("invalidate", start, end))

        def release(self, mn: MmuNotifier, m: MmStruct) -> None:
            seen.append(("release", 0, 0))

    mn = MmuNotifier(Ops())
    mmu_notifier_register(mn, mm)
    addr = vm_mmap(mm, 0, 2 * SZ_4K, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
    do_munmap(mm, addr, 2 * SZ_4K)  # nothing was touched: no PTE, no flush
    assert seen == []
    addr = vm_mmap(mm, 0, 2 * SZ_4K, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
    vma = vma_lookup(mm, addr)
    assert vma is not None and populate_vma_page_range(vma, addr, addr + SZ_4K) == 0
    do_munmap(mm, addr, 2 * SZ_4K)
    assert seen == [("invalidate", addr, addr + 2 * SZ_4K)]
    mmu_notifier_unregister(mn, mm)
    assert seen[-1] == ("release", 0, 0)
    iommu_sva_unbind_device(h)
    mmput(mm)


def test_mmput_with_bonds_still_held_keeps_the_pasid_until_the_last_unbind(
    make_kernel: KernelFactory,
) -> None:
    """A process exits (``exit_mm`` runs before ``exit_files``) with its bond still
    open: the SVA domain's ``mmgrab`` keeps the mm's PASID until the unbind."""
    k = make_kernel()
    dev = pdev_at(PASID_BDF)
    mm = _mm()
    h = iommu_sva_bind_device(dev, mm)
    pasid = iommu_sva_get_pasid(h)
    mmput(mm)
    assert not take_warnings(k) and mm.exited
    assert mm.pasid == pasid and mm.mm_count == 1
    iommu_sva_unbind_device(h)
    assert hw_entry(dev, pasid) == 0 and iommu_get_domain_for_dev_pasid(dev, pasid) is None
    assert not iommu_state().global_pasid_ida.ids and mm.mm_count == 0
