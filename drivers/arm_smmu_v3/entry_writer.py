"""Stream table entries, context descriptors and the hitless entry writer (the
STE/CD half of drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c, v6.10-v6.14 flows).

Entries are built by pure ``arm_smmu_make_*`` functions and written by
``arm_smmu_write_entry``, which compares the bits the SMMU uses now with those it
will use: when one 64-bit word's used bits change the update is hitless (unused bits
first, then that word), otherwise V is cleared first. Every step that changed memory
is followed by CFGI_STE (STEs) or CFGI_CD (CDs, per StreamID of the master) and a
CMD_SYNC. CD tables are linear up to 1024 contexts (or without CD2L), else an L1CD
table whose 64 KiB leaves are allocated on first use.

Stage-2 STEs (``arm_smmu_make_s2_domain_ste``) are built for the nesting parents of
``iommufd.viommu=on`` (Linux 6.13); the nested STE is built from them in
:mod:`drivers.arm_smmu_v3.iommufd_nested`.

Differences from Linux: StreamID = PCI requester ID (an identity IORT ID mapping);
ATS STEs are not built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from attrs import define

from drivers.arm_smmu_v3 import registers as r
from drivers.arm_smmu_v3.cmdq import (
    ArmSmmuCmdqBatch,
    ArmSmmuCmdqEnt,
    arm_smmu_cmdq_batch_add,
    arm_smmu_cmdq_batch_submit,
    arm_smmu_cmdq_issue_cmd,
    arm_smmu_cmdq_issue_cmd_with_sync,
)
from drivers.arm_smmu_v3.io_pgtable_arm import IO_PGTABLE_QUIRK_ARM_HD
from drivers.arm_smmu_v3.structs import (
    ArmSmmuCdTable,
    ArmSmmuDevice,
    ArmSmmuMaster,
    arm_smmu_alloc_coherent,
    arm_smmu_free_coherent,
)
from kernel.bitfield import FIELD_GET, FIELD_PREP, U64_MAX
from kernel.bug import WARN_ON, WARN_ON_ONCE
from kernel.errno import ENOMEM, KernelError
from kernel.iommu.iommu_h import IOMMU_NO_PASID
from kernel.mm import GFP_KERNEL, kcalloc, kfree, read64, write64
from kernel.printk import dev_warn

if TYPE_CHECKING:
    from drivers.arm_smmu_v3.domain import ArmSmmuDomain


# =========================================================================== CFGI commands


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
    if cfg & 2:  # stage 2 translates (S2 alone or nested)
        used[1] |= r.STRTAB_STE_1_EATS | r.STRTAB_STE_1_SHCFG
        used[2] |= (
            r.STRTAB_STE_2_S2VMID
            | r.STRTAB_STE_2_VTCR
            | r.STRTAB_STE_2_S2AA64
            | r.STRTAB_STE_2_S2ENDI
            | r.STRTAB_STE_2_S2PTW
            | r.STRTAB_STE_2_S2S
            | r.STRTAB_STE_2_S2R
        )
        used[3] |= r.STRTAB_STE_3_S2TTB_MASK
    return used


def arm_smmu_get_cd_used(ent: list[int]) -> list[int]:
    """``arm_smmu_get_cd_used``: V alone while invalid, everything once valid (minus
    the TTB0 walk fields when EPD0 disables them)."""
    used = [0] * NUM_ENTRY_QWORDS
    used[0] = r.CTXDESC_CD_0_V
    if not ent[0] & r.CTXDESC_CD_0_V:
        return used
    used = [U64_MAX] * NUM_ENTRY_QWORDS
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


def arm_smmu_make_s2_domain_ste(
    master: ArmSmmuMaster, smmu_domain: ArmSmmuDomain, ats_enabled: bool
) -> list[int]:
    """``arm_smmu_make_s2_domain_ste``: stage 2 alone (Config 0b110) with the
    domain's VMID, VTCR and S2TTB; faults recorded (S2R)."""
    smmu = master.smmu
    ops = smmu_domain.pgtbl_ops
    assert ops is not None
    vtcr = ops.cfg.vtcr
    ste = [0] * NUM_ENTRY_QWORDS
    ste[0] = r.STRTAB_STE_0_V | FIELD_PREP(r.STRTAB_STE_0_CFG, r.STRTAB_STE_0_CFG_S2_TRANS)
    ste[1] = FIELD_PREP(r.STRTAB_STE_1_EATS, r.STRTAB_STE_1_EATS_TRANS if ats_enabled else 0)
    if smmu.features & r.ARM_SMMU_FEAT_ATTR_TYPES_OVR:
        ste[1] |= FIELD_PREP(r.STRTAB_STE_1_SHCFG, r.STRTAB_STE_1_SHCFG_INCOMING)
    vtcr_val = (
        FIELD_PREP(r.STRTAB_STE_2_VTCR_S2T0SZ, vtcr.tsz)
        | FIELD_PREP(r.STRTAB_STE_2_VTCR_S2SL0, vtcr.sl)
        | FIELD_PREP(r.STRTAB_STE_2_VTCR_S2IR0, vtcr.irgn)
        | FIELD_PREP(r.STRTAB_STE_2_VTCR_S2OR0, vtcr.orgn)
        | FIELD_PREP(r.STRTAB_STE_2_VTCR_S2SH0, vtcr.sh)
        | FIELD_PREP(r.STRTAB_STE_2_VTCR_S2TG, vtcr.tg)
        | FIELD_PREP(r.STRTAB_STE_2_VTCR_S2PS, vtcr.ps)
    )
    ste[2] = (
        FIELD_PREP(r.STRTAB_STE_2_S2VMID, smmu_domain.vmid)
        | FIELD_PREP(r.STRTAB_STE_2_VTCR, vtcr_val)
        | r.STRTAB_STE_2_S2AA64
        | r.STRTAB_STE_2_S2PTW
        | r.STRTAB_STE_2_S2R
    )
    ste[3] = ops.cfg.vttbr & r.STRTAB_STE_3_S2TTB_MASK
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


def arm_smmu_init_initial_stes(ptr: int, nent: int) -> None:
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
    got = arm_smmu_alloc_coherent(smmu, l1size)
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
            arm_smmu_free_coherent(smmu, l2)
    kfree(cd_table.l2ptrs_kmem)
    arm_smmu_free_coherent(smmu, cd_table.cdtab)
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
            got = arm_smmu_alloc_coherent(master.smmu, r.CTXDESC_L2_ENTRIES * 64)
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
    """``arm_smmu_make_s1_cd``: the domain's ASID, TTB0, TCR and MAIR, and HA/HD for
    a dirty-tracking domain's tables (the HD quirk)."""
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
    if cfg.quirks & IO_PGTABLE_QUIRK_ARM_HD:
        cd[0] |= r.CTXDESC_CD_0_TCR_HA | r.CTXDESC_CD_0_TCR_HD
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
