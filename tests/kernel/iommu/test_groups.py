"""IOMMU groups with more than one device: PCI grouping by ACS, joining a group,
whole-group domain switches and their unwind, and PASID attach across a group."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.errno import EINVAL, ENOMEM
from kernel.fault_inject import injector
from kernel.iommu.iommu import (
    iommu_attach_device,
    iommu_device_claim_dma_owner,
    iommu_device_release_dma_owner,
    iommu_domain_free,
    iommu_get_domain_for_dev,
    iommu_group_get,
    iommu_group_id,
    iommu_paging_domain_alloc,
    iommu_release_device,
    iommu_state,
)
from kernel.iommu.pasid import (
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_get_domain_for_dev_pasid,
)
from kernel.pci import PciDev
from tests.kernel.conftest import KernelFactory, pdev_at, take_warnings
from tests.kernel.iommu import mock_iommu
from tests.kernel.iommu.mock_hw import hw_entry
from tests.kernel.iommu.mock_iommu import domain_entry

FN0, FN1 = "0000:00:05.0", "0000:00:05.1"
ACS0, ACS1 = "0000:00:06.0", "0000:00:06.1"


def _slot(bdf0: str, bdf1: str, acs: bool, width1: int = 8) -> list[dict[str, Any]]:
    """Two functions of one multifunction slot, plain PCIe endpoints (not RCiEP)."""
    return [
        {
            "kind": "pasid_edu",
            "bdf": bdf0,
            "config": {"pasid_width": 8, "port_type": 0, "multifunction": True, "acs": acs},
        },
        {
            "kind": "pasid_edu",
            "bdf": bdf1,
            "config": {"pasid_width": width1, "port_type": 0, "acs": acs},
        },
    ]


def _shared(make_kernel: KernelFactory, width1: int = 8) -> tuple[PciDev, PciDev]:
    make_kernel(devices=_slot(FN0, FN1, acs=False, width1=width1))
    return pdev_at(FN0), pdev_at(FN1)


def _ctx(dev: PciDev, pasid: int | None) -> int | None:
    """The translation entry the hardware reads for ``dev`` (at ``pasid``); None: blocked."""
    return hw_entry(dev, pasid) or None


def test_functions_of_a_slot_without_acs_share_one_group(make_kernel: KernelFactory) -> None:
    a, b = _shared(make_kernel)
    group = iommu_group_get(a)
    assert group is not None and iommu_group_get(b) is group
    assert group.devices == [a, b]
    assert repr(group) == f"<iommu_group {iommu_group_id(group)}>"


def test_acs_isolated_functions_get_a_group_each(make_kernel: KernelFactory) -> None:
    make_kernel(devices=_slot(ACS0, ACS1, acs=True))
    a, b = pdev_at(ACS0), pdev_at(ACS1)
    assert iommu_group_get(a) is not iommu_group_get(b)


def test_device_joining_a_group_is_attached_to_the_groups_domain(
    make_kernel: KernelFactory,
) -> None:
    a, b = _shared(make_kernel)
    dom = iommu_get_domain_for_dev(a)
    assert iommu_get_domain_for_dev(b) is dom
    assert _ctx(a, None) == _ctx(b, None) == domain_entry(dom)


def test_attach_device_refuses_a_group_with_several_devices(make_kernel: KernelFactory) -> None:
    a, _b = _shared(make_kernel)
    default = iommu_get_domain_for_dev(a)
    dom = iommu_paging_domain_alloc(a)
    with pytest.raises(EINVAL):
        iommu_attach_device(dom, a)
    assert iommu_get_domain_for_dev(a) is default
    iommu_domain_free(dom)


def test_releasing_one_device_keeps_the_group_for_the_other(make_kernel: KernelFactory) -> None:
    a, b = _shared(make_kernel)
    group = iommu_group_get(a)
    iommu_release_device(a)
    assert a.iommu_group is None and a.iommu is None
    assert _ctx(a, None) is None  # released devices are blocked
    assert group is not None and group.devices == [b] and group.default_domain is not None
    assert iommu_state().group_ida.ids


def test_group_switch_unwinds_devices_already_moved_when_one_fails(
    make_kernel: KernelFactory,
) -> None:
    """Releasing DMA ownership re-attaches every device to the default domain; when
    the second device's attach fails the first is put back on the blocking domain,
    and the core WARNs (the release path cannot fail, as Linux's
    ``__iommu_group_set_core_domain``)."""
    k = make_kernel(devices=_slot(FN0, FN1, acs=False))
    a, b = pdev_at(FN0), pdev_at(FN1)
    group = iommu_group_get(a)
    assert group is not None
    owner = object()
    iommu_device_claim_dma_owner(a, owner)
    assert group.domain is group.blocking_domain
    assert _ctx(a, None) is None and _ctx(b, None) is None
    injector().arm(2, frozenset({"iommu_attach"}))
    try:
        iommu_device_release_dma_owner(a)
    finally:
        injector().disarm()
    assert group.owner is None and group.owner_cnt == 0
    assert group.domain is group.blocking_domain
    assert _ctx(a, None) is None and _ctx(b, None) is None
    assert take_warnings(k) == ["iommu driver failed to attach the default/blocking domain"]


def test_pasid_attach_sets_every_group_device_with_pasids(make_kernel: KernelFactory) -> None:
    a, b = _shared(make_kernel)
    dom = iommu_get_domain_for_dev(a)
    assert dom is not None
    iommu_attach_device_pasid(dom, b, 9)
    assert _ctx(a, 9) == _ctx(b, 9) == domain_entry(dom)
    assert iommu_get_domain_for_dev_pasid(a, 9) is dom
    iommu_detach_device_pasid(dom, a, 9)
    assert _ctx(a, 9) is None and _ctx(b, 9) is None
    assert iommu_get_domain_for_dev_pasid(a, 9) is None


def test_pasid_attach_skips_group_devices_without_pasid_support(
    make_kernel: KernelFactory,
) -> None:
    a, b = _shared(make_kernel, width1=0)
    assert b.iommu.max_pasids == 0
    dom = iommu_get_domain_for_dev(a)
    assert dom is not None
    iommu_attach_device_pasid(dom, a, 4)
    assert _ctx(a, 4) is not None and _ctx(b, 4) is None
    iommu_detach_device_pasid(dom, a, 4)


def test_pasid_attach_failing_on_the_second_device_blocks_the_first_again(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel(devices=_slot(FN0, FN1, acs=False))
    a, b = pdev_at(FN0), pdev_at(FN1)
    dom = iommu_get_domain_for_dev(a)
    assert dom is not None
    before = {(x.kind, x.addr) for x in k.mm.live()}
    injector().arm(2, frozenset({"kmalloc"}))
    try:
        with pytest.raises(ENOMEM):
            iommu_attach_device_pasid(dom, a, 3)
    finally:
        injector().disarm()
    group = iommu_group_get(a)
    assert group is not None and 3 not in group.pasid_array
    assert _ctx(a, 3) is None and _ctx(b, 3) is None
    assert {(x.kind, x.addr) for x in k.mm.live()} == before


def test_pasid_rollback_failure_warns_and_still_reports_the_attach_error(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = make_kernel(devices=_slot(FN0, FN1, acs=False))
    a = pdev_at(FN0)
    dom = iommu_get_domain_for_dev(a)
    assert dom is not None

    def refuse(*_args: object) -> None:
        raise ENOMEM("blocked set_dev_pasid")

    injector().arm(2, frozenset({"kmalloc"}))
    monkeypatch.setattr(mock_iommu.MockBlockedOps, "set_dev_pasid", refuse)
    try:
        with pytest.raises(ENOMEM):
            iommu_attach_device_pasid(dom, a, 3)
    finally:
        injector().disarm()
    monkeypatch.undo()
    assert take_warnings(k) == [f"iommu: PASID 3 rollback failed on {FN0}"]
    # The first device still points at the domain; detach cleans it up.
    iommu_detach_device_pasid(dom, a, 3)
    assert _ctx(a, 3) is None


def test_pasid_detach_warns_when_the_blocked_domain_refuses(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = make_kernel(devices=_slot(FN0, FN1, acs=False))
    a = pdev_at(FN0)
    dom = iommu_get_domain_for_dev(a)
    assert dom is not None
    iommu_attach_device_pasid(dom, a, 6)

    def refuse(*_args: object) -> None:
        raise ENOMEM("blocked set_dev_pasid")

    monkeypatch.setattr(mock_iommu.MockBlockedOps, "set_dev_pasid", refuse)
    iommu_detach_device_pasid(dom, a, 6)
    monkeypatch.undo()
    group = iommu_group_get(a)
    assert group is not None and 6 not in group.pasid_array
    assert take_warnings(k) == [
        f"iommu: blocking PASID 6 of {FN0} failed",
        f"iommu: blocking PASID 6 of {FN1} failed",
    ]
    iommu_detach_device_pasid(dom, a, 6)  # the driver's state is cleaned up now


def test_failed_restore_during_an_unwind_is_warned_about(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claiming ownership moves both functions to the blocking domain; the second
    refuses, and putting the first back on the default domain fails too."""
    k = make_kernel(devices=_slot(FN0, FN1, acs=False))
    a, b = pdev_at(FN0), pdev_at(FN1)
    default = iommu_get_domain_for_dev(a)
    real = mock_iommu.MockBlockedOps.attach_dev

    def refuse_fn1(self: object, domain: object, dev: PciDev, old: object) -> None:
        if dev is b:
            raise ENOMEM("blocked attach")
        real(self, domain, dev, old)  # type: ignore[arg-type]

    monkeypatch.setattr(mock_iommu.MockBlockedOps, "attach_dev", refuse_fn1)
    injector().arm(1, frozenset({"iommu_attach"}))
    try:
        with pytest.raises(ENOMEM):
            iommu_device_claim_dma_owner(a, "vfio")
    finally:
        injector().disarm()
    monkeypatch.undo()
    assert take_warnings(k) == [f"iommu: failed to restore domain of {FN0}"]
    group = iommu_group_get(a)
    assert group is not None and group.owner is None and group.domain is default
    # What the unwind could not restore, a later attach of the group's domain does.
    iommu_device_claim_dma_owner(a, "vfio")
    iommu_device_release_dma_owner(a)
    assert _ctx(a, None) == _ctx(b, None) == domain_entry(default)
