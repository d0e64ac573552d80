"""The ``smmuv3`` dump view (``iommulab dump smmuv3``): per SMMU the control
registers and queue pointers, then per master its StreamIDs, the STE words as they
are in RAM, and every valid context descriptor (SSID, ASID, TTB0) read back from the
CD table. Linux has no debugfs file for this; it is what one would read out with a
debugger, decoded with the driver's own field definitions."""

from __future__ import annotations

import argparse

from drivers.arm_smmu_v3 import registers as r
from drivers.arm_smmu_v3.arm_smmu_v3 import arm_smmu_smmus
from drivers.arm_smmu_v3.entry_writer import arm_smmu_get_cd_ptr, arm_smmu_get_step_for_sid
from drivers.arm_smmu_v3.structs import ArmSmmuDevice, ArmSmmuMaster
from kernel.bitfield import FIELD_GET
from kernel.debugfs import DumpTarget
from kernel.mm import read64

_STE_CFG = {0: "abort", 4: "bypass", 5: "s1-trans", 6: "s2-trans", 7: "nested"}
_S1DSS = {0: "terminate", 1: "bypass", 2: "ssid0", 3: "reserved"}


def _cds(master: ArmSmmuMaster) -> list[str]:
    out: list[str] = []
    cd_table = master.cd_table
    if not cd_table.cdtab:
        return out
    if cd_table.s1fmt == r.STRTAB_STE_0_S1FMT_LINEAR:
        ssids: list[int] = list(range(cd_table.num_ents))
    else:
        leaves = [i for i, l2 in enumerate(cd_table.l2ptrs) if l2]
        ssids = [i * r.CTXDESC_L2_ENTRIES + j for i in leaves for j in range(r.CTXDESC_L2_ENTRIES)]
    for ssid in ssids:
        ptr = arm_smmu_get_cd_ptr(master, ssid)
        if ptr is None:
            continue
        d0 = read64(ptr)
        if not d0 & r.CTXDESC_CD_0_V:
            continue
        d1 = read64(ptr + 8)
        out.append(
            f"    CD[{ssid}]: asid={FIELD_GET(r.CTXDESC_CD_0_ASID, d0)} "
            f"ttb0={d1 & r.CTXDESC_CD_1_TTB0_MASK:#x} "
            f"t0sz={FIELD_GET(r.CTXDESC_CD_0_TCR_T0SZ, d0)} "
            f"ips={FIELD_GET(r.CTXDESC_CD_0_TCR_IPS, d0)} mair={read64(ptr + 24):#x}"
        )
    return out


def smmu_dump(smmu: ArmSmmuDevice) -> str:
    """One SMMU as text."""
    b = smmu.base
    cfg = smmu.strtab_cfg
    lines = [
        f"{smmu.name}: CR0={b.readl(r.ARM_SMMU_CR0):#x} GERROR={b.readl(r.ARM_SMMU_GERROR):#x} "
        f"GERRORN={b.readl(r.ARM_SMMU_GERRORN):#x} features={smmu.features:#x} "
        f"ias={smmu.ias} oas={smmu.oas} asid_bits={smmu.asid_bits} ssid_bits={smmu.ssid_bits}",
        f"  strtab: {'2-level' if cfg.two_level else 'linear'} base={cfg.base_dma:#x} "
        f"cfg={cfg.strtab_base_cfg:#x} l2={len(cfg.l2)}",
        f"  cmdq: prod={b.readl(r.ARM_SMMU_CMDQ_PROD):#x} cons={b.readl(r.ARM_SMMU_CMDQ_CONS):#x}"
        f" issued={smmu.cmds_issued} syncs={smmu.syncs_issued} "
        f"errors_skipped={smmu.cmdq_errors_skipped}",
        f"  evtq: prod={b.readl(r.ARM_SMMU_EVTQ_PROD):#x} cons={b.readl(r.ARM_SMMU_EVTQ_CONS):#x}"
        f" events={len(smmu.events)}",
    ]
    masters: dict[int, ArmSmmuMaster] = {}
    for m in smmu.streams.values():
        masters[id(m)] = m
    for master in masters.values():
        lines.append(
            f"  master {master.dev.init_name}: sids={[hex(s) for s in master.sids]} "
            f"ssid_bits={master.ssid_bits} pasids_in_use={master.cd_table.used_ssids}"
        )
        for sid in master.sids:
            ptr = arm_smmu_get_step_for_sid(smmu, sid)
            q = [read64(ptr + 8 * i) for i in range(3)]
            cfgv = FIELD_GET(r.STRTAB_STE_0_CFG, q[0])
            lines.append(
                f"    STE[{sid:#x}]: {q[0]:#018x} {q[1]:#018x} {q[2]:#018x} "
                f"v={q[0] & 1} config={_STE_CFG.get(cfgv, hex(cfgv))} "
                f"s1cdmax={FIELD_GET(r.STRTAB_STE_0_S1CDMAX, q[0])} "
                f"s1dss={_S1DSS[FIELD_GET(r.STRTAB_STE_1_S1DSS, q[1])]}"
            )
        lines.extend(_cds(master))
    return "\n".join(lines)


def _render(args: argparse.Namespace) -> str:
    smmus = arm_smmu_smmus()
    if not smmus:
        return "no arm-smmu-v3 units"
    return "\n".join(smmu_dump(s) for s in smmus)


def smmuv3_dump_target() -> DumpTarget:
    return DumpTarget(
        "smmuv3", "ARM SMMUv3 units: registers, STEs and context descriptors", _render
    )
