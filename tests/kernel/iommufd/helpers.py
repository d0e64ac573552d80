"""Small helpers the iommufd tests share: raw ioctls, errnos, domain contents."""

from __future__ import annotations

from kernel.iommu.iommu_h import IommuDomain
from kernel.iommu.iommu_map import iommu_iova_to_phys
from kernel.iommu.iommu_resv import IommuResvRegion, iommu_get_resv_regions
from kernel.iommufd.hw_pagetable import IommufdHwptPaging
from kernel.iommufd.io_pagetable import IoPagetable
from kernel.iommufd.ioas import IommufdIoas
from kernel.iommufd.main import IommufdCtx
from kernel.iommufd.uapi_helpers import Iommufd
from kernel.mm import PAGE_SIZE
from kernel.pgtable import pte_pfn_phys
from kernel.sched import TaskStruct
from kernel.uapi.iommufd import UapiStruct
from tests.kernel.iommufd.conftest import Vmm, pdev


def raw(fd: Iommufd, cmd: int, st: UapiStruct, size: int | None = None) -> tuple[int, bytes]:
    """The ioctl's return value and the struct bytes after it (``size`` defaults to
    the struct's)."""
    if hasattr(st, "size"):
        st.size = st.SIZE if size is None else size
    return fd.ioctl(cmd, st.to_bytes())


def user_phys(task: TaskStruct, uptr: int) -> int:
    """The physical address the process's page tables map ``uptr`` to (0: none)."""
    assert task.mm is not None
    hit = task.mm.pgd.walk(uptr)
    return 0 if hit is None else pte_pfn_phys(hit[0], hit[1], uptr)


def domain_of(ctx: IommufdCtx, hwpt_id: int) -> IommuDomain:
    obj = ctx.objects[hwpt_id]
    assert isinstance(obj, IommufdHwptPaging) and obj.domain is not None
    return obj.domain


def iopt_of(ctx: IommufdCtx, ioas_id: int) -> IoPagetable:
    obj = ctx.objects[ioas_id]
    assert isinstance(obj, IommufdIoas)
    return obj.iopt


def maps_to(vmm: Vmm, domain: IommuDomain, iova: int, uptr: int, length: int) -> bool:
    """Every page of ``[iova, iova + length)`` translates to the page the process
    maps at the user address."""
    return all(
        iommu_iova_to_phys(domain, iova + off) == user_phys(vmm.task, uptr + off) != 0
        for off in range(0, length, PAGE_SIZE)
    )


def unmapped(domain: IommuDomain, iova: int, length: int) -> bool:
    return all(iommu_iova_to_phys(domain, iova + off) == 0 for off in range(0, length, PAGE_SIZE))


def dsa_resv_regions() -> list[IommuResvRegion]:
    """The DSA's reserved regions as its IOMMU driver reports them."""
    out: list[IommuResvRegion] = []
    iommu_get_resv_regions(pdev(), out)
    return out
