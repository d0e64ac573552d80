"""The iommufd-facing ops of drivers/iommu/intel/iommu.c (Linux 6.12):
``intel_iommu_hw_info`` and ``intel_iommu_domain_alloc_user``.

``hw_info`` hands user space the unit's raw CAP and ECAP registers in a
``struct iommu_hw_info_vtd``, with the SPR17 erratum flag 6.12 always sets.

``domain_alloc_user`` makes the domains IOMMU_HWPT_ALLOC asks for. User-owned
paging domains are always second-stage tables (6.12: "Do not use first stage for
user domain translation"), so a VMM's IOAS lives in the table format nesting would
put under a guest's first stage. NEST_PARENT needs ECAP.NEST and DIRTY_TRACKING
needs scalable mode with ECAP.SLADS (EOPNOTSUPP otherwise). With a ``parent`` it
makes a nested domain (:mod:`drivers.intel_iommu.nested`): EOPNOTSUPP without
scalable mode and ECAP.NEST, or with any flag. 6.13 split this op into
``domain_alloc_paging_flags`` and ``domain_alloc_nested``.

Dirty tracking (``intel_dirty_ops``): a DIRTY_TRACKING domain gets
:data:`INTEL_DIRTY_OPS`. ``set_dirty_tracking`` sets or clears SSADE in the PASID
entry of every device attached to the domain (RID_PASID, as 6.12: PASID
attachments are not switched) and invalidates as the spec's table 25 asks (PASID
cache, domain-selective IOTLB, device-TLB); a nesting parent also switches the
nested entries built on it (``parent_domain_set_dirty_tracking``).
``read_and_clear_dirty`` walks the
second-stage table and test-and-clears each present leaf's D bit (bit 9), recording
the leaf's whole page size. The caller flushes the IOTLB for what was cleared, so
that the next write sets D again instead of hitting a cached "already dirty" entry.
(``intel_pasid_setup_dirty_tracking`` lives in pasid.c upstream.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.domain import dev_info_of
from drivers.intel_iommu.iommu import ssads_supported
from drivers.intel_iommu.nested import intel_nested_domain_alloc
from drivers.intel_iommu.pasid import (
    PASID_ENTRY_PGTT_NESTED,
    PASID_ENTRY_PGTT_SL_ONLY,
    PASID_QW0_SSADE,
    devtlb_invalidation_with_pasid,
    intel_pasid_get_entry,
    pasid_cache_invalidation_with_pasid,
    pasid_get_domain_id,
    pasid_pte_get_pgtt,
)
from drivers.intel_iommu.pgtable import level_size, pfn_to_dma_pte
from drivers.intel_iommu.structs import DmarDomain, IntelIommu
from kernel.device import Device
from kernel.errno import EINVAL, ENODEV, ENOMEM, EOPNOTSUPP, KernelError
from kernel.fault_inject import should_fail
from kernel.iommu.iommu import iommu_domain_free
from kernel.iommu.iommu_h import IOMMU_DOMAIN_UNMANAGED, IOMMU_NO_PASID, IommuDomain
from kernel.iommufd.iova_bitmap import (
    IOMMU_DIRTY_NO_CLEAR,
    IommuDirtyBitmap,
    iommu_dirty_bitmap_record,
)
from kernel.mm import GFP_ATOMIC, read64, write64
from kernel.printk import dev_err
from kernel.uapi import iommufd as uapi

if TYPE_CHECKING:
    from drivers.intel_iommu.ops import IntelIommuOps


def intel_iommu_hw_info(dev: Device) -> tuple[bytes, int]:
    """``intel_iommu_hw_info``: ``struct iommu_hw_info_vtd`` bytes and its type."""
    if should_fail("kmalloc"):
        raise ENOMEM("iommu_hw_info_vtd (injected)")
    iommu = dev_info_of(dev).iommu
    vtd = uapi.iommu_hw_info_vtd(
        flags=uapi.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, cap_reg=iommu.cap, ecap_reg=iommu.ecap
    )
    return vtd.to_bytes(), uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD


def intel_iommu_domain_alloc_user(
    ops: IntelIommuOps, dev: Device, flags: int, parent: IommuDomain | None, user_data: Any
) -> IommuDomain:
    """``intel_iommu_domain_alloc_user``."""
    iommu = dev_info_of(dev).iommu
    nested_parent = bool(flags & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    dirty_tracking = bool(flags & uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    if parent is not None:
        if not (iommu.sm and ir.ecap_nest(iommu.ecap)) or flags:
            raise EOPNOTSUPP(f"{iommu.name}: no nested translation (ECAP.NEST=0) or flags")
        return intel_nested_domain_alloc(ops, parent, user_data)
    if flags & ~(
        uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
        | uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
        | uapi.IOMMU_HWPT_FAULT_ID_VALID
    ):
        raise EOPNOTSUPP(f"HWPT flags {flags:#x}")
    if nested_parent and not ir.ecap_nest(iommu.ecap):
        raise EOPNOTSUPP(f"{iommu.name}: no nested translation (ECAP.NEST=0)")
    if user_data is not None:
        raise EOPNOTSUPP("vendor data for a paging domain")
    if dirty_tracking and not ssads_supported(iommu):
        raise EOPNOTSUPP(f"{iommu.name}: no second-stage A/D bits (ECAP.SLADS=0)")
    domain = ops.paging_domain_alloc(dev, first_stage=False)
    domain.type = IOMMU_DOMAIN_UNMANAGED  # the owner is set by iommufd, as in C
    if dirty_tracking:
        if not isinstance(domain, DmarDomain) or domain.use_first_level:
            iommu_domain_free(domain)
            raise EOPNOTSUPP("dirty tracking needs a second-stage domain")
        domain.dirty_ops = INTEL_DIRTY_OPS
    if nested_parent and isinstance(domain, DmarDomain):
        domain.nested_parent = True
    return domain


# --------------------------------------------------------------------------- dirty tracking

DMA_SL_PTE_DIRTY = 1 << 9


def intel_pasid_setup_dirty_tracking(
    iommu: IntelIommu, dev: Device, pasid: int, enabled: bool
) -> None:
    """``intel_pasid_setup_dirty_tracking``: SSADE on or off in ``pasid``'s entry;
    ENODEV without an entry, EOPNOTSUPP unless it translates second-stage (or
    nested)."""
    pte = intel_pasid_get_entry(dev, pasid)
    if pte is None:
        dev_err(dev, f"Failed to get pasid entry of PASID {pasid}")
        raise ENODEV(f"no PASID entry for PASID {pasid}")
    val0 = read64(pte)
    did = pasid_get_domain_id(pte)
    pgtt = pasid_pte_get_pgtt(val0)
    if pgtt not in (PASID_ENTRY_PGTT_SL_ONLY, PASID_ENTRY_PGTT_NESTED):
        dev_err(dev, f"Dirty tracking not supported on translation type {pgtt}")
        raise EOPNOTSUPP(f"PASID {pasid}: translation type {pgtt}")
    if bool(val0 & PASID_QW0_SSADE) == enabled:
        return
    write64(pte, val0 | PASID_QW0_SSADE if enabled else val0 & ~PASID_QW0_SSADE)
    pasid_cache_invalidation_with_pasid(iommu, did, pasid)
    iommu.flush_iotlb(iommu, did, 0, 0, ir.DMA_TLB_DSI_FLUSH)
    if not ir.cap_caching_mode(iommu.cap):
        devtlb_invalidation_with_pasid(iommu, dev, pasid)


def _device_set_dirty_tracking(domain: DmarDomain, enable: bool) -> None:
    """``device_set_dirty_tracking``: every attached device's RID_PASID entry."""
    for info in domain.devices:
        intel_pasid_setup_dirty_tracking(info.iommu, info.dev, IOMMU_NO_PASID, enable)


def _parent_domain_set_dirty_tracking(domain: DmarDomain, enable: bool) -> None:
    """``parent_domain_set_dirty_tracking``: the nested PASID entries built on a
    nesting parent carry its SSADE too; on failure the ones done go back."""
    done: list[DmarDomain] = []
    try:
        for s1 in domain.s1_domains:
            _device_set_dirty_tracking(s1, enable)
            done.append(s1)
    except KernelError:
        for s1 in [*done, *domain.s1_domains[len(done) : len(done) + 1]]:
            _device_set_dirty_tracking(s1, domain.dirty_tracking)
        raise


class IntelDirtyOps:
    """``intel_dirty_ops``."""

    def set_dirty_tracking(self, domain: IommuDomain, enabled: bool) -> None:
        """``intel_iommu_set_dirty_tracking``: on failure every device goes back to
        the domain's current state."""
        assert isinstance(domain, DmarDomain)
        if domain.dirty_tracking == enabled:
            return
        try:
            _device_set_dirty_tracking(domain, enabled)
            if domain.nested_parent:
                _parent_domain_set_dirty_tracking(domain, enabled)
        except KernelError:
            _device_set_dirty_tracking(domain, domain.dirty_tracking)
            raise
        domain.dirty_tracking = enabled

    def read_and_clear_dirty(
        self, domain: IommuDomain, iova: int, size: int, flags: int, dirty: IommuDirtyBitmap
    ) -> None:
        """``intel_iommu_read_and_clear_dirty``: EINVAL when asked for a bitmap while
        tracking is off (clearing alone is how iommufd starts clean)."""
        assert isinstance(domain, DmarDomain)
        if not domain.dirty_tracking and dirty.bitmap is not None:
            raise EINVAL("dirty tracking is off")
        end = iova + size - 1
        while iova <= end:
            pte, level = pfn_to_dma_pte(domain, iova >> ir.VTD_PAGE_SHIFT, 0, GFP_ATOMIC)
            pgsize = level_size(level) << ir.VTD_PAGE_SHIFT
            base = iova & ~(pgsize - 1)
            if pte:
                val = read64(pte)
                if val & 3 and val & DMA_SL_PTE_DIRTY:
                    if not flags & IOMMU_DIRTY_NO_CLEAR:
                        write64(pte, val & ~DMA_SL_PTE_DIRTY)
                    iommu_dirty_bitmap_record(dirty, base, pgsize)
            iova = base + pgsize


INTEL_DIRTY_OPS = IntelDirtyOps()
