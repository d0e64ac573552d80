"""The ``dsa`` dump view (``iommulab dump dsa``): what ``accel-config list`` and
the idxd sysfs files show — device state and PASID, groups, engines, WQs with
their mode, size, driver-side in-flight count, hardware occupancy (WQCFG) and
submission/completion counters."""

from __future__ import annotations

import argparse

from drivers.idxd import registers as regs
from drivers.idxd.idxd import IdxdDevice
from kernel.debugfs import DumpTarget
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID


def idxd_dump(idxd: IdxdDevice) -> str:
    """One device as text."""
    pasid = "none" if idxd.pasid == IOMMU_PASID_INVALID else str(idxd.pasid)
    lines = [
        f"{idxd.name} ({idxd.pdev.init_name}) state={idxd.state} version={idxd.hw.version:#x} "
        f"pasid={pasid} api={idxd.pasid_api or '-'} user_int_en={int(idxd.user_int_en)}",
        f"  max: wqs={idxd.max_wqs} engines={idxd.max_engines} groups={idxd.max_groups} "
        f"wq_size={idxd.max_wq_size} xfer={idxd.max_xfer_bytes} batch={idxd.max_batch_size}",
        f"  swerr={idxd.swerr_count} halts={idxd.halts} resets={idxd.resets}",
    ]
    for g in idxd.groups:
        wqs = [w.id for w in idxd.wqs if w.group_id == g.id]
        engs = [e.id for e in idxd.engines if e.group_id == g.id]
        if wqs or engs:
            lines.append(f"  group{idxd.id}.{g.id}: wqs={wqs} engines={engs}")
    reg = idxd.reg_base
    for w in idxd.wqs:
        if not w.size:
            continue
        occ = "-"
        if reg is not None:
            dw6 = reg.readl(idxd.wqcfg_offset + w.id * idxd.wqcfg_size + 4 * regs.WQCFG_OCCUP_IDX)
            occ = str(regs.WQCFG_OCCUPANCY.get(dw6))
        chan = w.dma_chan.name if w.dma_chan is not None else "-"
        lines.append(
            f"  {w.name_dev}: {w.state} {'dedicated' if w.dedicated else 'shared'} "
            f"type={w.type} name={w.name} size={w.size} threshold={w.threshold} "
            f"group={w.group_id} chan={chan} in_flight={w.in_flight} occupancy={occ} "
            f"submitted={w.submitted} completed={w.completed} errors={w.errors} "
            f"enqcmds_retries={w.enqcmds_retried}"
        )
    return "\n".join(lines)


def _render(args: argparse.Namespace) -> str:
    from drivers.idxd.init import idxd_devices

    devs = idxd_devices()
    if not devs:
        return "no idxd devices"
    return "\n".join(idxd_dump(d) for d in devs)


def dsa_dump_target() -> DumpTarget:
    return DumpTarget("dsa", "idxd devices, groups, engines and work queues", _render)
