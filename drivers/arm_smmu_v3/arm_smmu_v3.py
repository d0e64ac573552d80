"""drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c (v6.10-v6.14 flows): bring-up, stream
table and context descriptors, the hitless entry writer, domains, attach and PASID.

- **Bring-up** (``arm_smmu_device_probe``): ``arm_smmu_device_hw_probe`` reads the ID
  registers into ``features``; ``arm_smmu_init_structures`` allocates the command and
  event queues and the stream table (2-level with 256-STE leaves when ST_LEVEL allows
  and SIDSIZE > 8, else linear, every STE abort); ``arm_smmu_device_reset`` runs the
  CR0/CR0ACK sequence: queues, CFGI_ALL and TLBI_NSNH_ALL with CMD_SYNC, the event
  queue, MSIs for the event queue and global errors, then SMMUEN.
- **Entries** are built by pure ``arm_smmu_make_*`` functions and written by
  ``arm_smmu_write_entry``, which compares the bits the SMMU uses now with those it
  will use: when one 64-bit word's used bits change the update is hitless (unused bits
  first, then that word), otherwise V is cleared first. Every step that changed memory
  is followed by CFGI_STE (STEs) or CFGI_CD (CDs, per StreamID of the master) and a
  CMD_SYNC.
- **Domains**: a paging domain is an LPAE stage-1 table with an ASID from one
  system-wide allocator. RID attach writes CD 0 and a CD-table STE with
  S1DSS=SSID0; ``set_dev_pasid`` writes CD[pasid] with the same contents (ASID, TTB0,
  TCR, MAIR) as CD 0 would have; the blocked domain clears a PASID's CD and, when no
  PASID is left and the RID is identity/blocked, turns the STE back into a plain one.
  The identity domain has no ``set_dev_pasid``, so the core refuses PASID attach of it
  with EOPNOTSUPP, as upstream.
- **Invalidation**: the TLB is tagged by ASID, not by PASID, so ``iotlb_sync`` sends
  TLBI_NH_VA(ASID) per granule of the gathered range and one CMD_SYNC, and
  ``flush_iotlb_all`` one TLBI_NH_ASID + CMD_SYNC, however many PASIDs use the domain.

Differences from Linux: the SMMU has no ``struct device`` here (it prints as
``arm-smmu-v3 <unit>``, allocates its tables from the page allocator, naturally
aligned, where Linux uses ``dmam_alloc_coherent``); StreamID = PCI requester ID (an
identity IORT ID mapping); stage 2, nesting, ATS, PRI, stalls and SVA are not
implemented; range invalidation (IDR3.RIL) is detected but not used. The seed-v3
``attach_dev_pasid``/``detach_dev_pasid`` pair is beyond upstream (the 2022 series had
no SMMUv3 part): it is ``set_dev_pasid`` and the blocked domain's PASID teardown.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol, cast

from attrs import define, field

from drivers.arm_smmu_v3 import registers as r
from drivers.arm_smmu_v3.cmdq import (
    ArmSmmuCmdqBatch,
    ArmSmmuCmdqEnt,
    ArmSmmuEvent,
    ArmSmmuLlQueue,
    ArmSmmuQueue,
    arm_smmu_cmdq_batch_add,
    arm_smmu_cmdq_batch_submit,
    arm_smmu_cmdq_issue_cmd,
    arm_smmu_cmdq_issue_cmd_with_sync,
    arm_smmu_evtq_thread,
    arm_smmu_gerror_handler,
)
from drivers.arm_smmu_v3.io_pgtable_arm import (
    ARM_64_LPAE_S1,
    SZ_1G,
    SZ_2M,
    SZ_4K,
    ArmLpaeIoPgtable,
    IoPgtableCfg,
    alloc_io_pgtable_ops,
    free_io_pgtable_ops,
)
from drivers.arm_smmu_v3.registers import FIELD_GET, FIELD_PREP
from kernel.bug import WARN_ON, WARN_ON_ONCE
from kernel.context import KernelSlot
from kernel.delay import readx_poll_timeout
from kernel.device import Device
from kernel.errno import EEXIST, EINVAL, ENODEV, ENOMEM, ENXIO, ERANGE, ETIMEDOUT, KernelError
from kernel.idr import IDA, ida_alloc_range, ida_free
from kernel.io import IoMem, ioremap, iounmap
from kernel.iommu.iommu import (
    IOMMU_CAP_CACHE_COHERENCY,
    IOMMU_CAP_DEFERRED_FLUSH,
    IOMMU_CAP_NOEXEC,
    IOMMU_DOMAIN_BLOCKED,
    IOMMU_DOMAIN_IDENTITY,
    IOMMU_NO_PASID,
    IommuDevice,
    IommuDomain,
    IommuDomainGeometry,
    IommuGroup,
    IommuIotlbGather,
    IommuPagingDomainOps,
    iommu_device_register,
    iommu_device_unregister,
    iommu_get_domain_for_dev,
    iommu_iotlb_gather_add_page,
    pci_device_group,
)
from kernel.irq import (
    IRQF_ONESHOT,
    free_irq,
    irq_alloc,
    irq_free,
    request_irq,
    request_threaded_irq,
)
from kernel.mm import (
    __GFP_ZERO,
    GFP_KERNEL,
    PAGE_SIZE,
    __get_free_pages,
    free_pages,
    get_order,
    kcalloc,
    kfree,
    kzalloc,
    read64,
    virt_to_phys,
    write64,
)
from kernel.pci import (
    PciDev,
    pci_disable_pasid,
    pci_enable_pasid,
    pci_max_pasids,
    pci_pasid_features,
)
from kernel.printk import dev_err, dev_info, dev_warn

VA_BITS = 48
Q_MAX_SZ_SHIFT = 12 + 10  # PAGE_SHIFT + MAX_PAGE_ORDER
STRTAB_L1_SZ_SHIFT = 20


# =========================================================================== structures


class IortSmmuNode(Protocol):
    """What the driver reads from the firmware's IORT SMMUv3 node (the kernel's
    ``IommuUnitInfo``, which drivers do not name)."""

    @property
    def name(self) -> str: ...
    @property
    def register_base(self) -> int: ...
    @property
    def register_size(self) -> int: ...
    @property
    def include_pci_all(self) -> bool: ...
    def covers(self, addr: Any) -> bool: ...


@define(eq=False)
class ArmSmmuStrtabCfg:
    """``struct arm_smmu_strtab_cfg``: a linear table or an L1 table with lazy L2s."""

    two_level: bool = False
    base: int = 0
    base_dma: int = 0
    num_ents: int = 0
    """STEs of a linear table, or L1 descriptors of a 2-level one."""
    l2: dict[int, int] = field(factory=dict)
    """L1 index -> kernel address of its L2 table of STRTAB_NUM_L2_STES STEs."""
    strtab_base: int = 0
    strtab_base_cfg: int = 0


def _placeholder_queue() -> ArmSmmuQueue:
    return ArmSmmuQueue(ArmSmmuLlQueue(0), 0, 0, 0, 2, 0, 0)


@define(eq=False)
class ArmSmmuDevice(IommuDevice):
    """``struct arm_smmu_device`` (it embeds ``struct iommu_device``)."""

    base: IoMem = field(factory=lambda: IoMem(0, 0))
    features: int = 0
    msipoll: bool = False
    """``ARM_SMMU_OPT_MSIPOLL``: CMD_SYNC completion by MSI write-back."""
    ias: int = 0
    oas: int = 0
    asid_bits: int = 0
    vmid_bits: int = 0
    sid_bits: int = 0
    ssid_bits: int = 0
    pgsize_bitmap: int = 0
    cmdq: ArmSmmuQueue = field(factory=_placeholder_queue)
    evtq: ArmSmmuQueue = field(factory=_placeholder_queue)
    strtab_cfg: ArmSmmuStrtabCfg = field(factory=ArmSmmuStrtabCfg)
    streams: dict[int, ArmSmmuMaster] = field(factory=dict)
    """StreamID -> master (Linux's ``smmu->streams`` rb-tree)."""
    evtq_irq: int = 0
    gerr_irq: int = 0
    events: list[ArmSmmuEvent] = field(factory=list)
    """Every event record the event thread decoded (for tests and dumps)."""
    cmds_issued: int = 0
    syncs_issued: int = 0
    cmdq_errors_skipped: int = 0
    coherent_allocs: dict[int, int] = field(factory=dict)
    """Kernel address -> order of the table/queue memory this SMMU owns."""
    kmem: int = 0

    def dev_prefix(self) -> str:
        return f"arm-smmu-v3 {self.name}"


@define(eq=False)
class ArmSmmuCdTable:
    """``struct arm_smmu_ctx_desc_cfg``: a linear CD table or an L1CD table with
    1024-CD leaves allocated on first use."""

    cdtab: int = 0
    cdtab_dma: int = 0
    s1fmt: int = r.STRTAB_STE_0_S1FMT_LINEAR
    s1cdmax: int = 0
    num_ents: int = 0
    """CDs of a linear table, or L1 descriptors of a 2-level one."""
    l2ptrs: list[int] = field(factory=list)
    l2ptrs_kmem: int = 0
    used_ssids: int = 0
    in_ste: bool = False


@define(eq=False)
class ArmSmmuMaster:
    """``struct arm_smmu_master``."""

    smmu: ArmSmmuDevice
    dev: PciDev
    sids: list[int] = field(factory=list)
    ssid_bits: int = 0
    cd_table: ArmSmmuCdTable = field(factory=ArmSmmuCdTable)
    kmem: int = 0
    streams_kmem: int = 0


@define(eq=False)
class ArmSmmuMasterDomain:
    """``struct arm_smmu_master_domain``: one (master, SSID) using a domain."""

    master: ArmSmmuMaster
    ssid: int
    kmem: int = 0


@define(eq=False)
class ArmSmmuDomain(IommuDomain):
    """``struct arm_smmu_domain`` (stage 1 only); its methods are the domain's
    ``iommu_flush_ops`` for io-pgtable (``arm_smmu_flush_ops``)."""

    smmu: ArmSmmuDevice | None = None
    asid: int = 0
    pgtbl_ops: ArmLpaeIoPgtable | None = None
    devices: list[ArmSmmuMasterDomain] = field(factory=list)
    kmem: int = 0

    def tlb_flush_all(self) -> None:
        arm_smmu_tlb_inv_context(self)

    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None:
        arm_smmu_tlb_inv_range_domain(iova, size, granule, False, self)

    def tlb_add_page(self, gather: IommuIotlbGather, iova: int, granule: int) -> None:
        iommu_iotlb_gather_add_page(self, gather, iova, granule)


@define
class ArmSmmuAttachState:
    """``struct arm_smmu_attach_state``."""

    master: ArmSmmuMaster
    old_domain: IommuDomain | None
    ssid: int
    ats_enabled: bool = False


def _to_smmu_domain(domain: IommuDomain | None) -> ArmSmmuDomain | None:
    return domain if isinstance(domain, ArmSmmuDomain) else None


def dev_iommu_priv_get(dev: Device) -> ArmSmmuMaster:
    master = dev.iommu.priv if dev.iommu is not None else None
    if not isinstance(master, ArmSmmuMaster):
        raise ENODEV(f"{dev.init_name}: not an arm-smmu-v3 master")
    return master


# =========================================================================== memory


def _alloc_coherent(smmu: ArmSmmuDevice, size: int) -> tuple[int, int] | None:
    """``dmam_alloc_coherent`` for the SMMU's own structures: zeroed, naturally
    aligned to the power-of-two size (at least a page). (vaddr, dma) or None."""
    order = get_order(max(size, PAGE_SIZE))
    vaddr = __get_free_pages(GFP_KERNEL | __GFP_ZERO, order)
    if vaddr is None:
        return None
    smmu.coherent_allocs[vaddr] = order
    return vaddr, virt_to_phys(vaddr)


def _free_coherent(smmu: ArmSmmuDevice, vaddr: int) -> None:
    order = smmu.coherent_allocs.pop(vaddr, None)
    if order is not None:
        free_pages(vaddr, order)


# =========================================================================== commands


def arm_smmu_sync_ste_for_sid(smmu: ArmSmmuDevice, sid: int) -> None:
    """``arm_smmu_sync_ste_for_sid``: CFGI_STE(sid, leaf) + CMD_SYNC."""
    arm_smmu_cmdq_issue_cmd_with_sync(smmu, ArmSmmuCmdqEnt(r.CMDQ_OP_CFGI_STE, sid=sid, leaf=True))


def arm_smmu_sync_cd(master: ArmSmmuMaster, ssid: int, leaf: bool) -> None:
    """``arm_smmu_sync_cd``: CFGI_CD(sid, ssid, leaf) for every StreamID of the master,
    then one CMD_SYNC."""
    smmu = master.smmu
    cmds = ArmSmmuCmdqBatch(smmu)
    for sid in master.sids:
        arm_smmu_cmdq_batch_add(
            smmu, cmds, ArmSmmuCmdqEnt(r.CMDQ_OP_CFGI_CD, sid=sid, ssid=ssid, leaf=leaf)
        )
    arm_smmu_cmdq_batch_submit(smmu, cmds)


def arm_smmu_tlb_inv_asid(smmu: ArmSmmuDevice, asid: int) -> None:
    """``arm_smmu_tlb_inv_asid``: TLBI_NH_ASID + CMD_SYNC."""
    arm_smmu_cmdq_issue_cmd_with_sync(smmu, ArmSmmuCmdqEnt(r.CMDQ_OP_TLBI_NH_ASID, asid=asid))


def arm_smmu_tlb_inv_context(smmu_domain: ArmSmmuDomain) -> None:
    """``arm_smmu_tlb_inv_context``: the whole ASID (no ATS to invalidate here)."""
    if smmu_domain.smmu is not None:
        arm_smmu_tlb_inv_asid(smmu_domain.smmu, smmu_domain.asid)


def __arm_smmu_tlb_inv_range(
    cmd: ArmSmmuCmdqEnt, iova: int, size: int, granule: int, smmu_domain: ArmSmmuDomain
) -> None:
    """``__arm_smmu_tlb_inv_range`` without range invalidation: one command per
    ``granule`` of ``[iova, iova + size)``, then a CMD_SYNC."""
    smmu = smmu_domain.smmu
    if not size or smmu is None:
        return
    cmds = ArmSmmuCmdqBatch(smmu)
    end = iova + size
    while iova < end:
        cmd.addr = iova
        arm_smmu_cmdq_batch_add(smmu, cmds, cmd)
        iova += granule
    arm_smmu_cmdq_batch_submit(smmu, cmds)


def arm_smmu_tlb_inv_range_domain(
    iova: int, size: int, granule: int, leaf: bool, smmu_domain: ArmSmmuDomain
) -> None:
    """``arm_smmu_tlb_inv_range_domain``: TLBI_NH_VA tagged with the domain's ASID."""
    cmd = ArmSmmuCmdqEnt(r.CMDQ_OP_TLBI_NH_VA, asid=smmu_domain.asid, leaf=leaf)
    __arm_smmu_tlb_inv_range(cmd, iova, size, granule, smmu_domain)


# =========================================================================== entry writer


class ArmSmmuEntryWriter(Protocol):
    """``struct arm_smmu_entry_writer`` + its ops."""

    def get_used(self, ent: list[int]) -> list[int]: ...
    def sync(self) -> None: ...


NUM_ENTRY_QWORDS = 8


def arm_smmu_get_ste_used(ent: list[int]) -> list[int]:
    """``arm_smmu_get_ste_used``: the STE bits the SMMU reads in this configuration."""
    used = [0] * NUM_ENTRY_QWORDS
    used[0] = r.STRTAB_STE_0_V
    if not ent[0] & r.STRTAB_STE_0_V:
        return used
    used[0] |= r.STRTAB_STE_0_CFG
    cfg = FIELD_GET(r.STRTAB_STE_0_CFG, ent[0])
    if cfg & 1:
        used[0] |= r.STRTAB_STE_0_S1FMT | r.STRTAB_STE_0_S1CTXPTR_MASK | r.STRTAB_STE_0_S1CDMAX
        used[1] |= (
            r.STRTAB_STE_1_S1DSS
            | r.STRTAB_STE_1_S1CIR
            | r.STRTAB_STE_1_S1COR
            | r.STRTAB_STE_1_S1CSH
            | r.STRTAB_STE_1_S1STALLD
            | r.STRTAB_STE_1_STRW
            | r.STRTAB_STE_1_EATS
        )
        used[2] |= r.STRTAB_STE_2_S2VMID
        if FIELD_GET(r.STRTAB_STE_1_S1DSS, ent[1]) == r.STRTAB_STE_1_S1DSS_BYPASS:
            used[1] |= r.STRTAB_STE_1_SHCFG
    if cfg == r.STRTAB_STE_0_CFG_BYPASS:
        used[1] |= r.STRTAB_STE_1_SHCFG
    return used


def arm_smmu_get_cd_used(ent: list[int]) -> list[int]:
    """``arm_smmu_get_cd_used``: V alone while invalid, everything once valid (minus
    the TTB0 walk fields when EPD0 disables them)."""
    used = [0] * NUM_ENTRY_QWORDS
    used[0] = r.CTXDESC_CD_0_V
    if not ent[0] & r.CTXDESC_CD_0_V:
        return used
    used = [r.U64_MAX] * NUM_ENTRY_QWORDS
    if ent[0] & r.CTXDESC_CD_0_TCR_EPD0:
        used[0] &= ~(
            r.CTXDESC_CD_0_TCR_T0SZ
            | r.CTXDESC_CD_0_TCR_TG0
            | r.CTXDESC_CD_0_TCR_IRGN0
            | r.CTXDESC_CD_0_TCR_ORGN0
            | r.CTXDESC_CD_0_TCR_SH0
        )
        used[1] &= ~r.CTXDESC_CD_1_TTB0_MASK
    return used


def arm_smmu_entry_qword_diff(
    writer: ArmSmmuEntryWriter, entry: list[int], target: list[int]
) -> tuple[list[int], int]:
    """``arm_smmu_entry_qword_diff``: the entry with every currently unused bit set to
    the target, and a bitmap of the qwords whose used bits must still change."""
    cur_used = writer.get_used(entry)
    target_used = writer.get_used(target)
    unused_update = [0] * NUM_ENTRY_QWORDS
    diff = 0
    for i in range(NUM_ENTRY_QWORDS):
        WARN_ON_ONCE(target[i] & ~target_used[i], "arm-smmu-v3: target sets unused bits")
        unused_update[i] = (entry[i] & cur_used[i]) | (target[i] & ~cur_used[i])
        if (unused_update[i] & target_used[i]) != target[i]:
            diff |= 1 << i
    return unused_update, diff


def entry_set(
    writer: ArmSmmuEntryWriter,
    ptr: int,
    entry: list[int],
    target: list[int],
    start: int,
    length: int,
) -> bool:
    """``entry_set``: write the differing qwords of ``[start, start + length)``; sync
    if anything changed."""
    changed = False
    for i in range(start, start + length):
        if entry[i] != target[i]:
            entry[i] = target[i]
            write64(ptr + 8 * i, target[i])
            changed = True
    if changed:
        writer.sync()
    return changed


def arm_smmu_write_entry(writer: ArmSmmuEntryWriter, ptr: int, target: list[int]) -> None:
    """``arm_smmu_write_entry``: update the live entry at ``ptr`` to ``target`` without
    the SMMU ever seeing a mixture it could misuse."""
    entry = [read64(ptr + 8 * i) for i in range(NUM_ENTRY_QWORDS)]
    unused_update, diff = arm_smmu_entry_qword_diff(writer, entry, target)
    if bin(diff).count("1") == 1:
        # One qword's used bits change: set the unused bits, then that qword at once.
        critical = diff.bit_length() - 1
        unused_update[critical] = entry[critical]
        entry_set(writer, ptr, entry, unused_update, 0, NUM_ENTRY_QWORDS)
        entry_set(writer, ptr, entry, target, critical, 1)
        entry_set(writer, ptr, entry, target, 0, NUM_ENTRY_QWORDS)
    elif diff:
        # A breaking update: V=0, every other qword, then qword 0.
        unused_update[0] = 0
        entry_set(writer, ptr, entry, unused_update, 0, 1)
        entry_set(writer, ptr, entry, target, 1, NUM_ENTRY_QWORDS - 1)
        entry_set(writer, ptr, entry, target, 0, 1)
    else:
        # Only unused bits change.
        entry_set(writer, ptr, entry, target, 0, NUM_ENTRY_QWORDS)


@define
class ArmSmmuSteWriter:
    """``arm_smmu_ste_writer_ops``: sync = CFGI_STE(sid) + CMD_SYNC."""

    smmu: ArmSmmuDevice
    sid: int

    def get_used(self, ent: list[int]) -> list[int]:
        return arm_smmu_get_ste_used(ent)

    def sync(self) -> None:
        arm_smmu_sync_ste_for_sid(self.smmu, self.sid)


@define
class ArmSmmuCdWriter:
    """``arm_smmu_cd_writer_ops``: sync = CFGI_CD(sid, ssid) per StreamID + CMD_SYNC."""

    master: ArmSmmuMaster
    ssid: int

    def get_used(self, ent: list[int]) -> list[int]:
        return arm_smmu_get_cd_used(ent)

    def sync(self) -> None:
        arm_smmu_sync_cd(self.master, self.ssid, True)


# =========================================================================== STEs


def arm_smmu_make_abort_ste() -> list[int]:
    """``arm_smmu_make_abort_ste``."""
    ste = [0] * NUM_ENTRY_QWORDS
    ste[0] = r.STRTAB_STE_0_V | FIELD_PREP(r.STRTAB_STE_0_CFG, r.STRTAB_STE_0_CFG_ABORT)
    return ste


def arm_smmu_make_bypass_ste(smmu: ArmSmmuDevice) -> list[int]:
    """``arm_smmu_make_bypass_ste``."""
    ste = [0] * NUM_ENTRY_QWORDS
    ste[0] = r.STRTAB_STE_0_V | FIELD_PREP(r.STRTAB_STE_0_CFG, r.STRTAB_STE_0_CFG_BYPASS)
    if smmu.features & r.ARM_SMMU_FEAT_ATTR_TYPES_OVR:
        ste[1] = FIELD_PREP(r.STRTAB_STE_1_SHCFG, r.STRTAB_STE_1_SHCFG_INCOMING)
    return ste


def arm_smmu_make_cdtable_ste(master: ArmSmmuMaster, ats_enabled: bool, s1dss: int) -> list[int]:
    """``arm_smmu_make_cdtable_ste``: stage 1 through the master's CD table."""
    smmu = master.smmu
    cd_table = master.cd_table
    ste = [0] * NUM_ENTRY_QWORDS
    ste[0] = (
        r.STRTAB_STE_0_V
        | FIELD_PREP(r.STRTAB_STE_0_CFG, r.STRTAB_STE_0_CFG_S1_TRANS)
        | FIELD_PREP(r.STRTAB_STE_0_S1FMT, cd_table.s1fmt)
        | (cd_table.cdtab_dma & r.STRTAB_STE_0_S1CTXPTR_MASK)
        | FIELD_PREP(r.STRTAB_STE_0_S1CDMAX, cd_table.s1cdmax)
    )
    ste[1] = (
        FIELD_PREP(r.STRTAB_STE_1_S1DSS, s1dss)
        | FIELD_PREP(r.STRTAB_STE_1_S1CIR, r.STRTAB_STE_1_S1C_CACHE_WBRA)
        | FIELD_PREP(r.STRTAB_STE_1_S1COR, r.STRTAB_STE_1_S1C_CACHE_WBRA)
        | FIELD_PREP(r.STRTAB_STE_1_S1CSH, r.ARM_SMMU_SH_ISH)
        | FIELD_PREP(r.STRTAB_STE_1_STRW, r.STRTAB_STE_1_STRW_NSEL1)
    )
    if smmu.features & r.ARM_SMMU_FEAT_STALLS:
        ste[1] |= r.STRTAB_STE_1_S1STALLD
    if ats_enabled:  # pragma: no cover - ATS is not modelled
        ste[1] |= FIELD_PREP(r.STRTAB_STE_1_EATS, r.STRTAB_STE_1_EATS_TRANS)
    if smmu.features & r.ARM_SMMU_FEAT_ATTR_TYPES_OVR and s1dss == r.STRTAB_STE_1_S1DSS_BYPASS:
        ste[1] |= FIELD_PREP(r.STRTAB_STE_1_SHCFG, r.STRTAB_STE_1_SHCFG_INCOMING)
    ste[2] = FIELD_PREP(r.STRTAB_STE_2_S2VMID, 0)
    return ste


def arm_smmu_get_step_for_sid(smmu: ArmSmmuDevice, sid: int) -> int:
    """``arm_smmu_get_step_for_sid``: the kernel address of ``sid``'s STE."""
    cfg = smmu.strtab_cfg
    if cfg.two_level:
        return cfg.l2[sid >> r.STRTAB_SPLIT] + (sid & (r.STRTAB_NUM_L2_STES - 1)) * 64
    return cfg.base + sid * 64


def arm_smmu_write_ste(master: ArmSmmuMaster, sid: int, target: list[int]) -> None:
    """``arm_smmu_write_ste``: the entry writer, then PREFETCH_CFG for the StreamID."""
    smmu = master.smmu
    arm_smmu_write_entry(ArmSmmuSteWriter(smmu, sid), arm_smmu_get_step_for_sid(smmu, sid), target)
    arm_smmu_cmdq_issue_cmd(smmu, ArmSmmuCmdqEnt(r.CMDQ_OP_PREFETCH_CFG, sid=sid))


def arm_smmu_install_ste_for_dev(master: ArmSmmuMaster, target: list[int]) -> None:
    """``arm_smmu_install_ste_for_dev``."""
    master.cd_table.in_ste = FIELD_GET(r.STRTAB_STE_0_CFG, target[0]) == r.STRTAB_STE_0_CFG_S1_TRANS
    for sid in master.sids:
        arm_smmu_write_ste(master, sid, target)


def _init_abort_stes(ptr: int, nent: int) -> None:
    """``arm_smmu_init_initial_stes`` with ``disable_bypass`` (the default): abort."""
    ste = arm_smmu_make_abort_ste()
    for i in range(nent):
        write64(ptr + 64 * i, ste[0])


# =========================================================================== CD tables


def arm_smmu_alloc_cd_tables(master: ArmSmmuMaster) -> None:
    """``arm_smmu_alloc_cd_tables``: linear up to 1024 contexts (or without CD2L),
    else an L1CD table whose 64 KiB leaves come later."""
    smmu = master.smmu
    cd_table = master.cd_table
    cd_table.s1cdmax = master.ssid_bits
    max_contexts = 1 << cd_table.s1cdmax
    if not smmu.features & r.ARM_SMMU_FEAT_2_LVL_CDTAB or max_contexts <= r.CTXDESC_L2_ENTRIES:
        cd_table.s1fmt = r.STRTAB_STE_0_S1FMT_LINEAR
        cd_table.num_ents = max_contexts
        l1size = max_contexts * 64
    else:
        cd_table.s1fmt = r.STRTAB_STE_0_S1FMT_64K_L2
        cd_table.num_ents = -(-max_contexts // r.CTXDESC_L2_ENTRIES)
        kmem = kcalloc(cd_table.num_ents, 8, GFP_KERNEL)
        if kmem is None:
            raise ENOMEM("cd_table l2ptrs")
        cd_table.l2ptrs_kmem = kmem
        cd_table.l2ptrs = [0] * cd_table.num_ents
        l1size = cd_table.num_ents * 8
    got = _alloc_coherent(smmu, l1size)
    if got is None:
        kfree(cd_table.l2ptrs_kmem)
        cd_table.l2ptrs_kmem = 0
        cd_table.l2ptrs = []
        dev_warn(smmu, "failed to allocate context descriptor table")
        raise ENOMEM("context descriptor table")
    cd_table.cdtab, cd_table.cdtab_dma = got


def arm_smmu_free_cd_tables(master: ArmSmmuMaster) -> None:
    """``arm_smmu_free_cd_tables``."""
    smmu = master.smmu
    cd_table = master.cd_table
    for l2 in cd_table.l2ptrs:
        if l2:
            _free_coherent(smmu, l2)
    kfree(cd_table.l2ptrs_kmem)
    _free_coherent(smmu, cd_table.cdtab)
    master.cd_table = ArmSmmuCdTable()


def arm_smmu_get_cd_ptr(master: ArmSmmuMaster, ssid: int) -> int | None:
    """``arm_smmu_get_cd_ptr``: the kernel address of CD ``ssid``, None if its leaf
    does not exist yet."""
    cd_table = master.cd_table
    if not cd_table.cdtab:
        return None
    if cd_table.s1fmt == r.STRTAB_STE_0_S1FMT_LINEAR:
        return cd_table.cdtab + ssid * 64
    l2 = cd_table.l2ptrs[ssid // r.CTXDESC_L2_ENTRIES]
    if not l2:
        return None
    return l2 + (ssid % r.CTXDESC_L2_ENTRIES) * 64


def arm_smmu_alloc_cd_ptr(master: ArmSmmuMaster, ssid: int) -> int | None:
    """``arm_smmu_alloc_cd_ptr``: allocate the CD table and the leaf on demand; a new
    L1CD is followed by CFGI_CD(leaf=0) + CMD_SYNC (an invalid L1CD may be cached)."""
    cd_table = master.cd_table
    if not cd_table.cdtab:
        try:
            arm_smmu_alloc_cd_tables(master)
        except KernelError:
            return None
    if cd_table.s1fmt == r.STRTAB_STE_0_S1FMT_64K_L2:
        idx = ssid // r.CTXDESC_L2_ENTRIES
        if not cd_table.l2ptrs[idx]:
            got = _alloc_coherent(master.smmu, r.CTXDESC_L2_ENTRIES * 64)
            if got is None:
                return None
            cd_table.l2ptrs[idx] = got[0]
            val = (got[1] & r.CTXDESC_L1_DESC_L2PTR_MASK) | r.CTXDESC_L1_DESC_V
            write64(cd_table.cdtab + idx * 8, val)
            arm_smmu_sync_cd(master, ssid, False)
    return arm_smmu_get_cd_ptr(master, ssid)


def arm_smmu_write_cd_entry(
    master: ArmSmmuMaster, ssid: int, cdptr: int, target: list[int]
) -> None:
    """``arm_smmu_write_cd_entry``: counts the PASIDs in use, then the entry writer."""
    target_valid = bool(target[0] & r.CTXDESC_CD_0_V)
    cur_valid = bool(read64(cdptr) & r.CTXDESC_CD_0_V)
    if ssid != IOMMU_NO_PASID and cur_valid != target_valid:
        master.cd_table.used_ssids += -1 if cur_valid else 1
    arm_smmu_write_entry(ArmSmmuCdWriter(master, ssid), cdptr, target)


def arm_smmu_make_s1_cd(master: ArmSmmuMaster, smmu_domain: ArmSmmuDomain) -> list[int]:
    """``arm_smmu_make_s1_cd``: the domain's ASID, TTB0, TCR and MAIR."""
    ops = smmu_domain.pgtbl_ops
    assert ops is not None  # a finalised domain has its tables
    cfg = ops.cfg
    tcr = cfg.tcr
    cd = [0] * NUM_ENTRY_QWORDS
    cd[0] = (
        FIELD_PREP(r.CTXDESC_CD_0_TCR_T0SZ, tcr.tsz)
        | FIELD_PREP(r.CTXDESC_CD_0_TCR_TG0, tcr.tg)
        | FIELD_PREP(r.CTXDESC_CD_0_TCR_IRGN0, tcr.irgn)
        | FIELD_PREP(r.CTXDESC_CD_0_TCR_ORGN0, tcr.orgn)
        | FIELD_PREP(r.CTXDESC_CD_0_TCR_SH0, tcr.sh)
        | r.CTXDESC_CD_0_TCR_EPD1
        | r.CTXDESC_CD_0_V
        | FIELD_PREP(r.CTXDESC_CD_0_TCR_IPS, tcr.ips)
        | r.CTXDESC_CD_0_AA64
        | r.CTXDESC_CD_0_R
        | r.CTXDESC_CD_0_A
        | r.CTXDESC_CD_0_ASET
        | FIELD_PREP(r.CTXDESC_CD_0_ASID, smmu_domain.asid)
    )
    cd[1] = cfg.ttbr & r.CTXDESC_CD_1_TTB0_MASK
    cd[3] = cfg.mair
    return cd


def arm_smmu_clear_cd(master: ArmSmmuMaster, ssid: int) -> None:
    """``arm_smmu_clear_cd``: write an all-zero CD."""
    if not master.cd_table.cdtab:
        return
    cdptr = arm_smmu_get_cd_ptr(master, ssid)
    if WARN_ON(cdptr is None, f"arm-smmu-v3: no CD for SSID {ssid}"):
        return
    assert cdptr is not None
    arm_smmu_write_cd_entry(master, ssid, cdptr, [0] * NUM_ENTRY_QWORDS)


def arm_smmu_ssids_in_use(cd_table: ArmSmmuCdTable) -> bool:
    return cd_table.used_ssids > 0


# =========================================================================== attach


def arm_smmu_attach_prepare(state: ArmSmmuAttachState, new_domain: IommuDomain) -> None:
    """``arm_smmu_attach_prepare``: a paging domain records the (master, SSID)."""
    smmu_domain = _to_smmu_domain(new_domain)
    if smmu_domain is None:
        return
    kmem = kzalloc(48, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("arm_smmu_master_domain")
    smmu_domain.devices.append(ArmSmmuMasterDomain(state.master, state.ssid, kmem))


def arm_smmu_remove_master_domain(
    master: ArmSmmuMaster, domain: IommuDomain | None, ssid: int
) -> None:
    """``arm_smmu_remove_master_domain``."""
    smmu_domain = _to_smmu_domain(domain)
    if smmu_domain is None:
        return
    for md in smmu_domain.devices:
        if md.master is master and md.ssid == ssid:
            smmu_domain.devices.remove(md)
            kfree(md.kmem)
            return


def arm_smmu_attach_commit(state: ArmSmmuAttachState) -> None:
    """``arm_smmu_attach_commit``: the old domain forgets this (master, SSID)."""
    arm_smmu_remove_master_domain(state.master, state.old_domain, state.ssid)


def arm_smmu_attach_dev(domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
    """``arm_smmu_attach_dev``: CD 0 = the domain, STE = CD table with S1DSS=SSID0."""
    master = dev_iommu_priv_get(dev)
    smmu_domain = _to_smmu_domain(domain)
    assert smmu_domain is not None
    if smmu_domain.smmu is not master.smmu:
        raise EINVAL(f"{dev.init_name}: domain belongs to another SMMU")
    cdptr = arm_smmu_alloc_cd_ptr(master, IOMMU_NO_PASID)
    if cdptr is None:
        raise ENOMEM("context descriptor")
    state = ArmSmmuAttachState(master, old, IOMMU_NO_PASID)
    arm_smmu_attach_prepare(state, domain)
    arm_smmu_write_cd_entry(master, IOMMU_NO_PASID, cdptr, arm_smmu_make_s1_cd(master, smmu_domain))
    arm_smmu_install_ste_for_dev(
        master, arm_smmu_make_cdtable_ste(master, state.ats_enabled, r.STRTAB_STE_1_S1DSS_SSID0)
    )
    arm_smmu_attach_commit(state)


def arm_smmu_attach_dev_ste(
    domain: IommuDomain, dev: Device, old: IommuDomain | None, ste: list[int], s1dss: int
) -> None:
    """``arm_smmu_attach_dev_ste``: identity/blocked on the RID; while PASIDs are in
    use the STE stays a CD-table one with ``s1dss`` for non-PASID traffic."""
    master = dev_iommu_priv_get(dev)
    state = ArmSmmuAttachState(master, old, IOMMU_NO_PASID)
    arm_smmu_attach_prepare(state, domain)
    if arm_smmu_ssids_in_use(master.cd_table):
        ste = arm_smmu_make_cdtable_ste(master, state.ats_enabled, s1dss)
    arm_smmu_install_ste_for_dev(master, ste)
    arm_smmu_attach_commit(state)
    arm_smmu_clear_cd(master, IOMMU_NO_PASID)


def arm_smmu_update_ste(master: ArmSmmuMaster, sid_domain: IommuDomain | None) -> None:
    """``arm_smmu_update_ste``: a PASID on a device whose RID is identity/blocked needs
    a CD-table STE whose S1DSS keeps the RID's behaviour."""
    if master.cd_table.in_ste:
        return
    s1dss = r.STRTAB_STE_1_S1DSS_TERMINATE
    if sid_domain is not None and sid_domain.type == IOMMU_DOMAIN_IDENTITY:
        s1dss = r.STRTAB_STE_1_S1DSS_BYPASS
    else:
        WARN_ON(sid_domain is None or sid_domain.type != IOMMU_DOMAIN_BLOCKED)
    arm_smmu_install_ste_for_dev(master, arm_smmu_make_cdtable_ste(master, False, s1dss))


def arm_smmu_set_pasid(
    master: ArmSmmuMaster,
    smmu_domain: ArmSmmuDomain,
    pasid: int,
    cd: list[int],
    old: IommuDomain | None,
) -> None:
    """``arm_smmu_set_pasid``: CD[pasid] = ``cd``, and the STE made a CD-table one if
    it is not already."""
    sid_domain = iommu_get_domain_for_dev(master.dev)
    if smmu_domain.smmu is not master.smmu:
        raise EINVAL(f"{master.dev.init_name}: domain belongs to another SMMU")
    if not master.cd_table.in_ste and (
        sid_domain is None or sid_domain.type not in (IOMMU_DOMAIN_IDENTITY, IOMMU_DOMAIN_BLOCKED)
    ):
        raise EINVAL(f"{master.dev.init_name}: RID domain cannot host PASIDs")
    cdptr = arm_smmu_alloc_cd_ptr(master, pasid)
    if cdptr is None:
        raise ENOMEM("context descriptor")
    state = ArmSmmuAttachState(master, old, pasid)
    arm_smmu_attach_prepare(state, smmu_domain)
    cd[0] = (cd[0] & ~r.CTXDESC_CD_0_ASID) | FIELD_PREP(r.CTXDESC_CD_0_ASID, smmu_domain.asid)
    arm_smmu_write_cd_entry(master, pasid, cdptr, cd)
    arm_smmu_update_ste(master, sid_domain)
    arm_smmu_attach_commit(state)


def arm_smmu_remove_dev_pasid(master: ArmSmmuMaster, pasid: int, old: IommuDomain | None) -> None:
    """``arm_smmu_blocking_set_dev_pasid``: clear CD[pasid]; with no PASID left and the
    RID on identity/blocked, put the plain STE back."""
    arm_smmu_clear_cd(master, pasid)
    arm_smmu_remove_master_domain(master, old, pasid)
    if not arm_smmu_ssids_in_use(master.cd_table):
        sid_domain = iommu_get_domain_for_dev(master.dev)
        if sid_domain is not None and sid_domain.type in (
            IOMMU_DOMAIN_IDENTITY,
            IOMMU_DOMAIN_BLOCKED,
        ):
            assert sid_domain.ops is not None
            sid_domain.ops.attach_dev(sid_domain, master.dev, sid_domain)


# =========================================================================== domain ops


class ArmSmmuDomainOps:
    """``arm_smmu_ops.default_domain_ops`` (stage-1 paging domains)."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        arm_smmu_attach_dev(domain, dev, old)

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        """``arm_smmu_s1_set_dev_pasid``: CD[pasid] gets what CD 0 gets for this domain."""
        master = dev_iommu_priv_get(dev)
        smmu_domain = _to_smmu_domain(domain)
        assert smmu_domain is not None
        if smmu_domain.smmu is not master.smmu:
            raise EINVAL(f"{dev.init_name}: domain belongs to another SMMU")
        arm_smmu_set_pasid(
            master, smmu_domain, pasid, arm_smmu_make_s1_cd(master, smmu_domain), old
        )

    # seed-v3 (beyond upstream: the series had no SMMUv3 part)
    def attach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        self.set_dev_pasid(domain, dev, pasid, None)

    def detach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        arm_smmu_remove_dev_pasid(dev_iommu_priv_get(dev), pasid, domain)

    def map_pages(
        self,
        domain: IommuDomain,
        iova: int,
        paddr: int,
        pgsize: int,
        pgcount: int,
        prot: int,
        gfp: int,
    ) -> int:
        """``arm_smmu_map_pages``."""
        ops = _pgtbl(domain)
        return ops.map_pages(iova, paddr, pgsize, pgcount, prot, gfp)

    def unmap_pages(
        self, domain: IommuDomain, iova: int, pgsize: int, pgcount: int, gather: IommuIotlbGather
    ) -> int:
        """``arm_smmu_unmap_pages``."""
        return _pgtbl(domain).unmap_pages(iova, pgsize, pgcount, gather)

    def iova_to_phys(self, domain: IommuDomain, iova: int) -> int:
        """``arm_smmu_iova_to_phys``."""
        return _pgtbl(domain).iova_to_phys(iova)

    def iotlb_sync(self, domain: IommuDomain, gather: IommuIotlbGather) -> None:
        """``arm_smmu_iotlb_sync``: TLBI_NH_VA(ASID) over the gathered range + CMD_SYNC."""
        smmu_domain = _to_smmu_domain(domain)
        assert smmu_domain is not None
        if not gather.pgsize:
            return
        arm_smmu_tlb_inv_range_domain(
            gather.start, gather.end - gather.start + 1, gather.pgsize, True, smmu_domain
        )

    def flush_iotlb_all(self, domain: IommuDomain) -> None:
        """``arm_smmu_flush_iotlb_all``: TLBI_NH_ASID + CMD_SYNC."""
        smmu_domain = _to_smmu_domain(domain)
        assert smmu_domain is not None
        arm_smmu_tlb_inv_context(smmu_domain)

    def free(self, domain: IommuDomain) -> None:
        """``arm_smmu_domain_free_paging``: free the tables (which flushes the ASID),
        then the ASID."""
        smmu_domain = _to_smmu_domain(domain)
        assert smmu_domain is not None
        free_io_pgtable_ops(smmu_domain.pgtbl_ops)
        smmu_domain.pgtbl_ops = None
        if smmu_domain.asid:
            ida_free(_OPS.get().asid_ida, smmu_domain.asid)
            smmu_domain.asid = 0
        kfree(smmu_domain.kmem)
        smmu_domain.kmem = 0


def _pgtbl(domain: IommuDomain) -> ArmLpaeIoPgtable:
    smmu_domain = _to_smmu_domain(domain)
    assert smmu_domain is not None and smmu_domain.pgtbl_ops is not None
    return smmu_domain.pgtbl_ops


class ArmSmmuIdentityOps:
    """``arm_smmu_identity_ops``: ``attach_dev`` only; no ``set_dev_pasid`` (upstream),
    no tables so no map ops, never freed."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        """``arm_smmu_attach_dev_identity``."""
        master = dev_iommu_priv_get(dev)
        arm_smmu_attach_dev_ste(
            domain, dev, old, arm_smmu_make_bypass_ste(master.smmu), r.STRTAB_STE_1_S1DSS_BYPASS
        )


class ArmSmmuBlockedOps:
    """``arm_smmu_blocked_ops``: ``attach_dev`` and ``set_dev_pasid``; no map ops,
    never freed."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        """``arm_smmu_attach_dev_blocked``."""
        arm_smmu_attach_dev_ste(
            domain, dev, old, arm_smmu_make_abort_ste(), r.STRTAB_STE_1_S1DSS_TERMINATE
        )

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        """``arm_smmu_blocking_set_dev_pasid``."""
        arm_smmu_remove_dev_pasid(dev_iommu_priv_get(dev), pasid, old)


# =========================================================================== iommu_ops


class ArmSmmuOps:
    """``arm_smmu_ops``. One instance per booted kernel (the C statics are per boot);
    the ASID allocator is kernel-wide (``arm_smmu_asid_xa``) and restarted when the
    last SMMU goes away."""

    def __init__(self) -> None:
        self.pgsize_bitmap = 0
        self.identity_domain: IommuDomain | None = IommuDomain(
            type=IOMMU_DOMAIN_IDENTITY, ops=ArmSmmuIdentityOps(), owner=self, name="smmu-identity"
        )
        self.blocked_domain: IommuDomain | None = IommuDomain(
            type=IOMMU_DOMAIN_BLOCKED, ops=ArmSmmuBlockedOps(), owner=self, name="smmu-blocked"
        )
        self.default_domain_ops: IommuPagingDomainOps = ArmSmmuDomainOps()
        self.smmus: list[ArmSmmuDevice] = []
        self.asid_ida = IDA("arm_smmu_asid")

    def _smmu_for(self, dev: PciDev) -> ArmSmmuDevice | None:
        units = sorted(
            (s for s in self.smmus if s.fwnode is not None and s.fwnode.covers(dev.addr)),
            key=lambda s: s.fwnode is not None and s.fwnode.include_pci_all,
        )
        return units[0] if units else None

    def probe_device(self, dev: Device) -> IommuDevice:
        """``arm_smmu_probe_device``: the master, its StreamIDs (with their L2 stream
        tables), and PASID enabled on the PCI function."""
        if not isinstance(dev, PciDev):
            raise ENODEV("arm-smmu-v3 handles PCI masters only")
        smmu = self._smmu_for(dev)
        if smmu is None:
            raise ENODEV("not behind an SMMUv3")
        kmem = kzalloc(256, GFP_KERNEL)
        if kmem is None:
            raise ENOMEM("arm_smmu_master")
        master = ArmSmmuMaster(smmu, dev, kmem=kmem)
        try:
            arm_smmu_insert_master(smmu, master, [dev.rid])
        except KernelError:
            kfree(kmem)
            raise
        assert dev.iommu is not None
        dev.iommu.priv = master
        arm_smmu_enable_pasid(master)
        if not smmu.features & r.ARM_SMMU_FEAT_2_LVL_CDTAB:
            master.ssid_bits = min(master.ssid_bits, r.CTXDESC_LINEAR_CDMAX)
        return smmu

    def release_device(self, dev: Device) -> None:
        """``arm_smmu_release_device``: back to abort, PASID off, CD table freed."""
        master = dev_iommu_priv_get(dev)
        assert self.blocked_domain is not None
        arm_smmu_attach_dev_ste(
            self.blocked_domain,
            dev,
            iommu_get_domain_for_dev(dev),
            arm_smmu_make_abort_ste(),
            r.STRTAB_STE_1_S1DSS_TERMINATE,
        )
        arm_smmu_disable_pasid(master)
        arm_smmu_remove_master(master)
        if master.cd_table.cdtab:
            arm_smmu_free_cd_tables(master)
        kfree(master.kmem)
        assert dev.iommu is not None
        dev.iommu.priv = None

    def device_group(self, dev: Device) -> IommuGroup:
        """``arm_smmu_device_group``: PCI grouping."""
        return pci_device_group(dev)

    def domain_alloc_paging(self, dev: Device) -> IommuDomain:
        """``arm_smmu_domain_alloc_paging``: allocate and finalise (tables + ASID)."""
        master = dev_iommu_priv_get(dev)
        kmem = kzalloc(512, GFP_KERNEL)
        if kmem is None:
            raise ENOMEM("arm_smmu_domain")
        smmu_domain = ArmSmmuDomain(kmem=kmem, name="smmu-paging")
        try:
            arm_smmu_domain_finalise(smmu_domain, master.smmu)
        except KernelError:
            kfree(kmem)
            raise
        return smmu_domain

    def def_domain_type(self, dev: Device) -> int:
        return 0

    def capable(self, dev: Device, cap: int) -> bool:
        """``arm_smmu_capable``."""
        master = dev_iommu_priv_get(dev)
        if cap == IOMMU_CAP_CACHE_COHERENCY:
            return bool(master.smmu.features & r.ARM_SMMU_FEAT_COHERENCY)
        return cap in (IOMMU_CAP_NOEXEC, IOMMU_CAP_DEFERRED_FLUSH)


_OPS: KernelSlot[ArmSmmuOps] = KernelSlot("arm_smmu_v3", ArmSmmuOps)


def arm_smmu_ops() -> ArmSmmuOps:
    """This kernel's ``arm_smmu_ops`` and the driver's statics (SMMU list, ASID IDA)."""
    return _OPS.get()


def arm_smmu_domain_finalise(smmu_domain: ArmSmmuDomain, smmu: ArmSmmuDevice) -> None:
    """``arm_smmu_domain_finalise`` + ``arm_smmu_domain_finalise_s1``."""
    ias = 52 if smmu.features & r.ARM_SMMU_FEAT_VAX else 48
    ias = min(ias, VA_BITS)
    cfg = IoPgtableCfg(
        pgsize_bitmap=smmu.pgsize_bitmap,
        ias=ias,
        oas=smmu.ias,
        tlb=smmu_domain,
        coherent_walk=bool(smmu.features & r.ARM_SMMU_FEAT_COHERENCY),
    )
    ops = alloc_io_pgtable_ops(ARM_64_LPAE_S1, cfg, smmu_domain)
    if ops is None:
        raise ENOMEM("io-pgtable")
    smmu_domain.smmu = smmu
    smmu_domain.pgsize_bitmap = cfg.pgsize_bitmap
    smmu_domain.geometry = IommuDomainGeometry(0, (1 << cfg.ias) - 1, True)
    try:
        smmu_domain.asid = ida_alloc_range(_OPS.get().asid_ida, 1, (1 << smmu.asid_bits) - 1)
    except KernelError:
        free_io_pgtable_ops(ops)
        smmu_domain.smmu = None
        raise
    smmu_domain.pgtbl_ops = ops


# =========================================================================== masters


def arm_smmu_init_l2_strtab(smmu: ArmSmmuDevice, sid: int) -> None:
    """``arm_smmu_init_l2_strtab``: a 256-STE leaf of abort STEs and its L1STD."""
    cfg = smmu.strtab_cfg
    idx = sid >> r.STRTAB_SPLIT
    if idx in cfg.l2:
        return
    got = _alloc_coherent(smmu, r.STRTAB_NUM_L2_STES * 64)
    if got is None:
        dev_err(smmu, f"failed to allocate l2 stream table for SID {sid}")
        raise ENOMEM("l2 stream table")
    cfg.l2[idx] = got[0]
    _init_abort_stes(got[0], r.STRTAB_NUM_L2_STES)
    desc = FIELD_PREP(r.STRTAB_L1_DESC_SPAN, r.STRTAB_SPLIT + 1) | (
        got[1] & r.STRTAB_L1_DESC_L2PTR_MASK
    )
    write64(cfg.base + idx * 8, desc)


def arm_smmu_insert_master(smmu: ArmSmmuDevice, master: ArmSmmuMaster, sids: list[int]) -> None:
    """``arm_smmu_insert_master``: claim the StreamIDs; each must fit SIDSIZE and be
    unique."""
    kmem = kcalloc(len(sids), 16, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("arm_smmu_stream")
    for sid in sids:
        if sid >> smmu.sid_bits:
            kfree(kmem)
            raise ERANGE(f"sid {sid:#x} out of range of {smmu.sid_bits} bits")
        if sid in smmu.streams:
            kfree(kmem)
            dev_warn(smmu, f"Duplicate stream ID {sid:#x}")
            raise EEXIST(f"stream ID {sid:#x} already claimed")
        if smmu.strtab_cfg.two_level:
            try:
                arm_smmu_init_l2_strtab(smmu, sid)
            except KernelError:
                kfree(kmem)
                raise
    for sid in sids:
        smmu.streams[sid] = master
    master.sids = list(sids)
    master.streams_kmem = kmem


def arm_smmu_remove_master(master: ArmSmmuMaster) -> None:
    for sid in master.sids:
        master.smmu.streams.pop(sid, None)
    kfree(master.streams_kmem)
    master.streams_kmem = 0


def arm_smmu_enable_pasid(master: ArmSmmuMaster) -> None:
    """``arm_smmu_enable_pasid``: enable the PCI PASID capability; SSID bits =
    min(log2(max PASIDs), IDR1.SSIDSIZE)."""
    pdev = master.dev
    features = pci_pasid_features(pdev)
    if features < 0:
        return
    num_pasids = pci_max_pasids(pdev)
    try:
        pci_enable_pasid(pdev, features)
    except KernelError:
        dev_err(pdev, "Failed to enable PASID")
        return
    master.ssid_bits = min(num_pasids.bit_length() - 1, master.smmu.ssid_bits)


def arm_smmu_disable_pasid(master: ArmSmmuMaster) -> None:
    pdev = master.dev
    if pdev.pasid_enabled:
        pci_disable_pasid(pdev)


# =========================================================================== bring-up


def arm_smmu_write_reg_sync(smmu: ArmSmmuDevice, val: int, reg_off: int, ack_off: int) -> None:
    """``arm_smmu_write_reg_sync``: write, then poll the ACK register (1 s)."""
    smmu.base.writel(val, reg_off)
    readx_poll_timeout(
        lambda: smmu.base.readl(ack_off), lambda v: v == val, 1, r.ARM_SMMU_POLL_TIMEOUT_US
    )


def arm_smmu_update_gbpa(smmu: ArmSmmuDevice, set_: int, clr: int) -> None:
    """``arm_smmu_update_gbpa``: the Update handshake."""
    base = smmu.base
    try:
        reg = readx_poll_timeout(
            lambda: base.readl(r.ARM_SMMU_GBPA),
            lambda v: not v & r.GBPA_UPDATE,
            1,
            r.ARM_SMMU_POLL_TIMEOUT_US,
        )
        reg = (reg & ~clr) | set_
        base.writel(reg | r.GBPA_UPDATE, r.ARM_SMMU_GBPA)
        readx_poll_timeout(
            lambda: base.readl(r.ARM_SMMU_GBPA),
            lambda v: not v & r.GBPA_UPDATE,
            1,
            r.ARM_SMMU_POLL_TIMEOUT_US,
        )
    except ETIMEDOUT:
        dev_err(smmu, "GBPA not responding to update")
        raise


def arm_smmu_device_disable(smmu: ArmSmmuDevice) -> None:
    """``arm_smmu_device_disable``: CR0 = 0."""
    try:
        arm_smmu_write_reg_sync(smmu, 0, r.ARM_SMMU_CR0, r.ARM_SMMU_CR0ACK)
    except ETIMEDOUT:
        dev_err(smmu, "failed to clear cr0")
        raise


def arm_smmu_device_hw_probe(smmu: ArmSmmuDevice) -> None:
    """``arm_smmu_device_hw_probe``: features and sizes from IDR0/1/3/5."""
    base = smmu.base
    reg = base.readl(r.ARM_SMMU_IDR0)
    if FIELD_GET(r.IDR0_ST_LVL, reg) == r.IDR0_ST_LVL_2LVL:
        smmu.features |= r.ARM_SMMU_FEAT_2_LVL_STRTAB
    if reg & r.IDR0_CD2L:
        smmu.features |= r.ARM_SMMU_FEAT_2_LVL_CDTAB
    endian = FIELD_GET(r.IDR0_TTENDIAN, reg)
    if endian in (r.IDR0_TTENDIAN_MIXED, r.IDR0_TTENDIAN_LE):
        smmu.features |= r.ARM_SMMU_FEAT_TT_LE
    else:
        dev_err(smmu, "unknown/unsupported TT endianness!")
        raise ENXIO("TT endianness")
    if reg & r.IDR0_PRI:
        smmu.features |= r.ARM_SMMU_FEAT_PRI
    if reg & r.IDR0_ATS:
        smmu.features |= r.ARM_SMMU_FEAT_ATS
    if reg & r.IDR0_SEV:
        smmu.features |= r.ARM_SMMU_FEAT_SEV
    if reg & r.IDR0_HYP:
        smmu.features |= r.ARM_SMMU_FEAT_HYP
    coherent = bool(reg & r.IDR0_COHACC)
    if coherent:
        smmu.features |= r.ARM_SMMU_FEAT_COHERENCY
    if reg & r.IDR0_MSI:
        smmu.features |= r.ARM_SMMU_FEAT_MSI
        smmu.msipoll = coherent
    stall = FIELD_GET(r.IDR0_STALL_MODEL, reg)
    if stall == r.IDR0_STALL_MODEL_FORCE:
        smmu.features |= r.ARM_SMMU_FEAT_STALL_FORCE
    if stall in (r.IDR0_STALL_MODEL_FORCE, r.IDR0_STALL_MODEL_STALL):
        smmu.features |= r.ARM_SMMU_FEAT_STALLS
    if reg & r.IDR0_S1P:
        smmu.features |= r.ARM_SMMU_FEAT_TRANS_S1
    if reg & r.IDR0_S2P:
        smmu.features |= r.ARM_SMMU_FEAT_TRANS_S2
    if not smmu.features & r.ARM_SMMU_FEAT_TRANS_S1:
        # This driver builds stage-1 domains only (Linux also accepts S2-only SMMUs).
        dev_err(smmu, "no stage-1 translation support!")
        raise ENXIO("no translation")
    ttf = FIELD_GET(r.IDR0_TTF, reg)
    if ttf == r.IDR0_TTF_AARCH32_64:
        smmu.ias = 40
    elif ttf != r.IDR0_TTF_AARCH64:
        dev_err(smmu, "AArch64 table format not supported!")
        raise ENXIO("table format")
    smmu.asid_bits = 16 if reg & r.IDR0_ASID16 else 8
    smmu.vmid_bits = 16 if reg & r.IDR0_VMID16 else 8

    reg = base.readl(r.ARM_SMMU_IDR1)
    if reg & (r.IDR1_TABLES_PRESET | r.IDR1_QUEUES_PRESET | r.IDR1_REL):
        dev_err(smmu, "embedded implementation not supported")
        raise ENXIO("embedded implementation")
    if reg & r.IDR1_ATTR_TYPES_OVR:
        smmu.features |= r.ARM_SMMU_FEAT_ATTR_TYPES_OVR
    cmdq_shift = min(Q_MAX_SZ_SHIFT - r.CMDQ_ENT_SZ_SHIFT, FIELD_GET(r.IDR1_CMDQS, reg))
    if cmdq_shift <= 6:  # ilog2(CMDQ_BATCH_ENTRIES)
        dev_err(smmu, f"command queue size <= {r.CMDQ_BATCH_ENTRIES} entries not supported")
        raise ENXIO("command queue too small")
    smmu.cmdq.llq.max_n_shift = cmdq_shift
    smmu.evtq.llq.max_n_shift = min(
        Q_MAX_SZ_SHIFT - r.EVTQ_ENT_SZ_SHIFT, FIELD_GET(r.IDR1_EVTQS, reg)
    )
    smmu.ssid_bits = FIELD_GET(r.IDR1_SSIDSIZE, reg)
    smmu.sid_bits = FIELD_GET(r.IDR1_SIDSIZE, reg)
    smmu.max_pasids = 1 << smmu.ssid_bits
    if smmu.sid_bits <= r.STRTAB_SPLIT:
        smmu.features &= ~r.ARM_SMMU_FEAT_2_LVL_STRTAB

    if base.readl(r.ARM_SMMU_IDR3) & r.IDR3_RIL:
        smmu.features |= r.ARM_SMMU_FEAT_RANGE_INV

    reg = base.readl(r.ARM_SMMU_IDR5)
    if FIELD_GET(r.IDR5_VAX, reg) == r.IDR5_VAX_52_BIT:
        smmu.features |= r.ARM_SMMU_FEAT_VAX
    if reg & r.IDR5_GRAN4K:
        smmu.pgsize_bitmap |= SZ_4K | SZ_2M | SZ_1G
    if not smmu.pgsize_bitmap & SZ_4K:
        dev_err(smmu, "no 4K translation granule")
        raise ENXIO("granule")
    oas = FIELD_GET(r.IDR5_OAS, reg)
    if oas >= len(r.OAS_BITS) - 1:
        dev_info(smmu, "unknown output address size. Truncating to 48-bit")
        oas = 5
    smmu.oas = r.OAS_BITS[oas]
    smmu.ias = max(smmu.ias, smmu.oas)
    _OPS.get().pgsize_bitmap |= smmu.pgsize_bitmap
    dev_info(smmu, f"ias {smmu.ias}-bit, oas {smmu.oas}-bit (features 0x{smmu.features:08x})")


def arm_smmu_init_one_queue(
    smmu: ArmSmmuDevice, q: ArmSmmuQueue, prod_off: int, cons_off: int, dwords: int, name: str
) -> None:
    """``arm_smmu_init_one_queue``: the ring (shrunk until it can be allocated) and the
    *_BASE value."""
    while True:
        qsz = ((1 << q.llq.max_n_shift) * dwords) << 3
        got = _alloc_coherent(smmu, qsz)
        if got is not None or qsz < PAGE_SIZE:
            break
        q.llq.max_n_shift -= 1
    if got is None:
        dev_err(smmu, f"failed to allocate queue (0x{qsz:x} bytes) for {name}")
        raise ENOMEM(name)
    q.base, q.base_dma = got
    dev_info(smmu, f"allocated {1 << q.llq.max_n_shift} entries for {name}")
    q.prod_reg, q.cons_reg, q.ent_dwords, q.name = prod_off, cons_off, dwords, name
    q.q_base = (
        r.Q_BASE_RWA
        | (q.base_dma & r.Q_BASE_ADDR_MASK)
        | FIELD_PREP(r.Q_BASE_LOG2SIZE, q.llq.max_n_shift)
    )
    q.llq.prod = q.llq.cons = 0


def arm_smmu_init_strtab(smmu: ArmSmmuDevice) -> None:
    """``arm_smmu_init_strtab_2lvl`` / ``arm_smmu_init_strtab_linear``."""
    cfg = smmu.strtab_cfg
    if smmu.features & r.ARM_SMMU_FEAT_2_LVL_STRTAB:
        size = min(STRTAB_L1_SZ_SHIFT - 3, smmu.sid_bits - r.STRTAB_SPLIT)
        cfg.two_level = True
        cfg.num_ents = 1 << size
        size += r.STRTAB_SPLIT
        if size < smmu.sid_bits:
            dev_warn(smmu, f"2-level strtab only covers {size}/{smmu.sid_bits} bits of SID")
        got = _alloc_coherent(smmu, cfg.num_ents * 8)
        cfg.strtab_base_cfg = (
            FIELD_PREP(r.STRTAB_BASE_CFG_FMT, r.STRTAB_BASE_CFG_FMT_2LVL)
            | FIELD_PREP(r.STRTAB_BASE_CFG_LOG2SIZE, size)
            | FIELD_PREP(r.STRTAB_BASE_CFG_SPLIT, r.STRTAB_SPLIT)
        )
    else:
        cfg.num_ents = 1 << smmu.sid_bits
        got = _alloc_coherent(smmu, cfg.num_ents * 64)
        cfg.strtab_base_cfg = FIELD_PREP(
            r.STRTAB_BASE_CFG_FMT, r.STRTAB_BASE_CFG_FMT_LINEAR
        ) | FIELD_PREP(r.STRTAB_BASE_CFG_LOG2SIZE, smmu.sid_bits)
    if got is None:
        dev_err(smmu, "failed to allocate stream table")
        raise ENOMEM("stream table")
    cfg.base, cfg.base_dma = got
    if not cfg.two_level:
        _init_abort_stes(cfg.base, cfg.num_ents)
    cfg.strtab_base = (cfg.base_dma & r.STRTAB_BASE_ADDR_MASK) | r.STRTAB_BASE_RA


def arm_smmu_init_structures(smmu: ArmSmmuDevice) -> None:
    """``arm_smmu_init_structures``: command queue, event queue, stream table."""
    arm_smmu_init_one_queue(
        smmu, smmu.cmdq, r.ARM_SMMU_CMDQ_PROD, r.ARM_SMMU_CMDQ_CONS, r.CMDQ_ENT_DWORDS, "cmdq"
    )
    arm_smmu_init_one_queue(
        smmu, smmu.evtq, r.ARM_SMMU_EVTQ_PROD, r.ARM_SMMU_EVTQ_CONS, r.EVTQ_ENT_DWORDS, "evtq"
    )
    arm_smmu_init_strtab(smmu)


def _write_msi_msg(smmu: ArmSmmuDevice, irq_desc_msg: tuple[int, int], cfg0: int) -> None:
    """``arm_smmu_write_msi_msg``: doorbell, payload, Device-nGnRE."""
    address, data = irq_desc_msg
    smmu.base.writeq(address & r.MSI_CFG0_ADDR_MASK, cfg0)
    smmu.base.writel(data, cfg0 + 8)
    smmu.base.writel(r.ARM_SMMU_MEMATTR_DEVICE_nGnRE, cfg0 + 0xC)


def arm_smmu_setup_unique_irqs(smmu: ArmSmmuDevice) -> None:
    """``arm_smmu_setup_msis`` + ``arm_smmu_setup_unique_irqs``: an MSI each for the
    event queue (threaded handler) and global errors."""
    smmu.base.writeq(0, r.ARM_SMMU_GERROR_IRQ_CFG0)
    smmu.base.writeq(0, r.ARM_SMMU_EVTQ_IRQ_CFG0)
    if not smmu.features & r.ARM_SMMU_FEAT_MSI:
        dev_warn(smmu, "no evtq irq - events will not be reported!")
        dev_warn(smmu, "no gerr irq - errors will not be reported!")
        return
    evtq = irq_alloc(f"{smmu.name}-evtq")
    gerr = irq_alloc(f"{smmu.name}-gerror")
    _write_msi_msg(smmu, evtq.msi_msg(), r.ARM_SMMU_EVTQ_IRQ_CFG0)
    _write_msi_msg(smmu, gerr.msi_msg(), r.ARM_SMMU_GERROR_IRQ_CFG0)
    request_threaded_irq(evtq.irq, None, _evtq_thread, IRQF_ONESHOT, "arm-smmu-v3-evtq", smmu)
    request_irq(gerr.irq, _gerror_handler, 0, "arm-smmu-v3-gerror", smmu)
    smmu.evtq_irq, smmu.gerr_irq = evtq.irq, gerr.irq


def _evtq_thread(irq: int, smmu: Any) -> int:
    assert isinstance(smmu, ArmSmmuDevice)
    return arm_smmu_evtq_thread(irq, smmu)


def _gerror_handler(irq: int, smmu: Any) -> int:
    assert isinstance(smmu, ArmSmmuDevice)
    return arm_smmu_gerror_handler(irq, smmu)


def arm_smmu_setup_irqs(smmu: ArmSmmuDevice) -> None:
    """``arm_smmu_setup_irqs``: IRQs off, MSIs, then EVTQ and GERROR interrupts on."""
    arm_smmu_write_reg_sync(smmu, 0, r.ARM_SMMU_IRQ_CTRL, r.ARM_SMMU_IRQ_CTRLACK)
    arm_smmu_setup_unique_irqs(smmu)
    irqen = r.IRQ_CTRL_EVTQ_IRQEN | r.IRQ_CTRL_GERROR_IRQEN
    try:
        arm_smmu_write_reg_sync(smmu, irqen, r.ARM_SMMU_IRQ_CTRL, r.ARM_SMMU_IRQ_CTRLACK)
    except ETIMEDOUT:
        dev_warn(smmu, "failed to enable irqs")


def arm_smmu_device_reset(smmu: ArmSmmuDevice) -> None:
    """``arm_smmu_device_reset``: the CR0/CR0ACK bring-up sequence (facts A3)."""
    base = smmu.base
    if base.readl(r.ARM_SMMU_CR0) & r.CR0_SMMUEN:
        dev_warn(smmu, "SMMU currently enabled! Resetting...")
        arm_smmu_update_gbpa(smmu, r.GBPA_ABORT, 0)
    arm_smmu_device_disable(smmu)
    base.writel(
        FIELD_PREP(r.CR1_TABLE_SH, r.ARM_SMMU_SH_ISH)
        | FIELD_PREP(r.CR1_TABLE_OC, r.CR1_CACHE_WB)
        | FIELD_PREP(r.CR1_TABLE_IC, r.CR1_CACHE_WB)
        | FIELD_PREP(r.CR1_QUEUE_SH, r.ARM_SMMU_SH_ISH)
        | FIELD_PREP(r.CR1_QUEUE_OC, r.CR1_CACHE_WB)
        | FIELD_PREP(r.CR1_QUEUE_IC, r.CR1_CACHE_WB),
        r.ARM_SMMU_CR1,
    )
    base.writel(r.CR2_PTM | r.CR2_RECINVSID, r.ARM_SMMU_CR2)
    cfg = smmu.strtab_cfg
    base.writeq(cfg.strtab_base, r.ARM_SMMU_STRTAB_BASE)
    base.writel(cfg.strtab_base_cfg, r.ARM_SMMU_STRTAB_BASE_CFG)
    base.writeq(smmu.cmdq.q_base, r.ARM_SMMU_CMDQ_BASE)
    base.writel(smmu.cmdq.llq.prod, r.ARM_SMMU_CMDQ_PROD)
    base.writel(smmu.cmdq.llq.cons, r.ARM_SMMU_CMDQ_CONS)
    enables = r.CR0_CMDQEN
    arm_smmu_write_reg_sync(smmu, enables, r.ARM_SMMU_CR0, r.ARM_SMMU_CR0ACK)
    arm_smmu_cmdq_issue_cmd_with_sync(smmu, ArmSmmuCmdqEnt(r.CMDQ_OP_CFGI_ALL))
    if smmu.features & r.ARM_SMMU_FEAT_HYP:  # pragma: no cover - the model has no EL2
        arm_smmu_cmdq_issue_cmd_with_sync(smmu, ArmSmmuCmdqEnt(r.CMDQ_OP_TLBI_EL2_ALL))
    arm_smmu_cmdq_issue_cmd_with_sync(smmu, ArmSmmuCmdqEnt(r.CMDQ_OP_TLBI_NSNH_ALL))
    base.writeq(smmu.evtq.q_base, r.ARM_SMMU_EVTQ_BASE)
    base.writel(smmu.evtq.llq.prod, r.ARM_SMMU_EVTQ_PROD)
    base.writel(smmu.evtq.llq.cons, r.ARM_SMMU_EVTQ_CONS)
    enables |= r.CR0_EVTQEN
    arm_smmu_write_reg_sync(smmu, enables, r.ARM_SMMU_CR0, r.ARM_SMMU_CR0ACK)
    arm_smmu_setup_irqs(smmu)
    enables |= r.CR0_SMMUEN
    arm_smmu_write_reg_sync(smmu, enables, r.ARM_SMMU_CR0, r.ARM_SMMU_CR0ACK)


def _free_smmu(smmu: ArmSmmuDevice) -> None:
    for irq in (smmu.evtq_irq, smmu.gerr_irq):
        if irq:
            free_irq(irq, smmu)
            irq_free(irq)
    smmu.evtq_irq = smmu.gerr_irq = 0
    for vaddr in list(smmu.coherent_allocs):
        _free_coherent(smmu, vaddr)
    iounmap(smmu.base)
    kfree(smmu.kmem)
    smmu.kmem = 0


def arm_smmu_device_probe(unit: IortSmmuNode) -> None:
    """``arm_smmu_device_probe``: map the registers, probe, build the structures, reset,
    and register with the IOMMU core."""
    if unit.register_size < r.ARM_SMMU_MMIO_SIZE:
        raise EINVAL(f"{unit.name}: MMIO region too small ({unit.register_size:#x})")
    kmem = kzalloc(1024, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("arm_smmu_device")
    if not _OPS.get().smmus:
        _OPS.get().asid_ida = IDA("arm_smmu_asid")
        _OPS.get().pgsize_bitmap = 0
    smmu = ArmSmmuDevice(
        name=unit.name,
        base=ioremap(unit.register_base, unit.register_size),
        fwnode=cast(Any, unit),
        kmem=kmem,
    )
    try:
        arm_smmu_device_hw_probe(smmu)
        arm_smmu_init_structures(smmu)
        arm_smmu_device_reset(smmu)
    except KernelError:
        if smmu.base.readl(r.ARM_SMMU_CR0):
            with contextlib.suppress(ETIMEDOUT):
                arm_smmu_device_disable(smmu)
        _free_smmu(smmu)
        raise
    _OPS.get().smmus.append(smmu)
    iommu_device_register(smmu, _OPS.get(), cast(Any, unit))


def arm_smmu_device_shutdown() -> None:
    """``arm_smmu_device_remove`` for every SMMU: unregister, disable, free."""
    for smmu in list(_OPS.get().smmus):
        iommu_device_unregister(smmu)
        arm_smmu_device_disable(smmu)
        _free_smmu(smmu)
        _OPS.get().smmus.remove(smmu)


def arm_smmu_smmus() -> list[ArmSmmuDevice]:
    """The SMMUs this driver brought up (for dumps and tests)."""
    return list(_OPS.get().smmus)
