"""Per-device PASID tables and PASID entries (drivers/iommu/intel/pasid.c, pasid.h).

Layout (history §5.1/5.2; facts A10.3/A10.4): a PASID directory of 8-byte entries
indexed by ``pasid >> 6``, each pointing at a lazily allocated 4 KiB table of 64
entries of 64 bytes indexed by ``pasid & 0x3F``. A scalable-mode context entry
points at the directory (``PDTS`` = its size) with RID_PASID = 0, so DMA without
PASID uses the PASID-0 entry.

Entry setup follows one pattern: the entry must not be present (EBUSY), it is
cleared, filled, and P is written last; a new entry needs only the caching-mode
flush (``pasid_flush_caches``). The replace variants require a present entry
(EINVAL) and flush it as a modified entry (``intel_pasid_flush_present``). Tear
down flushes PASID cache -> IOTLB (P_IOTLB for first-stage and pass-through,
domain-selective for second-stage) -> device-TLB -> PRQ drain.

The PRQ drain is :func:`drivers.intel_iommu.prq.intel_iommu_drain_pasid_prq`.

Differences from Linux: no DMA aliases (each device has only its own requester ID);
entries are always coherent (CLFLUSH is not modelled).
"""

from __future__ import annotations

import struct

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.context import (
    context_clear_entry,
    context_hi,
    context_present,
    context_set,
    iommu_context_addr,
)
from drivers.intel_iommu.dmar import (
    iommu_flush_write_buffer,
    qi_flush_dev_iotlb,
    qi_flush_dev_iotlb_pasid,
    qi_flush_pasid_cache,
    qi_flush_piotlb,
)
from drivers.intel_iommu.prq import intel_iommu_drain_pasid_prq
from drivers.intel_iommu.structs import (
    DeviceDomainInfo,
    DmarDomain,
    IntelIommu,
    PasidTable,
    domain_id_iommu,
)
from kernel.bug import WARN, WARN_ON
from kernel.device import Device
from kernel.errno import EBUSY, EINVAL, ENODEV, ENOMEM
from kernel.mm import __GFP_ZERO as GFP_ZERO
from kernel.mm import (
    GFP_ATOMIC,
    GFP_KERNEL,
    PAGE_SHIFT,
    __get_free_pages,
    free_page,
    free_pages,
    get_order,
    get_zeroed_page,
    kfree,
    kzalloc,
    memory_read,
    memory_write,
    phys_to_virt,
    read64,
    virt_to_phys,
    write64,
)
from kernel.pci import pci_max_pasids
from kernel.printk import pr_err

PASID_PDE_SHIFT = 6
PASID_PTE_MASK = 0x3F
PASID_PTE_PRESENT = 1
PASID_PTE_FPD = 2
PASID_TBL_ENTRIES = 1 << PASID_PDE_SHIFT
PASID_ENTRY_SIZE = 64
MAX_NR_PASID_BITS = 20

PASID_ENTRY_PGTT_FL_ONLY = 1
PASID_ENTRY_PGTT_SL_ONLY = 2
PASID_ENTRY_PGTT_NESTED = 3
PASID_QW0_SSADE = 1 << 9
"""Second-stage A/D enable (``pasid_set_ssade``)."""
PASID_ENTRY_PGTT_PT = 4

PASID_FLAG_SUPERVISOR_MODE = 1 << 0
"""Until v6.4 (a7050fbde36e removed it): a first-stage entry for supervisor requests
(SRE, and WPE so a supervisor write honours read-only pages as CR0.WP does on the
CPU). Only the ``kernel-sva`` generation passes it (drivers/intel_iommu/kernel_sva.py)."""
PASID_FLAG_FL5LP = 1 << 1

# Bit positions in the 8 quadwords of a PASID entry (pasid.h setters).
_QW0_AW_SHIFT = 2
_QW0_PGTT_SHIFT = 6
_QW1_PWSNP = 1 << 23
_QW2_SRE = 1 << 0
_QW2_FLPM_SHIFT = 2
_QW2_WPE = 1 << 4

PasidEntry = list[int]
"""``struct pasid_entry``: ``val[0..7]``."""


def _info(dev: Device) -> DeviceDomainInfo:
    info = dev.iommu.priv if dev.iommu is not None else None
    assert isinstance(info, DeviceDomainInfo), f"{dev.init_name}: no VT-d device info"
    return info


# --------------------------------------------------------------------------- tables


def intel_pasid_alloc_table(dev: Device, pasid_max_id: int) -> None:
    """``intel_pasid_alloc_table``: a zeroed directory big enough for
    ``min(pci_max_pasids, intel_pasid_max_id)`` PASIDs (one page minimum)."""
    info = _info(dev)
    if WARN_ON(info.pasid_table is not None):
        raise EINVAL("PASID table already allocated")
    kmem = kzalloc(32, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("pasid_table")
    max_pasid = 0
    if info.pasid_supported:
        max_pasid = min(pci_max_pasids(info.dev), pasid_max_id)
    size = max_pasid >> (PASID_PDE_SHIFT - 3)
    order = get_order(size) if size else 0
    table = __get_free_pages(GFP_KERNEL | GFP_ZERO, order)
    if table is None:
        kfree(kmem)
        raise ENOMEM("pasid directory")
    info.pasid_table = PasidTable(table, order, 1 << (order + PAGE_SHIFT + 3), kmem=kmem)


def intel_pasid_free_table(dev: Device) -> None:
    """``intel_pasid_free_table``: every leaf table, then the directory.

    The directory is read in one piece and decoded at once (C reads it entry by
    entry; a 20-bit PASID space has 16384 directory entries, nearly all empty).
    """
    info = _info(dev)
    pt = info.pasid_table
    if pt is None:
        return
    info.pasid_table = None
    count = pt.max_pasid >> PASID_PDE_SHIFT
    dents = struct.unpack(f"<{count}Q", memory_read(pt.table, 8 * count))
    for dent in dents:
        if dent & PASID_PTE_PRESENT:
            free_page(phys_to_virt(dent & ir.VTD_PAGE_MASK))
    free_pages(pt.table, pt.order)
    kfree(pt.kmem)


def intel_pasid_get_entry(dev: Device, pasid: int) -> int | None:
    """``intel_pasid_get_entry``: the entry's kernel address, allocating its leaf
    table on first use; None (WARN) beyond the table, None without memory."""
    info = _info(dev)
    pt = info.pasid_table
    if WARN_ON(pt is None or pasid >= pt.max_pasid, f"PASID {pasid} beyond the PASID table"):
        return None
    assert pt is not None
    dir_entry = pt.table + 8 * (pasid >> PASID_PDE_SHIFT)
    dent = read64(dir_entry)
    if dent & PASID_PTE_PRESENT:
        entries = phys_to_virt(dent & ir.VTD_PAGE_MASK)
    else:
        new = get_zeroed_page(GFP_ATOMIC)
        if new is None:
            return None
        write64(dir_entry, virt_to_phys(new) | PASID_PTE_PRESENT)
        entries = new
    return entries + (pasid & PASID_PTE_MASK) * PASID_ENTRY_SIZE


def pasid_entry_read(pte: int) -> PasidEntry:
    raw = memory_read(pte, PASID_ENTRY_SIZE)
    return [int.from_bytes(raw[i : i + 8], "little") for i in range(0, PASID_ENTRY_SIZE, 8)]


def pasid_pte_is_present(pte: int) -> bool:
    return bool(read64(pte) & PASID_PTE_PRESENT)


def pasid_pte_get_pgtt(val0: int) -> int:
    return (val0 >> _QW0_PGTT_SHIFT) & 7


def pasid_get_domain_id(pte: int) -> int:
    return read64(pte + 8) & 0xFFFF


def _pasid_entry_write(pte: int, val: PasidEntry) -> None:
    """Write an entry with P last: words 1..7, then word 0 (``WRITE_ONCE`` order)."""
    write64(pte, val[0] & ~PASID_PTE_PRESENT)
    memory_write(pte + 8, b"".join(v.to_bytes(8, "little") for v in val[1:]))
    write64(pte, val[0])


def pasid_clear_entry(pte: int, fpd: bool = False) -> None:
    """``pasid_clear_entry`` (``_with_fpd``: leave only FPD set)."""
    write64(pte, PASID_PTE_FPD if fpd else 0)
    memory_write(pte + 8, bytes(PASID_ENTRY_SIZE - 8))


# --------------------------------------------------------------------------- entry contents


def pasid_pte_config_first_level(
    iommu: IntelIommu, fsptptr: int, did: int, flags: int
) -> PasidEntry:
    """``pasid_pte_config_first_level``: FLPTR, FLPM, DID, AW = unit AGAW, PWSNP per
    ECAP.SMPWC, PGTT = first-stage only, P; with ``PASID_FLAG_SUPERVISOR_MODE`` also
    SRE and WPE (5.15's ``pasid_set_sre`` + ``pasid_enable_wpe``; the model's CPU
    always runs with CR0.WP). (PGSNP is for force-snooping domains, which this
    driver does not offer.)"""
    val = [0] * 8
    val[2] = fsptptr & ir.VTD_PAGE_MASK
    if flags & PASID_FLAG_SUPERVISOR_MODE:
        val[2] |= _QW2_SRE | _QW2_WPE
    if flags & PASID_FLAG_FL5LP:
        val[2] |= 1 << _QW2_FLPM_SHIFT
    val[1] = did & 0xFFFF
    if ir.ecap_smpwc(iommu.ecap):
        val[1] |= _QW1_PWSNP
    val[0] = (iommu.agaw << _QW0_AW_SHIFT) | (PASID_ENTRY_PGTT_FL_ONLY << _QW0_PGTT_SHIFT)
    val[0] |= PASID_PTE_PRESENT
    return val


def pasid_pte_config_second_level(iommu: IntelIommu, pgd: int, did: int, agaw: int) -> PasidEntry:
    """``pasid_pte_config_second_level``: DID, SLPTPTR, AW, PGTT = second-stage only,
    fault processing enabled, PWSNP, P."""
    val = [0] * 8
    val[1] = did & 0xFFFF
    if ir.ecap_smpwc(iommu.ecap):
        val[1] |= _QW1_PWSNP
    val[0] = (pgd & ir.VTD_PAGE_MASK) | (agaw << _QW0_AW_SHIFT)
    val[0] |= (PASID_ENTRY_PGTT_SL_ONLY << _QW0_PGTT_SHIFT) | PASID_PTE_PRESENT
    return val


def pasid_pte_config_pass_through(iommu: IntelIommu, did: int) -> PasidEntry:
    """``pasid_pte_config_pass_through``: DID, AW, PGTT = pass-through, PWSNP, P."""
    val = [0] * 8
    val[1] = did & 0xFFFF
    if ir.ecap_smpwc(iommu.ecap):
        val[1] |= _QW1_PWSNP
    val[0] = (iommu.agaw << _QW0_AW_SHIFT) | (PASID_ENTRY_PGTT_PT << _QW0_PGTT_SHIFT)
    val[0] |= PASID_PTE_PRESENT
    return val


# --------------------------------------------------------------------------- flushes


def pasid_cache_invalidation_with_pasid(iommu: IntelIommu, did: int, pasid: int) -> None:
    """``pasid_cache_invalidation_with_pasid``: PASID-selective within DID."""
    qi_flush_pasid_cache(iommu, did, ir.QI_PC_PASID_SEL, pasid)


def devtlb_invalidation_with_pasid(iommu: IntelIommu, dev: Device, pasid: int) -> None:
    """``devtlb_invalidation_with_pasid``: global device-TLB flush for PASID 0,
    a PASID-based one (all addresses) otherwise; only with ATS enabled."""
    info = _info(dev)
    if not info.ats_enabled:
        return
    if pasid == 0:
        qi_flush_dev_iotlb(iommu, info.sid, info.pfsid, info.ats_qdep, 0, 64 - ir.VTD_PAGE_SHIFT)
    else:
        qi_flush_dev_iotlb_pasid(
            iommu, info.sid, info.pfsid, pasid, info.ats_qdep, 0, 64 - ir.VTD_PAGE_SHIFT
        )


def pasid_flush_caches(iommu: IntelIommu, pasid: int, did: int) -> None:
    """``pasid_flush_caches``: a new (not-present -> present) entry. Caching mode:
    PASID cache and the whole PASID's IOTLB; otherwise only the write buffer."""
    if ir.cap_caching_mode(iommu.cap):
        pasid_cache_invalidation_with_pasid(iommu, did, pasid)
        qi_flush_piotlb(iommu, did, pasid, 0, -1, 0)
    else:
        iommu_flush_write_buffer(iommu)


def intel_pasid_flush_present(iommu: IntelIommu, dev: Device, pasid: int, did: int) -> None:
    """``intel_pasid_flush_present``: a modified present entry (spec 5.0 table 28):
    PASID cache, P_IOTLB of the PASID, device-TLB."""
    pasid_cache_invalidation_with_pasid(iommu, did, pasid)
    qi_flush_piotlb(iommu, did, pasid, 0, -1, 0)
    devtlb_invalidation_with_pasid(iommu, dev, pasid)


# --------------------------------------------------------------------------- setup


def _setup(iommu: IntelIommu, dev: Device, pasid: int, val: PasidEntry) -> None:
    pte = intel_pasid_get_entry(dev, pasid)
    if pte is None:
        raise ENODEV(f"no PASID entry for PASID {pasid}")
    if pasid_pte_is_present(pte):
        raise EBUSY(f"PASID {pasid} entry is already present")
    pasid_clear_entry(pte)
    _pasid_entry_write(pte, val)
    pasid_flush_caches(iommu, pasid, val[1] & 0xFFFF)


def intel_pasid_setup_first_level(
    iommu: IntelIommu, dev: Device, fsptptr: int, pasid: int, did: int, flags: int
) -> None:
    """``intel_pasid_setup_first_level``: EINVAL without FLTS (or 5-level without
    FL5LP, or a supervisor entry without ECAP.SRS as 5.15 checked), ENODEV without
    an entry, EBUSY over a present entry."""
    if not ir.ecap_flts(iommu.ecap):
        pr_err(f"DMAR: No first level translation support on {iommu.name}")
        raise EINVAL(f"{iommu.name}: no first-stage translation")
    if flags & PASID_FLAG_SUPERVISOR_MODE and not ir.ecap_srs(iommu.ecap):
        pr_err(f"DMAR: No supervisor request support on {iommu.name}")
        raise EINVAL(f"{iommu.name}: no supervisor request support")
    if flags & PASID_FLAG_FL5LP and not ir.cap_fl5lp_support(iommu.cap):
        pr_err(f"DMAR: No 5-level paging support for first-level on {iommu.name}")
        raise EINVAL(f"{iommu.name}: no 5-level first-stage paging")
    _setup(iommu, dev, pasid, pasid_pte_config_first_level(iommu, fsptptr, did, flags))


def intel_pasid_setup_second_level(
    iommu: IntelIommu, domain: DmarDomain, dev: Device, pasid: int
) -> None:
    """``intel_pasid_setup_second_level``: EINVAL without SLTS; DID is the
    domain's ID on this unit."""
    if not ir.ecap_slts(iommu.ecap):
        pr_err(f"DMAR: No second level translation support on {iommu.name}")
        raise EINVAL(f"{iommu.name}: no second-stage translation")
    pgd = virt_to_phys(domain.pgd)
    did = domain_id_iommu(domain, iommu)
    val = pasid_pte_config_second_level(iommu, pgd, did, domain.agaw)
    if domain.dirty_tracking:
        val[0] |= PASID_QW0_SSADE
    _setup(iommu, dev, pasid, val)


def intel_pasid_setup_pass_through(iommu: IntelIommu, dev: Device, pasid: int) -> None:
    """``intel_pasid_setup_pass_through``: DID = FLPT_DEFAULT_DID."""
    _setup(iommu, dev, pasid, pasid_pte_config_pass_through(iommu, ir.FLPT_DEFAULT_DID))


def _replace(iommu: IntelIommu, dev: Device, pasid: int, old_did: int, val: PasidEntry) -> None:
    pte = intel_pasid_get_entry(dev, pasid)
    if pte is None:
        raise ENODEV(f"no PASID entry for PASID {pasid}")
    if not pasid_pte_is_present(pte):
        raise EINVAL(f"PASID {pasid} entry is not present: nothing to replace")
    WARN(old_did != pasid_get_domain_id(pte), f"PASID {pasid}: old DID {old_did} mismatch")
    _pasid_entry_write(pte, val)
    intel_pasid_flush_present(iommu, dev, pasid, old_did)
    intel_iommu_drain_pasid_prq(dev, pasid)


def intel_pasid_replace_first_level(
    iommu: IntelIommu, dev: Device, fsptptr: int, pasid: int, did: int, old_did: int, flags: int
) -> None:
    """``intel_pasid_replace_first_level``."""
    if not ir.ecap_flts(iommu.ecap):
        pr_err(f"DMAR: No first level translation support on {iommu.name}")
        raise EINVAL(f"{iommu.name}: no first-stage translation")
    _replace(iommu, dev, pasid, old_did, pasid_pte_config_first_level(iommu, fsptptr, did, flags))


def intel_pasid_replace_second_level(
    iommu: IntelIommu, domain: DmarDomain, dev: Device, old_did: int, pasid: int
) -> None:
    """``intel_pasid_replace_second_level``."""
    if not ir.ecap_slts(iommu.ecap):
        pr_err(f"DMAR: No second level translation support on {iommu.name}")
        raise EINVAL(f"{iommu.name}: no second-stage translation")
    pgd = virt_to_phys(domain.pgd)
    did = domain_id_iommu(domain, iommu)
    val = pasid_pte_config_second_level(iommu, pgd, did, domain.agaw)
    if domain.dirty_tracking:
        val[0] |= PASID_QW0_SSADE
    _replace(iommu, dev, pasid, old_did, val)


def intel_pasid_replace_pass_through(
    iommu: IntelIommu, dev: Device, old_did: int, pasid: int
) -> None:
    """``intel_pasid_replace_pass_through``."""
    val = pasid_pte_config_pass_through(iommu, ir.FLPT_DEFAULT_DID)
    _replace(iommu, dev, pasid, old_did, val)


def intel_pasid_tear_down_entry(
    iommu: IntelIommu, dev: Device, pasid: int, fault_ignore: bool
) -> None:
    """``intel_pasid_tear_down_entry``: clear the entry (leaving FPD with
    ``fault_ignore``), then PASID cache -> IOTLB (P_IOTLB for first-stage and
    pass-through, domain-selective for second-stage) -> device-TLB -> PRQ drain.
    A not-present entry that has FPD set (an SVA leftover) is just cleared."""
    pte = intel_pasid_get_entry(dev, pasid)
    if pte is None:
        return
    val0 = read64(pte)
    if not val0 & PASID_PTE_PRESENT:
        if val0 & PASID_PTE_FPD:
            pasid_clear_entry(pte)
            intel_iommu_drain_pasid_prq(dev, pasid)
        return
    did = pasid_get_domain_id(pte)
    pgtt = pasid_pte_get_pgtt(val0)
    pasid_clear_entry(pte, fpd=fault_ignore)
    pasid_cache_invalidation_with_pasid(iommu, did, pasid)
    if pgtt in (PASID_ENTRY_PGTT_PT, PASID_ENTRY_PGTT_FL_ONLY):
        qi_flush_piotlb(iommu, did, pasid, 0, -1, 0)
    else:
        iommu.flush_iotlb(iommu, did, 0, 0, ir.DMA_TLB_DSI_FLUSH)
    devtlb_invalidation_with_pasid(iommu, dev, pasid)
    if not fault_ignore:
        intel_iommu_drain_pasid_prq(dev, pasid)


# --------------------------------------------------------------------------- context entries


def context_get_sm_pds(table: PasidTable) -> int:
    """``context_get_sm_pds``: PDTS such that 2**(PDTS+7) directory entries."""
    max_pde = table.max_pasid >> PASID_PDE_SHIFT
    pds = (max_pde & -max_pde).bit_length() - 1
    return 0 if pds < 7 else pds - 7


def context_entry_set_pasid_table(context: int, info: DeviceDomainInfo) -> None:
    """``context_entry_set_pasid_table``: directory pointer and PDTS, RID_PASID = 0,
    DTE with ATS, PRE with PRI, PASIDE with PASID support, fault processing on, then P."""
    table = info.pasid_table
    assert table is not None
    lo = virt_to_phys(table.table) | ir.context_pdts(context_get_sm_pds(table))
    if info.ats_supported:
        lo |= ir.CONTEXT_DTE
    if info.pri_supported:
        lo |= ir.CONTEXT_PRE
    if info.pasid_supported:
        lo |= ir.CONTEXT_PASIDE
    context_set(context, lo | ir.CONTEXT_PRESENT, 0)


def intel_pasid_setup_sm_context(dev: Device) -> None:
    """``intel_pasid_setup_sm_context``/``device_pasid_table_setup``: point the
    device's scalable-mode context entry at its PASID table. A new entry needs a
    device-selective context-cache and a DSI IOTLB flush of DID 0 only in caching
    mode."""
    info = _info(dev)
    iommu = info.iommu
    context = iommu_context_addr(iommu, info.bus, info.devfn, True)
    if context is None:
        raise ENOMEM("context table")
    if context_present(context):
        return
    context_entry_set_pasid_table(context, info)
    if ir.cap_caching_mode(iommu.cap):
        iommu.flush_context(iommu, 0, info.sid, ir.DMA_CCMD_MASK_NOBIT, ir.DMA_CCMD_DEVICE_INVL)
        iommu.flush_iotlb(iommu, 0, 0, 0, ir.DMA_TLB_DSI_FLUSH)


def __context_flush_dev_iotlb(info: DeviceDomainInfo) -> None:
    if not info.ats_enabled:
        return
    qi_flush_dev_iotlb(info.iommu, info.sid, info.pfsid, info.ats_qdep, 0, ir.MAX_AGAW_PFN_WIDTH)


def intel_context_flush_no_pasid(info: DeviceDomainInfo, did: int) -> None:
    """``intel_context_flush_no_pasid``: a context entry changed. Device-selective
    context cache; in legacy mode a DSI IOTLB flush too; then the device-TLB."""
    iommu = info.iommu
    iommu.flush_context(iommu, did, info.sid, ir.DMA_CCMD_MASK_NOBIT, ir.DMA_CCMD_DEVICE_INVL)
    if not iommu.sm:
        iommu.flush_iotlb(iommu, did, 0, 0, ir.DMA_TLB_DSI_FLUSH)
    __context_flush_dev_iotlb(info)


def intel_pasid_teardown_sm_context(dev: Device) -> None:
    """``intel_pasid_teardown_sm_context``: clear the context entry and flush it."""
    info = _info(dev)
    context = iommu_context_addr(info.iommu, info.bus, info.devfn, False)
    if context is None:
        return
    did = ir.context_domain_id(context_hi(context))
    context_clear_entry(context)
    intel_context_flush_no_pasid(info, did)
