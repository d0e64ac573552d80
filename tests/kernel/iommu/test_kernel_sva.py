"""The 5.15 SVA core of ``iommu.pasid_api=kernel-sva``: the mm's PASID is reference
counted over the shared global PASID space, and the bind refuses devices without
an IOMMU driver that has ``sva_bind`` (the mock vendor has none, like SMMUv3)."""

from __future__ import annotations

import pytest
from attrs import define

from kernel.errno import EINVAL, ENODEV, EOVERFLOW
from kernel.idr import ida_is_empty
from kernel.iommu.iommu import iommu_state
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.iommu.kernel_sva import (
    SVM_FLAG_SUPERVISOR_MODE,
    iommu_sva_alloc_pasid,
    iommu_sva_bind_device,
    iommu_sva_free_pasid,
)
from tests.kernel.conftest import EDU_BDF, PASID_BDF, KernelFactory, pdev_at


@define
class FakeMm:
    pasid: int = IOMMU_PASID_INVALID
    pasid_refs: int = 0


def test_the_mm_pasid_is_shared_and_freed_with_its_last_reference(
    make_kernel: KernelFactory,
) -> None:
    make_kernel("iommu.pasid_api=kernel-sva")
    mm = FakeMm()
    pasid = iommu_sva_alloc_pasid(mm, 1, 255)
    assert iommu_sva_alloc_pasid(mm, 1, 255) == pasid and mm.pasid_refs == 2
    with pytest.raises(EOVERFLOW):
        iommu_sva_alloc_pasid(mm, pasid + 1, 255)
    with pytest.raises(EINVAL):
        iommu_sva_alloc_pasid(FakeMm(), 0, 255)
    iommu_sva_free_pasid(mm)
    assert mm.pasid == pasid
    iommu_sva_free_pasid(mm)
    iommu_sva_free_pasid(mm)  # nothing left: a no-op
    assert mm.pasid == IOMMU_PASID_INVALID
    assert ida_is_empty(iommu_state().global_pasid_ida)


def test_bind_needs_an_iommu_driver_with_sva_bind(make_kernel: KernelFactory) -> None:
    make_kernel("iommu.pasid_api=kernel-sva")
    with pytest.raises(ENODEV, match="has no sva_bind"):
        iommu_sva_bind_device(pdev_at(PASID_BDF), None, SVM_FLAG_SUPERVISOR_MODE)


def test_bind_needs_an_iommu(make_kernel: KernelFactory) -> None:
    make_kernel("iommu.pasid_api=kernel-sva", iommu=False)
    with pytest.raises(ENODEV, match="not behind an IOMMU"):
        iommu_sva_bind_device(pdev_at(EDU_BDF), None, SVM_FLAG_SUPERVISOR_MODE)
