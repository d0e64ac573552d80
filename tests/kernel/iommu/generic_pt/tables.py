"""Generic page tables of every format for the library's own tests: each built on a
plain ``IommuDomain`` in a booted (mock-vendor) kernel, with an ``iotlb_sync`` that
records what it was asked to flush and frees the gather's pages, as a driver's does."""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field

from kernel.bitfield import BIT
from kernel.iommu.generic_pt.fmt import amdv1, armv8, vtdss, x86_64
from kernel.iommu.generic_pt.iommu_pt import PtIommu
from kernel.iommu.generic_pt.pt_common import PT_FEAT_FLUSH_RANGE, PtIommuCfg
from kernel.iommu.iommu_h import IommuDomain, IommuIotlbGather, iommu_iotlb_gather_init
from kernel.mm import GFP_KERNEL, free_page

SZ_4K, SZ_2M, SZ_1G = 1 << 12, 1 << 21, 1 << 30


@define(eq=False)
class Flushes:
    """What the table's owner was asked to flush: (start, end, pages freed)."""

    log: list[tuple[int, int, int]] = field(factory=list)

    def sync(self, gather: IommuIotlbGather) -> None:
        self.log.append((gather.start, gather.end, len(gather.freelist)))
        for page in gather.freelist:
            free_page(page)
        iommu_iotlb_gather_init(gather)


Init = Callable[[IommuDomain, PtIommuCfg, Flushes], PtIommu]


def _x86_64(dom: IommuDomain, common: PtIommuCfg, fl: Flushes) -> PtIommu:
    return x86_64.pt_iommu_x86_64_init(dom, x86_64.PtIommuX86_64Cfg(common), GFP_KERNEL, fl.sync)


def _vtdss(dom: IommuDomain, common: PtIommuCfg, fl: Flushes) -> PtIommu:
    return vtdss.pt_iommu_vtdss_init(dom, vtdss.PtIommuVtdssCfg(common), GFP_KERNEL, fl.sync)


def _armv8(dom: IommuDomain, common: PtIommuCfg, fl: Flushes) -> PtIommu:
    return armv8.pt_iommu_armv8_init(dom, armv8.PtIommuArmv8Cfg(common), GFP_KERNEL, fl.sync)


def _amdv1(dom: IommuDomain, common: PtIommuCfg, fl: Flushes) -> PtIommu:
    cfg = amdv1.PtIommuAmdv1Cfg(common, starting_level=3)
    return amdv1.pt_iommu_amdv1_init(dom, cfg, GFP_KERNEL, fl.sync)


FORMATS: dict[str, Init] = {
    "x86_64": _x86_64,
    "vtdss": _vtdss,
    "armv8": _armv8,
    "amdv1": _amdv1,
}
OASZ = {"x86_64": 52, "vtdss": 52, "armv8": 48, "amdv1": 52}


def make_table(
    fmt: str, vasz: int = 48, features: int = BIT(PT_FEAT_FLUSH_RANGE), bitmap: int | None = None
) -> tuple[PtIommu, IommuDomain, Flushes]:
    """A table of ``fmt`` on a fresh domain (``bitmap`` narrows its page sizes)."""
    dom = IommuDomain(name=f"pt-{fmt}")
    fl = Flushes()
    table = FORMATS[fmt](dom, PtIommuCfg(features, vasz, OASZ[fmt]), fl)
    if bitmap is not None:
        dom.pgsize_bitmap &= bitmap
    return table, dom, fl
