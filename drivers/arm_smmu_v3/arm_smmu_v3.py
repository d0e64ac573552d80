"""drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c (v6.10-v6.14 flows): bring-up, the
``arm_smmu_ops`` (device probe/release, domain allocation), masters and StreamIDs.

- **Bring-up** (``arm_smmu_device_probe``): ``arm_smmu_device_hw_probe`` reads the ID
  registers into ``features``; ``arm_smmu_init_structures`` allocates the command and
  event queues and the stream table (2-level with 256-STE leaves when ST_LEVEL allows
  and SIDSIZE > 8, else linear, every STE abort); ``arm_smmu_device_reset`` runs the
  CR0/CR0ACK sequence: queues, CFGI_ALL and TLBI_NSNH_ALL with CMD_SYNC, the event
  queue, MSIs for the event queue and global errors, then SMMUEN.
- The rest of arm-smmu-v3.c is split by concern: the command and event queues in
  :mod:`drivers.arm_smmu_v3.cmdq`, STEs, CDs and the entry writer in
  :mod:`drivers.arm_smmu_v3.entry_writer`, domains, attach and invalidation in
  :mod:`drivers.arm_smmu_v3.domain`, the structures in
  :mod:`drivers.arm_smmu_v3.structs`.

- **PRI**: with IDR0.PRI the PRI queue is allocated, its MSI set up and PRIQEN set, as
  6.12 does; page requests are then only logged and denied
  (:func:`drivers.arm_smmu_v3.cmdq.arm_smmu_handle_ppr`) because 6.12 never enables
  PRI on a master.

- **Nesting** (Linux 6.13, newer than the 6.12 baseline; ``iommufd.viommu=on``):
  with IDR0.S1P and S2P the SMMU has ``ARM_SMMU_FEAT_NESTING``; a NEST_PARENT
  paging domain is a stage-2 domain (VMID, ``ARM_64_LPAE_S2`` tables), and
  ``hw_info`` / ``viommu_alloc`` come from :mod:`drivers.arm_smmu_v3.iommufd_nested`.

Differences from Linux: StreamID = PCI requester ID (an identity IORT ID mapping);
stage 2 is offered only as a nesting parent (6.13 also uses it for S2-only SMMUs);
ATS, stalls and SVA are not implemented. 6.12's SVA
(arm-smmu-v3-sva.c: ``arm_smmu_sva_domain_alloc``, whose mmu notifier's
``arm_smmu_mm_arch_invalidate_secondary_tlbs`` invalidates the ASID and the ATCs)
shares the CPU's page tables with the SMMU, which needs an arm64 CPU: the
processes of these machines have x86-64 page tables (:mod:`kernel.pgtable`), so
the driver offers no ``domain_alloc_sva``, as an x86 kernel does not build
arm-smmu-v3-sva.c. A device's user SVA bind is therefore EOPNOTSUPP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, cast

from drivers.arm_smmu_v3 import iommufd as smmu_iommufd
from drivers.arm_smmu_v3 import iommufd_nested as smmu_nested
from drivers.arm_smmu_v3 import registers as r
from drivers.arm_smmu_v3.cmdq import (
    ArmSmmuCmdqEnt,
    ArmSmmuQueue,
    arm_smmu_cmdq_issue_cmd_with_sync,
    arm_smmu_evtq_thread,
    arm_smmu_gerror_handler,
    arm_smmu_priq_thread,
)
from drivers.arm_smmu_v3.domain import (
    ARM_SMMU_DOMAIN_S1,
    ARM_SMMU_DOMAIN_S2,
    ArmSmmuBlockedOps,
    ArmSmmuDomain,
    ArmSmmuDomainOps,
    ArmSmmuIdentityOps,
    arm_smmu_attach_dev_ste,
)
from drivers.arm_smmu_v3.entry_writer import (
    arm_smmu_free_cd_tables,
    arm_smmu_init_initial_stes,
    arm_smmu_make_abort_ste,
)
from drivers.arm_smmu_v3.io_pgtable_arm import (
    ARM_64_LPAE_S2,
    IO_PGTABLE_QUIRK_ARM_HD,
    SZ_1G,
    SZ_2M,
    SZ_4K,
    IoPgtableCfg,
    alloc_io_pgtable_ops,
)
from drivers.arm_smmu_v3.iommu_pt import ArmSmmuPgtbl, arm_smmu_alloc_pgtbl, arm_smmu_free_pgtbl
from drivers.arm_smmu_v3.structs import (
    ArmSmmuDevice,
    ArmSmmuMaster,
    IortSmmuNode,
    arm_smmu_alloc_coherent,
    arm_smmu_free_coherent,
    dev_iommu_priv_get,
)
from kernel.bitfield import FIELD_GET, FIELD_PREP
from kernel.context import KernelSlot
from kernel.delay import readx_poll_timeout
from kernel.device import Device, dev_name
from kernel.errno import (
    EEXIST,
    EINVAL,
    ENODEV,
    ENOMEM,
    ENXIO,
    EOPNOTSUPP,
    ERANGE,
    ETIMEDOUT,
    KernelError,
)
from kernel.idr import IDA, ida_alloc_range
from kernel.io import ioremap, iounmap
from kernel.iommu.iommu import (
    IOMMU_DEV_FEAT_IOPF,
    IOMMU_DEV_FEAT_SVA,
    iommu_get_domain_for_dev,
    pci_device_group,
)
from kernel.iommu.iommu_device import iommu_device_register, iommu_device_unregister
from kernel.iommu.iommu_h import (
    IOMMU_CAP_CACHE_COHERENCY,
    IOMMU_CAP_DEFERRED_FLUSH,
    IOMMU_CAP_DIRTY_TRACKING,
    IOMMU_CAP_NOEXEC,
    IOMMU_DOMAIN_BLOCKED,
    IOMMU_DOMAIN_IDENTITY,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_WRITE,
    IommuDevice,
    IommuDomain,
    IommuDomainGeometry,
    IommuGroup,
    IommuPagingDomainOps,
)
from kernel.iommu.iommu_resv import IOMMU_RESV_SW_MSI, IommuResvRegion, iommu_alloc_resv_region
from kernel.iommufd.main import IommufdCtx
from kernel.iommufd.viommu import IommufdViommu, iommufd_viommu_enabled
from kernel.irq import (
    IRQF_ONESHOT,
    free_irq,
    irq_alloc,
    irq_free,
    request_irq,
    request_threaded_irq,
)
from kernel.mm import GFP_KERNEL, PAGE_SIZE, kcalloc, kfree, kzalloc, write64
from kernel.pci import (
    PciDev,
    pci_disable_pasid,
    pci_enable_pasid,
    pci_max_pasids,
    pci_pasid_features,
)
from kernel.printk import dev_err, dev_info, dev_warn
from kernel.uapi.iommufd import IOMMU_HWPT_ALLOC_DIRTY_TRACKING

VA_BITS = 48
Q_MAX_SZ_SHIFT = 12 + 10  # PAGE_SHIFT + MAX_PAGE_ORDER
STRTAB_L1_SZ_SHIFT = 20


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
        self.default_domain_ops: IommuPagingDomainOps = ArmSmmuDomainOps(self)
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
        return self.domain_alloc_finalised(dev, 0, "smmu-paging")

    def domain_alloc_finalised(
        self, dev: Device, flags: int, name: str, stage: int = ARM_SMMU_DOMAIN_S1
    ) -> ArmSmmuDomain:
        """``arm_smmu_domain_alloc`` + ``arm_smmu_domain_finalise(.., flags)``, the part
        ``arm_smmu_domain_alloc_paging`` and ``arm_smmu_domain_alloc_user`` share."""
        master = dev_iommu_priv_get(dev)
        kmem = kzalloc(512, GFP_KERNEL)
        if kmem is None:
            raise ENOMEM("arm_smmu_domain")
        smmu_domain = ArmSmmuDomain(kmem=kmem, name=name, stage=stage)
        smmu_domain.nest_parent = stage == ARM_SMMU_DOMAIN_S2
        try:
            arm_smmu_domain_finalise(smmu_domain, master.smmu, flags)
        except KernelError:
            kfree(kmem)
            raise
        return smmu_domain

    def domain_alloc_user(
        self, dev: Device, flags: int, parent: IommuDomain | None, user_data: Any
    ) -> IommuDomain:
        """``arm_smmu_domain_alloc_user`` (iommufd's IOMMU_HWPT_ALLOC); under
        ``iommufd.viommu=on`` 6.13's ``arm_smmu_domain_alloc_paging_flags``."""
        if iommufd_viommu_enabled():
            return smmu_nested.arm_smmu_domain_alloc_paging_flags(
                self, dev, flags, parent, user_data
            )
        return smmu_iommufd.arm_smmu_domain_alloc_user(self, dev, flags, parent, user_data)

    @property
    def hw_info(self) -> Callable[[Device], tuple[bytes, int]] | None:
        """``arm_smmu_hw_info`` (6.13): only under ``iommufd.viommu=on`` (6.12 has none)."""
        return smmu_nested.arm_smmu_hw_info if iommufd_viommu_enabled() else None

    @property
    def viommu_alloc(
        self,
    ) -> Callable[[Device, IommuDomain, IommufdCtx, int], IommufdViommu] | None:
        """``arm_vsmmu_alloc`` (6.13): only under ``iommufd.viommu=on``."""
        return smmu_nested.arm_vsmmu_alloc if iommufd_viommu_enabled() else None

    def def_domain_type(self, dev: Device) -> int:
        return 0

    def capable(self, dev: Device, cap: int) -> bool:
        """``arm_smmu_capable``."""
        master = dev_iommu_priv_get(dev)
        if cap == IOMMU_CAP_CACHE_COHERENCY:
            return bool(master.smmu.features & r.ARM_SMMU_FEAT_COHERENCY)
        if cap == IOMMU_CAP_DIRTY_TRACKING:
            return arm_smmu_dbm_capable(master.smmu)
        return cap in (IOMMU_CAP_NOEXEC, IOMMU_CAP_DEFERRED_FLUSH)

    def get_resv_regions(self, dev: Device, head: list[IommuResvRegion]) -> None:
        """``arm_smmu_get_resv_regions``: the software MSI window (MSI_IOVA_BASE, 1 MiB)
        dma-iommu maps MSI doorbells into. Linux then adds the firmware's IORT RMR
        regions (``iommu_dma_get_resv_regions``); the machine declares none."""
        head.append(
            iommu_alloc_resv_region(
                MSI_IOVA_BASE,
                MSI_IOVA_LENGTH,
                IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_MMIO,
                IOMMU_RESV_SW_MSI,
            )
        )

    def dev_enable_feat(self, dev: Device, feat: int) -> None:
        """``arm_smmu_dev_enable_feature``: ENODEV for a device it does not manage;
        IOPF and SVA are EINVAL unless the master supports them. Neither can here:
        IOPF needs a stall-capable master with one StreamID
        (``arm_smmu_master_iopf_supported``: PCI functions use PRI, which 6.12 never
        enables on a master) and SVA is in arm-smmu-v3-sva.c, which this build lacks
        (its stubs say unsupported). So attaching a fault-capable HWPT through
        iommufd is EINVAL on SMMUv3."""
        if dev_iommu_priv_get(dev) is None:
            raise ENODEV(f"{dev_name(dev)}: not an SMMUv3 master")
        if feat == IOMMU_DEV_FEAT_IOPF:
            raise EINVAL(f"{dev_name(dev)}: IOPF needs a stall-capable master")
        if feat == IOMMU_DEV_FEAT_SVA:
            raise EINVAL(f"{dev_name(dev)}: SVA is not built (arm-smmu-v3-sva.c)")
        raise EINVAL(f"{dev_name(dev)}: device feature {feat}")

    def dev_disable_feat(self, dev: Device, feat: int) -> None:
        """``arm_smmu_dev_disable_feature``: nothing was ever enabled (EINVAL)."""
        if dev_iommu_priv_get(dev) is None:
            raise EINVAL(f"{dev_name(dev)}: not an SMMUv3 master")
        raise EINVAL(f"{dev_name(dev)}: device feature {feat} is not enabled")


MSI_IOVA_BASE = 0x800_0000
MSI_IOVA_LENGTH = 0x10_0000

_OPS: KernelSlot[ArmSmmuOps] = KernelSlot("arm_smmu_v3", ArmSmmuOps)


def arm_smmu_ops() -> ArmSmmuOps:
    return _OPS.get()


def arm_smmu_get_httu(smmu: ArmSmmuDevice, reg: int) -> None:
    """``arm_smmu_get_httu``: IDR0.HTTU as features (the firmware-override and CPU
    checks Linux makes have nothing to compare against here)."""
    httu = FIELD_GET(r.IDR0_HTTU, reg)
    if httu == r.IDR0_HTTU_ACCESS_DIRTY:
        smmu.features |= r.ARM_SMMU_FEAT_HD | r.ARM_SMMU_FEAT_HA
    elif httu == r.IDR0_HTTU_ACCESS:
        smmu.features |= r.ARM_SMMU_FEAT_HA


def arm_smmu_dbm_capable(smmu: ArmSmmuDevice) -> bool:
    """``arm_smmu_dbm_capable``: dirty state needs HD and coherent table walks."""
    want = r.ARM_SMMU_FEAT_HD | r.ARM_SMMU_FEAT_COHERENCY
    return smmu.features & want == want


def arm_smmu_domain_finalise(
    smmu_domain: ArmSmmuDomain, smmu: ArmSmmuDevice, flags: int = 0
) -> None:
    """``arm_smmu_domain_finalise`` + ``arm_smmu_domain_finalise_s1`` (or ``_s2`` for
    a stage-2 domain: ``ARM_64_LPAE_S2`` tables over the SMMU's IAS/OAS and a
    VMID); ``flags`` IOMMU_HWPT_ALLOC_DIRTY_TRACKING adds the HD quirk and the dirty
    ops (a stage-2 domain refuses it, EOPNOTSUPP, as 6.13)."""
    enable_dirty = bool(flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    stage2 = smmu_domain.stage == ARM_SMMU_DOMAIN_S2
    if stage2:
        if enable_dirty:
            raise EOPNOTSUPP("a stage-2 domain cannot track dirty pages")
        ias, oas = smmu.ias, smmu.oas
    else:
        ias = 52 if smmu.features & r.ARM_SMMU_FEAT_VAX else 48
        ias, oas = min(ias, VA_BITS), smmu.ias
    cfg = IoPgtableCfg(
        pgsize_bitmap=smmu.pgsize_bitmap,
        ias=ias,
        oas=oas,
        tlb=smmu_domain,
        coherent_walk=bool(smmu.features & r.ARM_SMMU_FEAT_COHERENCY),
    )
    if enable_dirty:
        cfg.quirks |= IO_PGTABLE_QUIRK_ARM_HD
    ops: ArmSmmuPgtbl | None
    if stage2:
        # io-pgtable-arm under either iommu.pt (the generic table has no stage 2 here)
        ops = alloc_io_pgtable_ops(ARM_64_LPAE_S2, cfg, smmu_domain)
    else:
        ops = arm_smmu_alloc_pgtbl(cfg, smmu_domain)  # iommu.pt: io-pgtable or generic_pt
    if ops is None:
        raise ENOMEM("io-pgtable")
    smmu_domain.smmu = smmu
    smmu_domain.pgsize_bitmap = cfg.pgsize_bitmap
    smmu_domain.geometry = IommuDomainGeometry(0, (1 << cfg.ias) - 1, True)
    try:
        if stage2:
            # arm_smmu_domain_finalise_s2: VMID 0 stays for stage-1 and bypass STEs
            smmu_domain.vmid = ida_alloc_range(smmu.vmid_map, 1, (1 << smmu.vmid_bits) - 1)
        else:
            smmu_domain.asid = ida_alloc_range(_OPS.get().asid_ida, 1, (1 << smmu.asid_bits) - 1)
    except KernelError:
        arm_smmu_free_pgtbl(ops)
        smmu_domain.smmu = None
        raise
    smmu_domain.pgtbl_ops = ops
    if enable_dirty:
        smmu_domain.dirty_ops = smmu_iommufd.ARM_SMMU_DIRTY_OPS


# =========================================================================== masters


def arm_smmu_init_l2_strtab(smmu: ArmSmmuDevice, sid: int) -> None:
    """``arm_smmu_init_l2_strtab``: a 256-STE leaf of abort STEs and its L1STD."""
    cfg = smmu.strtab_cfg
    idx = sid >> r.STRTAB_SPLIT
    if idx in cfg.l2:
        return
    got = arm_smmu_alloc_coherent(smmu, r.STRTAB_NUM_L2_STES * 64)
    if got is None:
        dev_err(smmu, f"failed to allocate l2 stream table for SID {sid}")
        raise ENOMEM("l2 stream table")
    cfg.l2[idx] = got[0]
    arm_smmu_init_initial_stes(got[0], r.STRTAB_NUM_L2_STES)
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
    arm_smmu_get_httu(smmu, reg)
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
    if smmu.features & r.ARM_SMMU_FEAT_TRANS_S1 and smmu.features & r.ARM_SMMU_FEAT_TRANS_S2:
        smmu.features |= r.ARM_SMMU_FEAT_NESTING
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
    smmu.priq.llq.max_n_shift = min(
        Q_MAX_SZ_SHIFT - r.PRIQ_ENT_SZ_SHIFT, FIELD_GET(r.IDR1_PRIQS, reg)
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
        got = arm_smmu_alloc_coherent(smmu, qsz)
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
        got = arm_smmu_alloc_coherent(smmu, cfg.num_ents * 8)
        cfg.strtab_base_cfg = (
            FIELD_PREP(r.STRTAB_BASE_CFG_FMT, r.STRTAB_BASE_CFG_FMT_2LVL)
            | FIELD_PREP(r.STRTAB_BASE_CFG_LOG2SIZE, size)
            | FIELD_PREP(r.STRTAB_BASE_CFG_SPLIT, r.STRTAB_SPLIT)
        )
    else:
        cfg.num_ents = 1 << smmu.sid_bits
        got = arm_smmu_alloc_coherent(smmu, cfg.num_ents * 64)
        cfg.strtab_base_cfg = FIELD_PREP(
            r.STRTAB_BASE_CFG_FMT, r.STRTAB_BASE_CFG_FMT_LINEAR
        ) | FIELD_PREP(r.STRTAB_BASE_CFG_LOG2SIZE, smmu.sid_bits)
    if got is None:
        dev_err(smmu, "failed to allocate stream table")
        raise ENOMEM("stream table")
    cfg.base, cfg.base_dma = got
    if not cfg.two_level:
        arm_smmu_init_initial_stes(cfg.base, cfg.num_ents)
    cfg.strtab_base = (cfg.base_dma & r.STRTAB_BASE_ADDR_MASK) | r.STRTAB_BASE_RA


def arm_smmu_init_structures(smmu: ArmSmmuDevice) -> None:
    """``arm_smmu_init_structures``: command queue, event queue, PRI queue (with
    IDR0.PRI), stream table."""
    arm_smmu_init_one_queue(
        smmu, smmu.cmdq, r.ARM_SMMU_CMDQ_PROD, r.ARM_SMMU_CMDQ_CONS, r.CMDQ_ENT_DWORDS, "cmdq"
    )
    arm_smmu_init_one_queue(
        smmu, smmu.evtq, r.ARM_SMMU_EVTQ_PROD, r.ARM_SMMU_EVTQ_CONS, r.EVTQ_ENT_DWORDS, "evtq"
    )
    if smmu.features & r.ARM_SMMU_FEAT_PRI:
        arm_smmu_init_one_queue(
            smmu, smmu.priq, r.ARM_SMMU_PRIQ_PROD, r.ARM_SMMU_PRIQ_CONS, r.PRIQ_ENT_DWORDS, "priq"
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
    if smmu.features & r.ARM_SMMU_FEAT_PRI:
        smmu.base.writeq(0, r.ARM_SMMU_PRIQ_IRQ_CFG0)
        priq = irq_alloc(f"{smmu.name}-priq")
        _write_msi_msg(smmu, priq.msi_msg(), r.ARM_SMMU_PRIQ_IRQ_CFG0)
        request_threaded_irq(priq.irq, None, _priq_thread, IRQF_ONESHOT, "arm-smmu-v3-priq", smmu)
        smmu.priq_irq = priq.irq


def _evtq_thread(irq: int, smmu: Any) -> int:
    assert isinstance(smmu, ArmSmmuDevice)
    return arm_smmu_evtq_thread(irq, smmu)


def _priq_thread(irq: int, smmu: Any) -> int:
    assert isinstance(smmu, ArmSmmuDevice)
    return arm_smmu_priq_thread(irq, smmu)


def _gerror_handler(irq: int, smmu: Any) -> int:
    assert isinstance(smmu, ArmSmmuDevice)
    return arm_smmu_gerror_handler(irq, smmu)


def arm_smmu_setup_irqs(smmu: ArmSmmuDevice) -> None:
    """``arm_smmu_setup_irqs``: IRQs off, MSIs, then EVTQ and GERROR interrupts on."""
    arm_smmu_write_reg_sync(smmu, 0, r.ARM_SMMU_IRQ_CTRL, r.ARM_SMMU_IRQ_CTRLACK)
    arm_smmu_setup_unique_irqs(smmu)
    irqen = r.IRQ_CTRL_EVTQ_IRQEN | r.IRQ_CTRL_GERROR_IRQEN
    if smmu.features & r.ARM_SMMU_FEAT_PRI:
        irqen |= r.IRQ_CTRL_PRIQ_IRQEN
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
    if smmu.features & r.ARM_SMMU_FEAT_PRI:
        base.writeq(smmu.priq.q_base, r.ARM_SMMU_PRIQ_BASE)
        base.writel(smmu.priq.llq.prod, r.ARM_SMMU_PRIQ_PROD)
        base.writel(smmu.priq.llq.cons, r.ARM_SMMU_PRIQ_CONS)
        enables |= r.CR0_PRIQEN
    arm_smmu_write_reg_sync(smmu, enables, r.ARM_SMMU_CR0, r.ARM_SMMU_CR0ACK)
    arm_smmu_setup_irqs(smmu)
    enables |= r.CR0_SMMUEN
    arm_smmu_write_reg_sync(smmu, enables, r.ARM_SMMU_CR0, r.ARM_SMMU_CR0ACK)


def _free_smmu(smmu: ArmSmmuDevice) -> None:
    for irq in (smmu.evtq_irq, smmu.gerr_irq, smmu.priq_irq):
        if irq:
            free_irq(irq, smmu)
            irq_free(irq)
    smmu.evtq_irq = smmu.gerr_irq = smmu.priq_irq = 0
    for vaddr in list(smmu.coherent_allocs):
        arm_smmu_free_coherent(smmu, vaddr)
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
