"""Attach/detach, DMA ownership (user claims versus kernel drivers), map/unmap edge
cases, IOTLB hooks and fault reporting of the IOMMU core."""

from __future__ import annotations

import pytest

from kernel import trace
from kernel.device import Device
from kernel.errno import EBUSY, EINVAL, ENODEV, ENOMEM, EPERM
from kernel.fault_inject import injector
from kernel.iommu.io_pgfault import report_iommu_fault
from kernel.iommu.iommu import (
    __iommu_domain_alloc,
    dev_iommu_ops,
    iommu_attach_device,
    iommu_detach_device,
    iommu_device_claim_dma_owner,
    iommu_device_release_dma_owner,
    iommu_device_unuse_default_domain,
    iommu_device_use_default_domain,
    iommu_domain_alloc,
    iommu_domain_free,
    iommu_get_domain_for_dev,
    iommu_group_claim_dma_owner,
    iommu_group_get,
    iommu_group_release_dma_owner,
    iommu_paging_domain_alloc,
    iommu_set_fault_handler,
    iommu_state,
)
from kernel.iommu.iommu_h import (
    IOMMU_DOMAIN_BLOCKED,
    IOMMU_DOMAIN_SVA,
    IOMMU_FAULT_WRITE,
    IOMMU_READ,
    IommuDomain,
    has_optional_op,
    iommu_flush_iotlb_all,
    pasid_ops,
    seed_pasid_ops,
)
from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_map, iommu_pgsize, iommu_unmap
from kernel.iommu.pasid import iommu_attach_device_pasid, iommu_detach_device_pasid
from kernel.mm import GFP_KERNEL
from kernel.pci import (
    PciDev,
    PciDeviceId,
    PciDriver,
    pci_bus_type,
    pci_register_driver,
    pci_unregister_driver,
)
from tests.kernel.conftest import EDU_BDF, PASID_BDF, KernelFactory, pdev_at, take_warnings
from tests.kernel.iommu import mock_iommu
from tests.kernel.iommu.mock_hw import hw_entry

SZ_4K = 1 << 12
EDU_ID = PciDeviceId(0x1234, 0x11E8)


def _owner_cnt(dev: PciDev) -> int:
    group = iommu_group_get(dev)
    assert group is not None
    return group.owner_cnt


# --------------------------------------------------------------------------- attach / detach


def test_attaching_the_current_domain_again_changes_nothing(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    default = iommu_get_domain_for_dev(dev)
    assert default is not None
    iommu_attach_device(default, dev)
    assert iommu_get_domain_for_dev(dev) is default


def test_attach_and_detach_of_a_device_without_group(make_kernel: KernelFactory) -> None:
    make_kernel(iommu=False)
    dev = pdev_at(EDU_BDF)
    with pytest.raises(ENODEV):
        iommu_attach_device(IommuDomain(), dev)
    iommu_detach_device(IommuDomain(), dev)  # nothing attached: nothing to do
    assert iommu_get_domain_for_dev(dev) is None


def test_identity_and_sva_domains_cannot_be_attached_to_the_rid(
    make_kernel: KernelFactory,
) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    default = iommu_get_domain_for_dev(dev)
    for dom in (mock_iommu.IDENTITY_DOMAIN, IommuDomain(type=IOMMU_DOMAIN_SVA)):
        with pytest.raises(EINVAL):
            iommu_attach_device(dom, dev)
    assert iommu_get_domain_for_dev(dev) is default


def test_detach_of_a_domain_that_is_not_attached_warns(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    default = iommu_get_domain_for_dev(dev)
    dom = iommu_paging_domain_alloc(dev)
    iommu_detach_device(dom, dev)
    assert len(take_warnings(k)) == 1
    assert iommu_get_domain_for_dev(dev) is default
    iommu_domain_free(dom)


def test_detach_that_the_driver_refuses_warns_and_keeps_the_domain(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    dom = iommu_paging_domain_alloc(dev)
    iommu_attach_device(dom, dev)
    injector().arm(1, frozenset({"iommu_attach"}))
    try:
        iommu_detach_device(dom, dev)
    finally:
        injector().disarm()
    assert take_warnings(k) == ["iommu driver failed to attach the default/blocking domain"]
    assert iommu_get_domain_for_dev(dev) is dom
    iommu_detach_device(dom, dev)
    iommu_domain_free(dom)


def test_legacy_bus_domain_alloc(make_kernel: KernelFactory) -> None:
    from kernel.device import BusType

    make_kernel()
    dom = iommu_domain_alloc(pci_bus_type)
    assert isinstance(dom, mock_iommu.MockDomain) and dom.owner is mock_iommu._OPS
    iommu_domain_free(dom)
    platform_bus = BusType("platform")
    platform_bus.devices.append(Device("p0"))
    with pytest.raises(ENODEV):
        iommu_domain_alloc(platform_bus)


def test_sva_domains_come_only_from_the_sva_allocator(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    with pytest.raises(EINVAL):
        __iommu_domain_alloc(dev_iommu_ops(dev), dev, IOMMU_DOMAIN_SVA)


def test_static_domains_are_never_freed(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``iommu_domain_free`` of the driver's static identity or blocked domain returns
    without calling a ``free`` op, even when the ops have one; the same ops on a
    domain that is not the driver's static one are freed. A domain with no owner and
    no ops has nothing to release."""
    make_kernel()
    freed: list[IommuDomain] = []
    for ops in (mock_iommu.MockBlockedOps, mock_iommu.MockIdentityOps):
        monkeypatch.setattr(ops, "free", lambda self, d: freed.append(d), raising=False)
    iommu_domain_free(mock_iommu.BLOCKED_DOMAIN)
    iommu_domain_free(mock_iommu.IDENTITY_DOMAIN)
    assert freed == []
    dev = pdev_at(EDU_BDF)
    iommu_device_claim_dma_owner(dev, "vfio")  # the blocked domain still works
    assert iommu_get_domain_for_dev(dev) is mock_iommu.BLOCKED_DOMAIN and hw_entry(dev) == 0
    iommu_device_release_dma_owner(dev)
    iommu_domain_free(IommuDomain())
    other = IommuDomain(type=IOMMU_DOMAIN_BLOCKED, ops=mock_iommu.MockBlockedOps())
    iommu_domain_free(other)
    assert freed == [other]


# --------------------------------------------------------------------------- ownership


def test_second_claim_by_the_same_owner_counts_and_needs_two_releases(
    make_kernel: KernelFactory,
) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    default = iommu_get_domain_for_dev(dev)
    iommu_device_claim_dma_owner(dev, "vfio")
    iommu_device_claim_dma_owner(dev, "vfio")
    assert _owner_cnt(dev) == 2
    iommu_device_release_dma_owner(dev)
    assert iommu_get_domain_for_dev(dev) is dev_iommu_ops(dev).blocked_domain
    iommu_device_release_dma_owner(dev)
    assert iommu_get_domain_for_dev(dev) is default and _owner_cnt(dev) == 0


def test_blocking_domain_is_allocated_once_per_group(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    group = iommu_group_get(dev)
    assert group is not None
    iommu_group_claim_dma_owner(group, "vfio")
    blocking = group.blocking_domain
    iommu_group_release_dma_owner(group)
    iommu_group_claim_dma_owner(group, "iommufd")
    assert group.blocking_domain is blocking and group.owner == "iommufd"
    with pytest.raises(EPERM):
        iommu_group_claim_dma_owner(group, "vfio")
    iommu_group_release_dma_owner(group)


def test_claim_without_owner_warns_and_is_einval(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    group = iommu_group_get(pdev_at(EDU_BDF))
    assert group is not None
    with pytest.raises(EINVAL):
        iommu_group_claim_dma_owner(group, None)
    assert len(take_warnings(k)) == 1 and group.owner_cnt == 0


def test_claim_is_ebusy_while_a_pasid_is_attached(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(PASID_BDF)
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    iommu_attach_device_pasid(dom, dev, 2)
    with pytest.raises(EBUSY):
        iommu_device_claim_dma_owner(dev, "vfio")
    iommu_detach_device_pasid(dom, dev, 2)
    assert _owner_cnt(dev) == 0


def test_release_of_an_unowned_group_warns(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    iommu_device_release_dma_owner(dev)
    assert len(take_warnings(k)) == 1


def test_ownership_calls_on_a_device_without_group(make_kernel: KernelFactory) -> None:
    make_kernel(iommu=False)
    dev = pdev_at(EDU_BDF)
    with pytest.raises(ENODEV):
        iommu_device_claim_dma_owner(dev, "vfio")
    iommu_device_release_dma_owner(dev)
    iommu_device_use_default_domain(dev)
    iommu_device_unuse_default_domain(dev)


def test_binding_a_kernel_driver_takes_and_unbinding_drops_a_default_domain_use(
    make_kernel: KernelFactory,
) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    drv = PciDriver("edu_drv", [EDU_ID], lambda pdev, _id: None)
    pci_register_driver(drv)
    assert dev.driver is drv.driver and _owner_cnt(dev) == 1
    with pytest.raises(EPERM):
        iommu_device_claim_dma_owner(dev, "vfio")
    pci_unregister_driver(drv)
    assert _owner_cnt(dev) == 0
    iommu_device_claim_dma_owner(dev, "vfio")
    iommu_device_release_dma_owner(dev)


def test_failed_driver_probe_drops_its_default_domain_use(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)

    def probe(pdev: PciDev, _id: PciDeviceId) -> None:
        raise ENOMEM("probe")

    pci_register_driver(PciDriver("edu_fail", [EDU_ID], probe))
    assert dev.driver is None and _owner_cnt(dev) == 0


def test_binding_a_kernel_driver_while_a_user_owns_the_group_is_a_warning(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    iommu_device_claim_dma_owner(dev, "vfio")
    drv = PciDriver("edu_drv", [EDU_ID], lambda pdev, _id: None)
    pci_register_driver(drv)
    assert f"edu_drv {EDU_BDF}: DMA ownership conflict: -EBUSY: group" in k.dmesg()
    assert _owner_cnt(dev) == 1  # still the user's single claim
    pci_unregister_driver(drv)
    assert _owner_cnt(dev) == 1
    iommu_device_release_dma_owner(dev)


def test_kernel_driver_cannot_use_a_group_moved_off_its_default_domain(
    make_kernel: KernelFactory,
) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    dom = iommu_paging_domain_alloc(dev)
    iommu_attach_device(dom, dev)
    with pytest.raises(EBUSY):
        iommu_device_use_default_domain(dev)
    iommu_detach_device(dom, dev)
    iommu_domain_free(dom)


def test_unbalanced_unuse_of_the_default_domain_warns(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    iommu_device_unuse_default_domain(dev)
    assert len(take_warnings(k)) == 1 and _owner_cnt(dev) == 0


# --------------------------------------------------------------------------- map / unmap


def test_unaligned_map_is_einval_and_maps_nothing(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    dom = iommu_paging_domain_alloc(pdev_at(EDU_BDF))
    with pytest.raises(EINVAL):
        iommu_map(dom, 0x1800, 0x10000, SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert not dom.mappings()  # type: ignore[attr-defined]
    assert "unaligned: iova 0x1800 pa 0x0000000000010000 size 0x1000" in k.dmesg()
    iommu_domain_free(dom)


def test_map_and_unmap_of_non_paging_domains(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    identity = mock_iommu.IDENTITY_DOMAIN
    with pytest.raises(EINVAL):
        iommu_map(identity, 0, 0, SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert iommu_unmap(identity, 0, SZ_4K) == 0
    iommu_flush_iotlb_all(identity)  # no flush_iotlb_all op: nothing to do
    assert iommu_iova_to_phys(identity, 0x1234) == 0x1234
    assert iommu_iova_to_phys(mock_iommu.BLOCKED_DOMAIN, 0x1234) == 0
    assert iommu_iova_to_phys(IommuDomain(), 0x1234) == 0
    bare = IommuDomain()
    with pytest.raises(ENODEV):
        iommu_map(bare, 0, 0, SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert iommu_unmap(bare, 0, SZ_4K) == 0
    assert len(take_warnings(k)) == 2


def test_paging_domain_whose_ops_lack_map_ops_warns_and_maps_nothing(
    make_kernel: KernelFactory,
) -> None:
    """A paging-typed domain given non-paging ops is a driver bug: the core checks the
    op before narrowing to the paging protocol (WARN, ENODEV / 0), never calls it."""
    k = make_kernel()
    dom = mock_iommu.MockDomain(pgsize_bitmap=SZ_4K, ops=mock_iommu.MockBlockedOps())
    with pytest.raises(ENODEV):
        iommu_map(dom, 0, 0x10000, SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert iommu_unmap(dom, 0, SZ_4K) == 0
    assert iommu_iova_to_phys(dom, 0) == 0
    assert len(take_warnings(k)) == 2


def test_unmap_that_overflows_or_is_unaligned_unmaps_nothing(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    dom = iommu_paging_domain_alloc(pdev_at(EDU_BDF))
    iommu_map(dom, 0x1000, 0x10000, SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert iommu_unmap(dom, (1 << 64) - SZ_4K, 2 * SZ_4K) == 0
    assert iommu_unmap(dom, 0x1000, 0x800) == 0
    assert "unaligned: iova 0x1000 size 0x800" in k.dmesg()
    assert iommu_iova_to_phys(dom, 0x1000) == 0x10000
    iommu_unmap(dom, 0x1000, SZ_4K)
    iommu_domain_free(dom)


def test_pgsize_with_no_fitting_page_size_warns(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    assert iommu_pgsize(IommuDomain(pgsize_bitmap=SZ_4K), 0, 0, 0x800) == (0, 0)
    assert len(take_warnings(k)) == 1


def test_iotlb_sync_map_is_called_after_map_and_its_failure_unmaps(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_kernel()
    dom = iommu_paging_domain_alloc(pdev_at(EDU_BDF))
    synced: list[tuple[int, int]] = []

    def sync_map(domain: IommuDomain, iova: int, size: int) -> None:
        synced.append((iova, size))
        if iova == 0x8000:
            raise ENOMEM("sync_map")

    # On the ops object: optional ops are looked up on every call, as C reads the pointer.
    monkeypatch.setattr(dom.ops, "iotlb_sync_map", sync_map, raising=False)
    iommu_map(dom, 0x1000, 0x10000, SZ_4K, IOMMU_READ, GFP_KERNEL)
    with pytest.raises(ENOMEM):
        iommu_map(dom, 0x8000, 0x20000, SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert synced == [(0x1000, SZ_4K), (0x8000, SZ_4K)]
    assert iommu_iova_to_phys(dom, 0x8000) == 0 and iommu_iova_to_phys(dom, 0x1000) == 0x10000
    iommu_unmap(dom, 0x1000, SZ_4K)
    iommu_domain_free(dom)


def test_optional_domain_ops_absent_or_none_are_skipped(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NULL optional op (attribute None, or missing on the class) is not called, and
    the check is made per call: an op set after the domain was allocated is used."""
    make_kernel()
    dom = iommu_paging_domain_alloc(pdev_at(EDU_BDF))
    assert dom.ops is not None
    monkeypatch.setattr(dom.ops, "iotlb_sync", None, raising=False)
    monkeypatch.setattr(dom.ops, "flush_iotlb_all", None, raising=False)
    monkeypatch.delattr(mock_iommu.MockDomainOps, "attach_dev_pasid")
    assert has_optional_op(dom.ops, "iotlb_sync") is False
    assert seed_pasid_ops(dom) is None and pasid_ops(dom) is dom.ops
    iommu_map(dom, 0x1000, 0x10000, SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert iommu_unmap(dom, 0x1000, SZ_4K) == SZ_4K
    iommu_flush_iotlb_all(dom)
    assert isinstance(dom, mock_iommu.MockDomain)
    assert dom.iotlb_syncs == 0 and dom.flush_alls == 0
    flushed: list[IommuDomain] = []
    monkeypatch.setattr(dom.ops, "flush_iotlb_all", flushed.append, raising=False)
    iommu_flush_iotlb_all(dom)
    assert flushed == [dom]
    iommu_domain_free(dom)


# --------------------------------------------------------------------------- faults


def test_fault_goes_to_the_domain_handler(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    got: list[tuple[int, int]] = []

    def handler(d: IommuDomain, fdev: Device, iova: int, flags: int) -> int:
        assert d is dom and fdev is dev
        got.append((iova, flags))
        return 0

    iommu_set_fault_handler(dom, handler)
    with trace.capture("iommu:io_page_fault") as events:
        assert report_iommu_fault(dev, 0x5000, IOMMU_FAULT_WRITE) == 0
    assert got == [(0x5000, IOMMU_FAULT_WRITE)]
    (ev,) = events
    assert ev.fields["device"] == EDU_BDF and ev.fields["iova"] == 0x5000
    assert iommu_state().faults[-1] == (EDU_BDF, 0x5000, IOMMU_FAULT_WRITE)
    iommu_set_fault_handler(dom, None)
    assert report_iommu_fault(dev, 0x5000, 0) == -38  # -ENOSYS: nobody handled it


def test_pasid_fault_goes_to_the_pasid_domain_handler(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(PASID_BDF)
    rid_dom = iommu_get_domain_for_dev(dev)
    dom = iommu_paging_domain_alloc(dev)
    iommu_attach_device_pasid(dom, dev, 4)
    iommu_set_fault_handler(dom, lambda d, f, iova, flags: 7)
    assert report_iommu_fault(dev, 0x1000, 0, pasid=4) == 7
    assert report_iommu_fault(dev, 0x1000, 0, pasid=5) == -38
    assert rid_dom is not None and rid_dom.handler is None
    iommu_detach_device_pasid(dom, dev, 4)
    iommu_domain_free(dom)


def test_fault_of_a_device_without_iommu_is_unhandled(make_kernel: KernelFactory) -> None:
    make_kernel(iommu=False)
    assert report_iommu_fault(pdev_at(EDU_BDF), 0x1000, 0) == -38
