"""Upstream PASID rules (history §3.6) and the seed-v3 export (§2.2)."""

from __future__ import annotations

import pytest

from kernel.errno import EBUSY, EINVAL, ENODEV, EOPNOTSUPP, EPERM
from kernel.iommu.dma_iommu import iommu_attach_dma_pasid, iommu_detach_dma_pasid
from kernel.iommu.iommu import (
    dev_iommu_ops,
    iommu_attach_device,
    iommu_detach_device,
    iommu_domain_free,
    iommu_get_domain_for_dev,
    iommu_paging_domain_alloc,
)
from kernel.iommu.iommu_h import IOMMU_NO_PASID, IOMMU_PASID_INVALID, IommuDomain
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
    iommu_get_domain_for_dev_pasid,
)
from tests.kernel.conftest import EDU_BDF, PASID_BDF, KernelFactory, pdev_at, take_warnings
from tests.kernel.iommu.helpers import edu_copy
from tests.kernel.iommu.mock_hw import hw_entry
from tests.kernel.iommu.mock_iommu import domain_entry


def test_pasid_0_is_rejected(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(PASID_BDF)
    with pytest.raises(EINVAL):
        iommu_attach_device_pasid(iommu_get_domain_for_dev(dev), dev, IOMMU_NO_PASID)


def test_pasid_beyond_max_pasids_is_rejected(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(PASID_BDF)
    assert dev.iommu.max_pasids == 256
    with pytest.raises(EINVAL):
        iommu_attach_device_pasid(iommu_get_domain_for_dev(dev), dev, 256)
    assert not dev.iommu_group.pasid_array


def test_second_attach_of_same_pasid_is_ebusy(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(PASID_BDF)
    dom = iommu_get_domain_for_dev(dev)
    other = iommu_paging_domain_alloc(dev)
    iommu_attach_device_pasid(dom, dev, 5)
    with pytest.raises(EBUSY):
        iommu_attach_device_pasid(other, dev, 5)
    assert dev.iommu_group.pasid_array[5] is dom
    iommu_detach_device_pasid(dom, dev, 5)
    iommu_domain_free(other)


def test_detach_returns_the_pasid_to_blocked(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(PASID_BDF)
    dom = iommu_get_domain_for_dev(dev)
    iommu_attach_device_pasid(dom, dev, 7)
    assert hw_entry(dev, 7) == domain_entry(dom)
    iommu_detach_device_pasid(dom, dev, 7)
    assert hw_entry(dev, 7) == 0
    assert edu_copy(dev, 0x1000, 0x40000, 8, False) == 1  # unmapped IOVA: the device faults


def test_global_pasid_is_freed_and_reusable(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(PASID_BDF)
    a = iommu_alloc_global_pasid(dev)
    b = iommu_alloc_global_pasid(dev)
    assert (a, b) == (1, 2)
    iommu_free_global_pasid(a)
    assert iommu_alloc_global_pasid(dev) == 1


def test_device_without_pasid_gets_no_global_pasid(make_kernel: KernelFactory) -> None:
    make_kernel()
    assert iommu_alloc_global_pasid(pdev_at(EDU_BDF)) == IOMMU_PASID_INVALID


def test_free_of_invalid_pasid_warns(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    iommu_free_global_pasid(IOMMU_PASID_INVALID)
    assert len(take_warnings(k)) == 1


def test_rid_domain_change_leaves_attached_pasids_in_place(make_kernel: KernelFactory) -> None:
    """Linux 6.12 ``__iommu_attach_group`` does not look at ``pasid_array``: a new
    RID domain can be attached while a PASID is attached (only DMA *ownership* is
    refused then — see test_attach's ``test_claim_is_ebusy_while_a_pasid_is_attached``),
    and the PASID keeps its domain, in the core and in the hardware's tables."""
    make_kernel()
    dev = pdev_at(PASID_BDF)
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    iommu_attach_device_pasid(dom, dev, 3)
    other = iommu_paging_domain_alloc(dev)
    iommu_attach_device(other, dev)
    assert iommu_get_domain_for_dev(dev) is other
    assert iommu_get_domain_for_dev_pasid(dev, 3) is dom
    assert hw_entry(dev) == domain_entry(other) and hw_entry(dev, 3) == domain_entry(dom)
    iommu_detach_device(other, dev)
    assert iommu_get_domain_for_dev(dev) is dom and hw_entry(dev) == domain_entry(dom)
    assert hw_entry(dev, 3) == domain_entry(dom)
    iommu_detach_device_pasid(dom, dev, 3)
    assert hw_entry(dev, 3) == 0
    iommu_domain_free(other)


def test_seed_v3_refused_in_upstream_mode(make_kernel: KernelFactory) -> None:
    make_kernel()
    with pytest.raises(EOPNOTSUPP):
        iommu_attach_dma_pasid(pdev_at(PASID_BDF))


def test_seed_v3_pasid_is_shared_and_refcounted(make_kernel: KernelFactory) -> None:
    """Two attaches by one device share the domain's PASID. The second detach reaches
    the driver's ``detach_dev_pasid`` for a PASID it already tore down, and the
    driver WARNs — the v3 design flaw (a per-domain count over a per-device op)."""
    k = make_kernel("iommu.pasid_api=seed-v3")
    dev = pdev_at(PASID_BDF)
    p1 = iommu_attach_dma_pasid(dev)
    p2 = iommu_attach_dma_pasid(dev)
    dom = iommu_get_domain_for_dev(dev)
    assert p1 == p2 and dom.pasid_users == 2
    iommu_detach_dma_pasid(dev)
    assert dom.pasid == p1
    iommu_detach_dma_pasid(dev)
    assert dom.pasid == 0 and dom.pasid_users == 0
    assert take_warnings(k) == ["mock: detaching a PASID the device does not have"]


def test_seed_v3_rejects_unmanaged_domain_with_warn(make_kernel: KernelFactory) -> None:
    k = make_kernel("iommu.pasid_api=seed-v3")
    dev = pdev_at(PASID_BDF)
    dom = iommu_paging_domain_alloc(dev)
    iommu_attach_device(dom, dev)
    with pytest.raises(EPERM):
        iommu_attach_dma_pasid(dev)
    assert len(take_warnings(k)) == 1
    iommu_detach_device(dom, dev)
    iommu_domain_free(dom)


def test_pasid_calls_on_a_device_without_iommu(make_kernel: KernelFactory) -> None:
    make_kernel(iommu=False)
    dev = pdev_at(PASID_BDF)
    with pytest.raises(ENODEV):
        iommu_attach_device_pasid(IommuDomain(), dev, 1)
    iommu_detach_device_pasid(IommuDomain(), dev, 1)  # nothing attached: nothing to do
    assert iommu_get_domain_for_dev_pasid(dev, 1) is None
    assert iommu_alloc_global_pasid(dev) == IOMMU_PASID_INVALID


def test_domain_without_set_dev_pasid_is_eopnotsupp(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(PASID_BDF)
    with pytest.raises(EOPNOTSUPP):
        iommu_attach_device_pasid(IommuDomain(owner=dev_iommu_ops(dev)), dev, 1)
    assert not dev.iommu_group.pasid_array


def test_attach_handles_are_refused(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(PASID_BDF)
    with pytest.raises(EINVAL):
        iommu_attach_device_pasid(iommu_get_domain_for_dev(dev), dev, 1, handle=object())
    assert not dev.iommu_group.pasid_array


def test_global_pasid_space_exhaustion_gives_pasid_invalid(make_kernel: KernelFactory) -> None:
    make_kernel(devices=[{"kind": "pasid_edu", "bdf": PASID_BDF, "config": {"pasid_width": 1}}])
    dev = pdev_at(PASID_BDF)
    assert iommu_alloc_global_pasid(dev) == 1  # max_pasids 2: only PASID 1 is global
    assert iommu_alloc_global_pasid(dev) == IOMMU_PASID_INVALID
    iommu_free_global_pasid(1)
