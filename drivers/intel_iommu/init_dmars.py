"""Bringing one DMAR unit up and down (drivers/iommu/intel/iommu.c ``init_dmars`` and
its helpers of Linux 6.12): root table, queued invalidation, global cache flushes,
translation enable/disable, protected memory regions, and the unwind and shutdown of a
unit. Split from drivers/intel_iommu/iommu.py, which keeps domains, attach, map and
probe.
"""

from __future__ import annotations

from typing import Any, cast

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.context import free_context_table, iommu_alloc_root_entry
from drivers.intel_iommu.dmar import (
    IOMMU_WAIT_OP,
    alloc_iommu,
    dmar_set_interrupt,
    dmar_state,
    dmar_writeq,
    iommu_flush_write_buffer,
    pasid_supported,
    qi_flush_pasid_cache,
)
from drivers.intel_iommu.dmar_units import dmar_print_missing_units
from drivers.intel_iommu.iommu import first_level_by_default, intel_iommu_init_qi
from drivers.intel_iommu.prq import intel_iommu_enable_prq, intel_iommu_finish_prq
from drivers.intel_iommu.structs import VTD_FLAG_TRANS_PRE_ENABLED, DrhdUnit, IntelIommu
from drivers.intel_iommu.svm import intel_svm_check
from kernel.bug import WARN_ON
from kernel.errno import ENODEV, KernelError
from kernel.iommu.iommu import iommu_state
from kernel.iommu.iommu_device import iommu_device_register, iommu_device_unregister
from kernel.iommu.iommu_h import IOMMU_DOMAIN_DMA, IOMMU_DOMAIN_DMA_FQ
from kernel.mm import virt_to_phys
from kernel.printk import pr_info, pr_warn


def iommu_set_root_entry(iommu: IntelIommu) -> None:
    """``iommu_set_root_entry``: RTADDR (TTM=scalable with SM), GCMD.SRTP, wait RTPS;
    then, unless CAP.ESRTPS, global context, PASID-cache and IOTLB invalidations."""
    addr = virt_to_phys(iommu.root_entry)
    if iommu.sm:
        addr |= ir.DMA_RTADDR_SMT
    reg = iommu.regs
    dmar_writeq(iommu, ir.DMAR_RTADDR_REG, addr)
    reg.writel(iommu.gcmd | ir.DMA_GCMD_SRTP, ir.DMAR_GCMD_REG)
    IOMMU_WAIT_OP(iommu, ir.DMAR_GSTS_REG, reg.readl, lambda v: bool(v & ir.DMA_GSTS_RTPS))
    if ir.cap_esrtps(iommu.cap):
        return
    iommu.flush_context(iommu, 0, 0, 0, ir.DMA_CCMD_GLOBAL_INVL)
    if iommu.sm:
        qi_flush_pasid_cache(iommu, 0, ir.QI_PC_GLOBAL, 0)
    iommu.flush_iotlb(iommu, 0, 0, 0, ir.DMA_TLB_GLOBAL_FLUSH)


def iommu_enable_translation(iommu: IntelIommu) -> None:
    """``iommu_enable_translation``: GCMD.TE, wait TES."""
    reg = iommu.regs
    iommu.gcmd |= ir.DMA_GCMD_TE
    reg.writel(iommu.gcmd, ir.DMAR_GCMD_REG)
    IOMMU_WAIT_OP(iommu, ir.DMAR_GSTS_REG, reg.readl, lambda v: bool(v & ir.DMA_GSTS_TES))


def iommu_disable_translation(iommu: IntelIommu) -> None:
    """``iommu_disable_translation``: clear TE, wait for TES to clear."""
    reg = iommu.regs
    iommu.gcmd &= ~ir.DMA_GCMD_TE
    reg.writel(iommu.gcmd, ir.DMAR_GCMD_REG)
    IOMMU_WAIT_OP(iommu, ir.DMAR_GSTS_REG, reg.readl, lambda v: not v & ir.DMA_GSTS_TES)


def iommu_disable_protect_mem_regions(iommu: IntelIommu) -> None:
    """``iommu_disable_protect_mem_regions``: with CAP.PLMR/PHMR, clear PMEN.EPM and
    wait for PRS to clear (Linux does this right after enabling translation)."""
    if not ir.cap_plmr(iommu.cap) and not ir.cap_phmr(iommu.cap):
        return
    reg = iommu.regs
    reg.writel(reg.readl(ir.DMAR_PMEN_REG) & ~ir.DMA_PMEN_EPM, ir.DMAR_PMEN_REG)
    IOMMU_WAIT_OP(iommu, ir.DMAR_PMEN_REG, reg.readl, lambda v: not v & ir.DMA_PMEN_PRS)


def init_translation_status(iommu: IntelIommu) -> None:
    if iommu.regs.readl(ir.DMAR_GSTS_REG) & ir.DMA_GSTS_TES:
        iommu.flags |= VTD_FLAG_TRANS_PRE_ENABLED


def iommu_set_dma_strict() -> None:
    """``iommu_set_dma_strict`` (drivers/iommu/iommu.c): strict invalidation, and a
    DMA_FQ default domain type becomes DMA."""
    st = iommu_state()
    st.strict = True
    if st.def_domain_type == IOMMU_DOMAIN_DMA_FQ:
        st.def_domain_type = IOMMU_DOMAIN_DMA


def intel_disable_iommus(iommu: IntelIommu) -> None:
    """``intel_disable_iommus`` for one unit: translation off (``intel_iommu_init``
    does this with ``intel_iommu=off``, in case a previous kernel left it on)."""
    iommu_disable_translation(iommu)


def _unit_of(drhd: DrhdUnit) -> IntelIommu:
    """The unit ``dmar_table_init`` set up for ``drhd`` at early boot; allocated here
    when the driver's module did not run (the table was never parsed)."""
    st = dmar_state()
    for iommu in st.units:
        if iommu.drhd is drhd:
            return iommu
    err = st.unit_errors.get(drhd.name)
    if isinstance(err, KernelError):
        raise err
    if not st.table_parsed:
        return alloc_iommu(drhd)
    raise ENODEV(f"{drhd.name}: not in the parsed DMAR table")


def intel_iommu_init_unit(drhd: DrhdUnit) -> IntelIommu:
    """``intel_iommu_init`` + ``init_dmars`` for one DRHD (the core binds units one at
    a time), on the unit the early DMAR parse allocated and interrupt remapping may
    already use. With ``intel_iommu=off`` translation is switched off and the unit is
    refused. Raises when the unit cannot be brought up; the DMA part is undone, the
    unit itself (queue, interrupt remapping) stays until shutdown."""
    st = dmar_state()
    iommu = _unit_of(drhd)
    if st.dmar_disabled:
        intel_disable_iommus(iommu)
        raise ENODEV("intel_iommu=off")
    dmar_print_missing_units()
    try:
        if pasid_supported(iommu):
            st.pasid_max_id = min(st.pasid_max_id, 2 << ir.ecap_pss(iommu.ecap))
        intel_iommu_init_qi(iommu)
        init_translation_status(iommu)
        if iommu.flags & VTD_FLAG_TRANS_PRE_ENABLED:
            iommu_disable_translation(iommu)
            iommu.flags &= ~VTD_FLAG_TRANS_PRE_ENABLED
            pr_warn(f"DMAR: Translation was enabled for {iommu.name} but we are not in kdump mode")
        iommu_alloc_root_entry(iommu)
        intel_svm_check(iommu)
        iommu_flush_write_buffer(iommu)
        iommu_set_root_entry(iommu)
        if pasid_supported(iommu) and ir.ecap_prs(iommu.ecap):
            intel_iommu_enable_prq(iommu)
        dmar_set_interrupt(iommu)
        stage = "first" if first_level_by_default(iommu) else "second"
        mode = "scalable" if iommu.sm else "legacy"
        pr_info(f"DMAR: {iommu.name}: {mode} mode, {stage}-stage DMA domains")
        if ir.cap_caching_mode(iommu.cap) and not first_level_by_default(iommu):
            if not st.strict_forced:
                pr_info("DMAR: IOMMU batching disallowed due to virtualization")
                st.strict_forced = True
            iommu_set_dma_strict()
        # The firmware unit is the kernel's IommuUnitInfo, which drivers cannot name.
        iommu_device_register(iommu, st.ops, cast(Any, drhd))
        iommu_enable_translation(iommu)
        iommu_disable_protect_mem_regions(iommu)
    except KernelError:
        _unwind_unit(iommu)
        raise
    if not st.announced:
        pr_info("DMAR: Intel(R) Virtualization Technology for Directed I/O")
        st.announced = True
    return iommu


def _unwind_unit(iommu: IntelIommu) -> None:
    if iommu.registered:
        iommu_device_unregister(iommu)
    if iommu.gcmd & ir.DMA_GCMD_TE:
        iommu_disable_translation(iommu)
    if iommu.prq:
        intel_iommu_finish_prq(iommu)
    free_context_table(iommu)


def intel_iommu_shutdown_unit(iommu: IntelIommu) -> None:
    """``disable_dmar_iommu`` + ``free_dmar_iommu``: unregister (the core releases the
    unit's devices), TE off, tables freed. The unit itself, its queue and interrupt
    remapping go last (:func:`.irq_remapping.intel_irq_remapping_shutdown`)."""
    if iommu.registered:
        iommu_device_unregister(iommu)
    WARN_ON(len(iommu.domain_ida) != 0, f"{iommu.name}: domain IDs still in use at shutdown")
    if iommu.gcmd & ir.DMA_GCMD_TE:
        iommu_disable_translation(iommu)
    if iommu.prq:
        intel_iommu_finish_prq(iommu)
    free_context_table(iommu)
