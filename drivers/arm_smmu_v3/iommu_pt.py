"""SMMUv3 stage-1 tables on the generic page table (``iommu.pt=generic``).

:func:`arm_smmu_alloc_pgtbl` is the driver's one selection point: under the default
``iommu.pt=driver`` it is 6.12's ``alloc_io_pgtable_ops(ARM_64_LPAE_S1, ...)``;
under ``iommu.pt=generic`` it builds a generic armv8 table and wraps it in
:class:`ArmSmmuPtPgtable`, which offers the ``io_pgtable_ops`` calls the driver
makes (``map_pages``/``unmap_pages``/``iova_to_phys`` and ``cfg`` with TTB0,
TCR and MAIR for the CD), so the rest of the driver is unchanged.

Upstream has no generic-pt SMMUv3 yet (VT-d and AMD were converted; the ARM format
was posted but not merged), so this follows what the converted drivers do:
tables an unmap empties go through a gather free list and are freed after the
walk-cache invalidation (``tlb_flush_walk``, as io-pgtable-arm flushes before
freeing a table), and cleared leaves are added to the caller's gather page by
page (``tlb_add_page``) unless the gather is queued for the flush queue.

Differences from the default generation: mapping over a live entry is EADDRINUSE
with nothing changed (6.12: WARN and EEXIST, entries before it already written);
a range beyond the input size is ERANGE for map and 0 for unmap without a WARN;
unmap stops at the first hole without a WARN; a block may replace an empty
table; no per-leaf ``iommu_pgtable`` fault point.
"""

from __future__ import annotations

from typing import Any

from drivers.arm_smmu_v3.io_pgtable_arm import (
    ARM_64_LPAE_S1,
    ArmLpaeIoPgtable,
    ArmLpaeS1Tcr,
    IoPgtableCfg,
    alloc_io_pgtable_ops,
    free_io_pgtable_ops,
)
from kernel.bitfield import BIT
from kernel.errno import KernelError
from kernel.iommu.generic_pt import iommu_pt_generic
from kernel.iommu.generic_pt.fmt.armv8 import (
    PtIommuArmv8Cfg,
    pt_iommu_armv8_hw_info,
    pt_iommu_armv8_init,
)
from kernel.iommu.generic_pt.iommu_pt import PtIommu
from kernel.iommu.generic_pt.pt_common import PT_FEAT_FLUSH_RANGE, PtIommuCfg
from kernel.iommu.iommu_h import IommuDomain, IommuIotlbGather
from kernel.mm import GFP_KERNEL, free_page

ARM_LPAE_GRANULE = 1 << 12


class ArmSmmuPtPgtable:
    """A generic armv8 table behind the ``io_pgtable_ops`` calls of the SMMUv3 driver."""

    def __init__(self, cfg: IoPgtableCfg, pt: PtIommu) -> None:
        self.cfg = cfg
        self.pt = pt
        pt.iotlb_sync = self._sync

    @property
    def tables(self) -> int:
        """Table pages currently allocated (the top one included)."""
        return self.pt.tables

    def _sync(self, gather: IommuIotlbGather) -> None:
        """Invalidate the walk caches over the gathered range, then free its tables."""
        if gather.end >= gather.start:
            size = gather.end - gather.start + 1
            self.cfg.tlb.tlb_flush_walk(gather.start, size, ARM_LPAE_GRANULE)
        for page in gather.freelist:
            free_page(page)
        gather.freelist = []

    def map_pages(
        self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, gfp: int
    ) -> int:
        return self.pt.map_pages(iova, paddr, pgsize, pgcount, prot, gfp)

    def unmap_pages(
        self, iova: int, pgsize: int, pgcount: int, gather: IommuIotlbGather | None
    ) -> int:
        tables = IommuIotlbGather()
        got = self.pt.unmap_pages(iova, pgsize, pgcount, tables)
        if tables.freelist:
            self._sync(tables)
        if got and gather is not None and not gather.queued:
            leaf = pgsize if got <= pgsize * pgcount else got
            for off in range(0, got, leaf):
                self.cfg.tlb.tlb_add_page(gather, iova + off, leaf)
        return got

    def iova_to_phys(self, iova: int) -> int:
        return self.pt.iova_to_phys(iova)

    def walk(self, iova: int) -> list[tuple[int, int, int]]:
        """(ARM level, descriptor address, descriptor), as ``ArmLpaeIoPgtable.walk``."""
        return [(3 - level, slot, entry) for level, slot, entry in self.pt.walk(iova)]


ArmSmmuPgtbl = ArmLpaeIoPgtable | ArmSmmuPtPgtable


def arm_smmu_alloc_pgtbl(cfg: IoPgtableCfg, cookie: Any) -> ArmSmmuPgtbl | None:
    """The domain's stage-1 table: io-pgtable-arm (6.12) or, under
    ``iommu.pt=generic``, a generic armv8 table with ``cfg`` filled the same way.
    None on a configuration neither can build or without memory."""
    if not iommu_pt_generic():
        return alloc_io_pgtable_ops(ARM_64_LPAE_S1, cfg, cookie)
    domain = cookie if isinstance(cookie, IommuDomain) else IommuDomain()
    common = PtIommuCfg(BIT(PT_FEAT_FLUSH_RANGE), cfg.ias, cfg.oas)
    try:
        pt = pt_iommu_armv8_init(domain, PtIommuArmv8Cfg(common), GFP_KERNEL)
    except KernelError:
        return None
    cfg.pgsize_bitmap &= domain.pgsize_bitmap
    domain.pgsize_bitmap = cfg.pgsize_bitmap
    info = pt_iommu_armv8_hw_info(pt)
    cfg.ttbr = info.ttbr
    cfg.tcr = ArmLpaeS1Tcr(tsz=info.tsz, ips=info.ips)
    cfg.mair = info.mair
    return ArmSmmuPtPgtable(cfg, pt)


def arm_smmu_free_pgtbl(ops: ArmSmmuPgtbl | None) -> None:
    """``free_io_pgtable_ops``, or for a generic table: invalidate the ASID's TLB
    entries, then free every table (``pt_iommu_deinit``)."""
    if isinstance(ops, ArmSmmuPtPgtable):
        ops.cfg.tlb.tlb_flush_all()
        ops.pt.deinit()
        return
    free_io_pgtable_ops(ops)
