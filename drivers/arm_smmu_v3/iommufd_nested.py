"""drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c (Linux 6.13, newer than the
6.12 baseline), with 6.13's ``arm_smmu_domain_alloc_paging_flags``: SMMUv3 nested
translation through iommufd, under ``iommufd.viommu=on``.

- ``hw_info``: IDR0-IDR5, IIDR and AIDR as read from the SMMU
  (``struct iommu_hw_info_arm_smmuv3``, IOMMU_HW_INFO_TYPE_ARM_SMMUV3).
- NEST_PARENT: a paging domain allocated with IOMMU_HWPT_ALLOC_NEST_PARENT is a
  stage-2 domain with a VMID; EOPNOTSUPP unless the SMMU has both stages
  (``ARM_SMMU_FEAT_NESTING``: IDR0.S1P and IDR0.S2P).
- ``arm_vsmmu_alloc``: a vIOMMU of type IOMMU_VIOMMU_TYPE_ARM_SMMUV3 (another type,
  or no nesting: EOPNOTSUPP) over a stage-2 parent of the same SMMU (EINVAL); it
  takes the parent's VMID.
- Nested domains (``arm_vsmmu_alloc_domain_nested``): the guest's vSTE
  (``struct iommu_hwpt_arm_smmuv3``). An invalid vSTE (V=0) becomes an abort STE;
  otherwise only the fields of ``STRTAB_STE_{0,1}_NESTING_ALLOWED`` may be set,
  Config must be abort, bypass or stage-1 translate and EATS abort or translate,
  else EIO (reserved for bad STE data). Attach (``arm_smmu_attach_dev_nested``)
  writes the parent's stage-2 STE with, for Config=S1, Config=nested (0b111) and
  the guest's CD-table fields (its S1ContextPtr is an IPA), EINVAL on another
  SMMU, EBUSY while the device has PASIDs attached.
- ``arm_vsmmu_cache_invalidate``: the guest's commands
  (``struct iommu_viommu_arm_smmuv3_invalidate``) with the VMID put in (TLBI_NH_*;
  TLBI_NSNH_ALL becomes TLBI_NH_ALL of the VMID) or the virtual StreamID replaced
  by the physical one of the vDEVICE (CFGI_CD, CFGI_CD_ALL, ATC_INV; EIO if no
  vDEVICE has it); any other command is EIO. They go to the command queue in
  batches of ``CMDQ_BATCH_ENTRIES - 1`` with a CMD_SYNC each; ``entry_num`` ends
  as the commands converted, as 6.13 counts them (so on a failure the converted
  commands of the unfinished batch are counted though not issued).

Departures: 6.13 refuses a vIOMMU unless the master's IORT root complex declares
CANWBS or the SMMU has S2FWB; the machines here have no IORT flags, so a coherent
SMMU (IDR0.COHACC) stands for CANWBS. ATS is not modelled, so EATS is checked but
never enabled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import define, field

from drivers.arm_smmu_v3 import registers as r
from drivers.arm_smmu_v3.cmdq import arm_smmu_cmdq_issue_cmdlist
from drivers.arm_smmu_v3.domain import (
    ARM_SMMU_DOMAIN_S1,
    ARM_SMMU_DOMAIN_S2,
    ArmSmmuAttachState,
    ArmSmmuDomain,
    ArmSmmuNestedDomain,
    arm_smmu_attach_commit,
    arm_smmu_attach_prepare,
)
from drivers.arm_smmu_v3.entry_writer import (
    arm_smmu_install_ste_for_dev,
    arm_smmu_make_abort_ste,
    arm_smmu_make_s2_domain_ste,
    arm_smmu_ssids_in_use,
)
from drivers.arm_smmu_v3.structs import ArmSmmuDevice, ArmSmmuMaster, dev_iommu_priv_get
from kernel.bitfield import FIELD_GET, FIELD_PREP
from kernel.device import Device
from kernel.errno import EBUSY, EINVAL, EIO, ENOMEM, EOPNOTSUPP, ETIMEDOUT, KernelError
from kernel.iommu.iommu_h import (
    IOMMU_DOMAIN_NESTED,
    IOMMU_DOMAIN_UNMANAGED,
    IOMMU_NO_PASID,
    IommuDomain,
)
from kernel.iommufd.main import IommufdCtx, IommufdObjectType
from kernel.iommufd.user import (
    IommuUserData,
    IommuUserDataArray,
    copy_from_user,
    copy_struct_from_user,
    iommu_copy_struct_from_user,
)
from kernel.iommufd.viommu import IommufdViommu, iommufd_viommu_alloc, iommufd_viommu_find_dev
from kernel.mm import GFP_KERNEL, kcalloc, kfree, kzalloc
from kernel.uapi import iommufd as uapi

if TYPE_CHECKING:
    from drivers.arm_smmu_v3.arm_smmu_v3 import ArmSmmuOps

ARM_SMMU_IDR2 = 0x8
ARM_SMMU_IDR4 = 0x10


# --------------------------------------------------------------------------- hw_info


def arm_smmu_hw_info(dev: Device) -> tuple[bytes, int]:
    """``arm_smmu_hw_info``: the ID registers as the guest's vSMMU should see them."""
    master = dev_iommu_priv_get(dev)
    kmem = kzalloc(uapi.iommu_hw_info_arm_smmuv3.SIZE, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("iommu_hw_info_arm_smmuv3")
    base = master.smmu.base
    idr = [base.readl(r.ARM_SMMU_IDR0 + 4 * i) for i in range(6)]
    info = uapi.iommu_hw_info_arm_smmuv3(
        idr0=idr[0],
        idr1=idr[1],
        idr2=idr[2],
        idr3=idr[3],
        idr4=idr[4],
        idr5=idr[5],
        iidr=base.readl(r.ARM_SMMU_IIDR),
        aidr=base.readl(r.ARM_SMMU_AIDR),
    )
    kfree(kmem)
    return info.to_bytes(), uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3


# --------------------------------------------------------------------------- paging domains


def arm_smmu_domain_alloc_paging_flags(
    ops: ArmSmmuOps, dev: Device, flags: int, parent: IommuDomain | None, user_data: Any
) -> IommuDomain:
    """``arm_smmu_domain_alloc_paging_flags`` (6.13): DIRTY_TRACKING as 6.12, and
    NEST_PARENT for a stage-2 domain (EOPNOTSUPP without nesting); no parent and no
    vendor data (EOPNOTSUPP)."""
    allowed = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING | uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
    if flags & ~allowed:
        raise EOPNOTSUPP(f"HWPT flags {flags:#x}")
    if parent is not None or user_data is not None:
        raise EOPNOTSUPP("SMMUv3 paging domains take no parent and no vendor data")
    stage = ARM_SMMU_DOMAIN_S1
    if flags & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT:
        if not dev_iommu_priv_get(dev).smmu.features & r.ARM_SMMU_FEAT_NESTING:
            raise EOPNOTSUPP("the SMMU cannot nest (IDR0.S1P and S2P needed)")
        stage = ARM_SMMU_DOMAIN_S2
    domain = ops.domain_alloc_finalised(dev, flags, "smmu-user", stage)
    domain.type = IOMMU_DOMAIN_UNMANAGED  # the owner is set by iommufd, as in C
    domain.ops = ops.default_domain_ops
    return domain


# --------------------------------------------------------------------------- vIOMMU


@define(eq=False)
class ArmVsmmu(IommufdViommu):
    """``struct arm_vsmmu``: the core vIOMMU, the SMMU, the stage-2 parent, its VMID."""

    smmu: ArmSmmuDevice | None = field(default=None, repr=False)
    s2_parent: ArmSmmuDomain | None = field(default=None, repr=False)
    vmid: int = 0


def arm_vsmmu_alloc(
    dev: Device, parent: IommuDomain, ictx: IommufdCtx, viommu_type: int
) -> IommufdViommu:
    """``arm_vsmmu_alloc``; see the module docstring for the errnos."""
    master = dev_iommu_priv_get(dev)
    smmu = master.smmu
    if viommu_type != uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3:
        raise EOPNOTSUPP(f"vIOMMU type {viommu_type}")
    if not smmu.features & r.ARM_SMMU_FEAT_NESTING:
        raise EOPNOTSUPP("the SMMU cannot nest")
    if not isinstance(parent, ArmSmmuDomain) or parent.smmu is not smmu:
        raise EINVAL("the parent is not a stage-2 domain of this SMMU")
    if not smmu.features & r.ARM_SMMU_FEAT_COHERENCY:
        raise EOPNOTSUPP("no way to keep the guest from bypassing the cache (CANWBS/S2FWB)")
    vsmmu = iommufd_viommu_alloc(
        ictx, lambda: ArmVsmmu(ictx, IommufdObjectType.IOMMUFD_OBJ_VIOMMU), ARM_VSMMU_OPS
    )
    vsmmu.smmu = smmu
    vsmmu.s2_parent = parent
    vsmmu.vmid = parent.vmid
    return vsmmu


# --------------------------------------------------------------------------- nested domains


def arm_smmu_validate_vste(ste: list[int]) -> bool:
    """``arm_smmu_validate_vste``: EIO for bad vSTE data; clears an invalid vSTE and
    EATS in place; returns whether ATS is asked for."""
    if not ste[0] & r.STRTAB_STE_0_V:
        ste[0] = ste[1] = 0
        return False
    if ste[0] & ~r.STRTAB_STE_0_NESTING_ALLOWED or ste[1] & ~r.STRTAB_STE_1_NESTING_ALLOWED:
        raise EIO("vSTE sets fields a guest may not set")
    cfg = FIELD_GET(r.STRTAB_STE_0_CFG, ste[0])
    allowed = (r.STRTAB_STE_0_CFG_ABORT, r.STRTAB_STE_0_CFG_BYPASS, r.STRTAB_STE_0_CFG_S1_TRANS)
    if cfg not in allowed:
        raise EIO(f"vSTE Config {cfg:#b}")
    eats = FIELD_GET(r.STRTAB_STE_1_EATS, ste[1])
    ste[1] &= ~r.STRTAB_STE_1_EATS
    if eats not in (r.STRTAB_STE_1_EATS_ABT, r.STRTAB_STE_1_EATS_TRANS):
        raise EIO(f"vSTE EATS {eats}")
    return cfg == r.STRTAB_STE_0_CFG_S1_TRANS and eats == r.STRTAB_STE_1_EATS_TRANS


def arm_vsmmu_alloc_domain_nested(
    viommu: IommufdViommu, flags: int, user_data: IommuUserData
) -> IommuDomain:
    """``arm_vsmmu_alloc_domain_nested``: no flags (EOPNOTSUPP); the vSTE copied in
    (EINVAL for another data type or a short one, E2BIG for a non-zero tail, EFAULT)
    and validated (EIO)."""
    assert isinstance(viommu, ArmVsmmu)
    if flags:
        raise EOPNOTSUPP(f"nested domain flags {flags:#x}")
    arg = iommu_copy_struct_from_user(
        uapi.iommu_hwpt_arm_smmuv3, user_data, uapi.IOMMU_HWPT_DATA_ARM_SMMUV3
    )
    ste = [arg.ste0, arg.ste1]
    enable_ats = arm_smmu_validate_vste(ste)
    kmem = kzalloc(64, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("arm_smmu_nested_domain")
    return ArmSmmuNestedDomain(
        type=IOMMU_DOMAIN_NESTED,
        ops=ARM_SMMU_NESTED_OPS,
        name="smmu-nested",
        vsmmu=viommu,
        s2_parent=viommu.s2_parent,
        ste=(ste[0], ste[1]),
        enable_ats=enable_ats,
        kmem=kmem,
    )


def arm_smmu_make_nested_domain_ste(
    master: ArmSmmuMaster, nested: ArmSmmuNestedDomain, ats_enabled: bool
) -> list[int]:
    """``arm_smmu_make_nested_domain_ste`` (with ``arm_smmu_make_nested_cd_table_ste``)."""
    assert nested.s2_parent is not None
    ste0, ste1 = nested.ste
    cfg = FIELD_GET(r.STRTAB_STE_0_CFG, ste0) if ste0 & r.STRTAB_STE_0_V else 0
    if cfg == r.STRTAB_STE_0_CFG_S1_TRANS:
        target = arm_smmu_make_s2_domain_ste(master, nested.s2_parent, ats_enabled)
        target[0] = (
            r.STRTAB_STE_0_V
            | FIELD_PREP(r.STRTAB_STE_0_CFG, r.STRTAB_STE_0_CFG_NESTED)
            | (ste0 & ~r.STRTAB_STE_0_CFG)
        )
        target[1] |= ste1
        return target
    if cfg == r.STRTAB_STE_0_CFG_BYPASS:
        return arm_smmu_make_s2_domain_ste(master, nested.s2_parent, ats_enabled)
    return arm_smmu_make_abort_ste()


def arm_smmu_attach_dev_nested(domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
    """``arm_smmu_attach_dev_nested``."""
    assert isinstance(domain, ArmSmmuNestedDomain)
    master = dev_iommu_priv_get(dev)
    if domain.vsmmu.smmu is not master.smmu:
        raise EINVAL(f"{dev.init_name}: the vIOMMU belongs to another SMMU")
    if arm_smmu_ssids_in_use(master.cd_table):
        raise EBUSY(f"{dev.init_name}: PASIDs are attached")
    state = ArmSmmuAttachState(master, old, IOMMU_NO_PASID)
    arm_smmu_attach_prepare(state, domain)
    arm_smmu_install_ste_for_dev(
        master, arm_smmu_make_nested_domain_ste(master, domain, state.ats_enabled)
    )
    arm_smmu_attach_commit(state)


class ArmSmmuNestedOps:
    """``arm_smmu_nested_ops``: attach and free; invalidation goes to the vIOMMU."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        arm_smmu_attach_dev_nested(domain, dev, old)

    def free(self, domain: IommuDomain) -> None:
        """``arm_smmu_domain_nested_free``."""
        assert isinstance(domain, ArmSmmuNestedDomain)
        kfree(domain.kmem)
        domain.kmem = 0


ARM_SMMU_NESTED_OPS = ArmSmmuNestedOps()


# --------------------------------------------------------------------------- invalidation


def arm_vsmmu_vsid_to_sid(vsmmu: ArmVsmmu, vsid: int) -> int:
    """``arm_vsmmu_vsid_to_sid``: the physical StreamID of the vDEVICE ``vsid`` (EIO
    if none)."""
    dev = iommufd_viommu_find_dev(vsmmu, vsid)
    if dev is None:
        raise EIO(f"no vDEVICE with virtual StreamID {vsid:#x}")
    return dev_iommu_priv_get(dev).sids[0]


def arm_vsmmu_convert_user_cmd(vsmmu: ArmVsmmu, cmd: list[int]) -> None:
    """``arm_vsmmu_convert_user_cmd``: in place; EIO for a command a guest may not
    send."""
    op = cmd[0] & r.CMDQ_0_OP
    if op == r.CMDQ_OP_TLBI_NSNH_ALL:
        cmd[0] = r.CMDQ_OP_TLBI_NH_ALL | FIELD_PREP(r.CMDQ_TLBI_0_VMID, vsmmu.vmid)
        cmd[1] = 0
    elif op in (
        r.CMDQ_OP_TLBI_NH_VA,
        r.CMDQ_OP_TLBI_NH_VAA,
        r.CMDQ_OP_TLBI_NH_ALL,
        r.CMDQ_OP_TLBI_NH_ASID,
    ):
        cmd[0] = (cmd[0] & ~r.CMDQ_TLBI_0_VMID) | FIELD_PREP(r.CMDQ_TLBI_0_VMID, vsmmu.vmid)
    elif op in (r.CMDQ_OP_ATC_INV, r.CMDQ_OP_CFGI_CD, r.CMDQ_OP_CFGI_CD_ALL):
        sid = arm_vsmmu_vsid_to_sid(vsmmu, FIELD_GET(r.CMDQ_CFGI_0_SID, cmd[0]))
        cmd[0] = (cmd[0] & ~r.CMDQ_CFGI_0_SID) | FIELD_PREP(r.CMDQ_CFGI_0_SID, sid)
    else:
        raise EIO(f"command {op:#x} is not one a guest may send")


def _copy_full_user_array(array: IommuUserDataArray, data_type: int) -> list[list[int]]:
    """``iommu_copy_struct_from_full_user_array`` into 16-byte commands: EINVAL for
    another type; one copy when ``entry_len`` is 16, else entry by entry (a shorter
    entry zero-extended, a longer one E2BIG unless its tail is zero)."""
    st = uapi.iommu_viommu_arm_smmuv3_invalidate
    if array.type != data_type:
        raise EINVAL(f"invalidation data type {array.type}")
    if array.entry_len == st.SIZE:
        data = copy_from_user(array.uptr, array.entry_num * st.SIZE)
        ents = [st.from_bytes(data[i * st.SIZE :]) for i in range(array.entry_num)]
    else:
        ents = [
            copy_struct_from_user(st, array.uptr + array.entry_len * i, array.entry_len)
            for i in range(array.entry_num)
        ]
    return [[e.cmd0, e.cmd1] for e in ents]


def arm_vsmmu_cache_invalidate(viommu: IommufdViommu, array: IommuUserDataArray) -> None:
    """``arm_vsmmu_cache_invalidate``; see the module docstring. The C function
    returns the errno after setting ``array->entry_num``; here the KernelError is
    raised after setting it."""
    assert isinstance(viommu, ArmVsmmu) and viommu.smmu is not None
    smmu = viommu.smmu
    total = array.entry_num
    kmem = kcalloc(total, 16, GFP_KERNEL) if total else 0
    if kmem is None:
        array.entry_num = 0
        raise ENOMEM("vSMMU command array")
    cur = 0
    try:
        cmds = _copy_full_user_array(array, uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3)
        last = 0
        while cur != total:
            arm_vsmmu_convert_user_cmd(viommu, cmds[cur])
            cur += 1
            if cur != total and cur - last != r.CMDQ_BATCH_ENTRIES - 1:
                continue
            batch = [(c[0], c[1]) for c in cmds[last:cur]]
            if arm_smmu_cmdq_issue_cmdlist(smmu, batch, True):
                cur -= 1
                raise ETIMEDOUT("the command queue did not complete the batch")
            last = cur
    except KernelError:
        array.entry_num = cur
        raise
    finally:
        if kmem:
            kfree(kmem)
    array.entry_num = cur


class ArmVsmmuOps:
    """``arm_vsmmu_ops``."""

    def alloc_domain_nested(
        self, viommu: IommufdViommu, flags: int, user_data: IommuUserData
    ) -> IommuDomain:
        return arm_vsmmu_alloc_domain_nested(viommu, flags, user_data)

    def cache_invalidate(self, viommu: IommufdViommu, array: IommuUserDataArray) -> None:
        arm_vsmmu_cache_invalidate(viommu, array)


ARM_VSMMU_OPS = ArmVsmmuOps()
