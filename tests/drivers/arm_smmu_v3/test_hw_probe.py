"""``arm_smmu_device_hw_probe`` against ID register values the model's configuration
does not offer (the test edits the ID registers before boot), and allocation
failures on the attach paths."""

from __future__ import annotations

import pytest

from drivers.arm_smmu_v3 import registers as r
from drivers.arm_smmu_v3.arm_smmu_v3 import arm_smmu_ops
from drivers.arm_smmu_v3.cmdq import (
    ArmSmmuCmdqEnt,
    arm_smmu_cmdq_build_cmd,
    arm_smmu_cmdq_issue_cmd_with_sync,
)
from hw.smmuv3 import Smmuv3Unit
from kernel.bitfield import FIELD_GET, FIELD_PREP
from kernel.boot import boot
from kernel.errno import ENOMEM, KernelError
from kernel.fault_inject import injector
from kernel.iommu.iommu import (
    iommu_domain_free,
    iommu_get_domain_for_dev,
    iommu_paging_domain_alloc,
)
from kernel.iommu.iommu_h import (
    IOMMU_CAP_CACHE_COHERENCY,
    IOMMU_CAP_DEFERRED_FLUSH,
    IOMMU_CAP_NOEXEC,
)
from kernel.iommu.pasid import iommu_attach_device_pasid, iommu_detach_device_pasid
from tests.drivers.arm_smmu_v3.conftest import Boot, commands, dsa, edu, smmu, ste, unit
from tests.drivers.arm_smmu_v3.machines import smmuv3_machine

REFUSED = [
    ("IDR0", r.IDR0_TTENDIAN, r.IDR0_TTENDIAN_BE, "unknown/unsupported TT endianness!"),
    ("IDR0", r.IDR0_S1P, 0, "no stage-1 translation support!"),
    ("IDR0", r.IDR0_TTF, 1, "AArch64 table format not supported!"),
    ("IDR1", r.IDR1_REL, 1, "embedded implementation not supported"),
    ("IDR5", r.IDR5_GRAN4K, 0, "no 4K translation granule"),
]


def _boot_with(reg: str, mask: int, value: int) -> tuple[Smmuv3Unit, str]:
    m = smmuv3_machine()
    u = m.iommus["smmu0"]
    assert isinstance(u, Smmuv3Unit)
    u.regs[reg] = (u.regs[reg] & ~mask) | FIELD_PREP(mask, value)
    k = boot(m, "", builtins=("drivers.arm_smmu_v3",), entry_points=False)
    text = k.dmesg()
    k.shutdown()
    return u, text


@pytest.mark.parametrize(("reg", "mask", "value", "message"), REFUSED)
def test_id_registers_the_driver_refuses(reg: str, mask: int, value: int, message: str) -> None:
    u, text = _boot_with(reg, mask, value)
    assert f"arm-smmu-v3 smmu0: {message}" in text
    assert "arm_smmu_v3 failed to bring up smmu0" in text
    assert u.mmio_read(r.ARM_SMMU_CR0, 4) == 0


def test_aarch32_capable_smmu_gets_a_40_bit_input_size_at_least() -> None:
    _, text = _boot_with("IDR0", r.IDR0_TTF, r.IDR0_TTF_AARCH32_64)
    assert "ias 48-bit, oas 48-bit" in text


def test_unknown_output_size_is_truncated_to_48_bits() -> None:
    _, text = _boot_with("IDR5", r.IDR5_OAS, 7)
    assert "unknown output address size. Truncating to 48-bit" in text


def test_no_memory_for_a_new_cd_leaf_fails_the_pasid_attach(smmu_boot: Boot) -> None:
    smmu_boot()
    dev = dsa()
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    injector().arm(1, frozenset({"alloc_pages"}))
    with pytest.raises(ENOMEM):
        iommu_attach_device_pasid(dom, dev, 3000)
    injector().disarm()
    assert 3000 not in dev.iommu_group.pasid_array


@pytest.mark.parametrize("site", ["alloc_pages", "ida_alloc"])
def test_domain_allocation_unwinds_when_tables_or_asid_fail(smmu_boot: Boot, site: str) -> None:
    k = smmu_boot()
    dev = edu()
    before = {(a.kind, a.addr) for a in k.mm.live()}
    asids = set(arm_smmu_ops().asid_ida.ids)
    injector().arm(1, frozenset({site}))
    with pytest.raises(KernelError):
        iommu_paging_domain_alloc(dev)
    injector().disarm()
    assert {(a.kind, a.addr) for a in k.mm.live()} == before
    assert set(arm_smmu_ops().asid_ida.ids) == asids


def test_attribute_override_makes_bypass_stes_use_incoming_shareability() -> None:
    m = smmuv3_machine()
    u = m.iommus["smmu0"]
    assert isinstance(u, Smmuv3Unit)
    u.regs["IDR1"] |= r.IDR1_ATTR_TYPES_OVR
    k = boot(m, "iommu.passthrough=1", builtins=("drivers.arm_smmu_v3",), entry_points=False)
    try:
        words = ste(dsa())
        assert FIELD_GET(r.STRTAB_STE_0_CFG, words[0]) == r.STRTAB_STE_0_CFG_BYPASS
        assert FIELD_GET(r.STRTAB_STE_1_SHCFG, words[1]) == r.STRTAB_STE_1_SHCFG_INCOMING
        dom = iommu_paging_domain_alloc(dsa())
        iommu_attach_device_pasid(dom, dsa(), 2)
        words = ste(dsa())
        assert FIELD_GET(r.STRTAB_STE_1_S1DSS, words[1]) == r.STRTAB_STE_1_S1DSS_BYPASS
        assert FIELD_GET(r.STRTAB_STE_1_SHCFG, words[1]) == r.STRTAB_STE_1_SHCFG_INCOMING
        iommu_detach_device_pasid(dom, dsa(), 2)
        iommu_domain_free(dom)
        assert not k.warnings()
    finally:
        k.shutdown()


def test_capabilities_follow_the_id_registers(smmu_boot: Boot) -> None:
    smmu_boot(smmu_config={"cohacc": False})
    ops = arm_smmu_ops()
    assert not ops.capable(edu(), IOMMU_CAP_CACHE_COHERENCY)
    assert ops.capable(edu(), IOMMU_CAP_NOEXEC) and ops.capable(edu(), IOMMU_CAP_DEFERRED_FLUSH)
    assert not smmu().msipoll  # MSI polling needs a coherent SMMU


CMDS = [
    (ArmSmmuCmdqEnt(r.CMDQ_OP_CFGI_CD_ALL, sid=0x18), "CFGI_CD_ALL"),
    (ArmSmmuCmdqEnt(r.CMDQ_OP_TLBI_NH_ALL, vmid=0), "TLBI_NH_ALL"),
    (ArmSmmuCmdqEnt(r.CMDQ_OP_TLBI_NSNH_ALL), "TLBI_NSNH_ALL"),
    (ArmSmmuCmdqEnt(r.CMDQ_OP_PREFETCH_CFG, sid=0x10), "PREFETCH_CONFIG"),
]


@pytest.mark.parametrize(("cmd", "name"), CMDS, ids=[n for _, n in CMDS])
def test_commands_are_encoded_as_the_smmu_decodes_them(
    smmu_boot: Boot, cmd: ArmSmmuCmdqEnt, name: str
) -> None:
    k = smmu_boot("trace_event=hw_smmuv3:command")
    mark = len(commands(k, prefetch=True))
    assert arm_smmu_cmdq_issue_cmd_with_sync(smmu(), cmd) == 0
    assert [op for op, _, _ in commands(k, prefetch=True)[mark:]][-2:] == [name, "CMD_SYNC"]
    assert unit(k).stats.cmd_errors == 0


def test_an_opcode_without_an_encoding_is_a_driver_bug() -> None:
    with pytest.raises(ValueError, match="no encoding"):
        arm_smmu_cmdq_build_cmd(ArmSmmuCmdqEnt(0x7F))
