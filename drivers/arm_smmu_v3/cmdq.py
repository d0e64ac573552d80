"""The command and event queues of arm-smmu-v3.c: queue pointer arithmetic
(``queue_has_space``, ``queue_inc_prod``, ``queue_sync_prod_in`` ...), command
encoding (``arm_smmu_cmdq_build_cmd``), submission with CMD_SYNC
(``arm_smmu_cmdq_issue_cmdlist``, the ``arm_smmu_cmdq_batch_*`` helpers), the event
queue thread with decoded event logging (``arm_smmu_evtq_thread``,
``arm_smmu_decode_event``/``arm_smmu_dump_event`` of 6.14), the PRI queue thread
(``arm_smmu_priq_thread``, ``arm_smmu_handle_ppr``: log and deny), and the global error
handler with command-queue error recovery (``arm_smmu_gerror_handler``,
``__arm_smmu_cmdq_skip_err``).

Differences from Linux: one CPU, so submission is a plain ring write followed by a
CMDQ_PROD update (no lock-free owner/shared-lock protocol); completion is polled on
the virtual clock, by MSI write-back into the CMD_SYNC entry when the SMMU is
coherent and MSI-capable (``ARM_SMMU_OPT_MSIPOLL``), else by CMDQ_CONS. A CMD_SYNC
that never completes is logged and reported as ``-ETIMEDOUT``, as Linux does;
callers that ignore it in Linux ignore it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import define, field

from drivers.arm_smmu_v3 import registers as r
from kernel.bitfield import FIELD_GET, FIELD_PREP
from kernel.delay import readx_poll_timeout
from kernel.errno import EOVERFLOW, ETIMEDOUT
from kernel.iommu.io_pgfault import report_iommu_fault
from kernel.iommu.iommu_h import IOMMU_FAULT_READ, IOMMU_FAULT_WRITE
from kernel.irq import IRQ_HANDLED, IRQ_NONE
from kernel.mm import read32, read64, write64
from kernel.printk import dev_err, dev_info, dev_warn
from kernel.trace import define_tracepoint

if TYPE_CHECKING:
    from drivers.arm_smmu_v3.structs import ArmSmmuDevice

trace_arm_smmu_cmd = define_tracepoint(
    "arm_smmu_v3:cmdq_issue", ("smmu", "ops", "sync"), "smmu={smmu} ops={ops} sync={sync}"
)


@define(eq=False)
class ArmSmmuLlQueue:
    """``struct arm_smmu_ll_queue``: the software copy of PROD/CONS."""

    max_n_shift: int
    prod: int = 0
    cons: int = 0


@define(eq=False)
class ArmSmmuQueue:
    """``struct arm_smmu_queue``: a ring in RAM and its PROD/CONS registers."""

    llq: ArmSmmuLlQueue
    base: int
    """Kernel virtual address of the ring."""
    base_dma: int
    q_base: int
    """The value written to the *_BASE register."""
    ent_dwords: int
    prod_reg: int
    cons_reg: int
    name: str = ""


def Q_IDX(llq: ArmSmmuLlQueue, p: int) -> int:
    return p & ((1 << llq.max_n_shift) - 1)


def Q_WRP(llq: ArmSmmuLlQueue, p: int) -> int:
    return p & (1 << llq.max_n_shift)


def Q_OVF(p: int) -> int:
    return p & r.Q_OVERFLOW_FLAG


def Q_ENT(q: ArmSmmuQueue, p: int) -> int:
    return q.base + Q_IDX(q.llq, p) * q.ent_dwords * 8


def queue_has_space(llq: ArmSmmuLlQueue, n: int) -> bool:
    """``queue_has_space``."""
    prod, cons = Q_IDX(llq, llq.prod), Q_IDX(llq, llq.cons)
    if Q_WRP(llq, llq.prod) == Q_WRP(llq, llq.cons):
        space = (1 << llq.max_n_shift) - (prod - cons)
    else:
        space = cons - prod
    return space >= n


def queue_empty(llq: ArmSmmuLlQueue) -> bool:
    return Q_IDX(llq, llq.prod) == Q_IDX(llq, llq.cons) and Q_WRP(llq, llq.prod) == Q_WRP(
        llq, llq.cons
    )


def queue_inc_prod_n(llq: ArmSmmuLlQueue, n: int) -> int:
    """``queue_inc_prod_n``: PROD advanced by ``n`` (wrap bit included)."""
    prod = (Q_WRP(llq, llq.prod) | Q_IDX(llq, llq.prod)) + n
    return Q_OVF(llq.prod) | Q_WRP(llq, prod) | Q_IDX(llq, prod)


def queue_inc_cons(llq: ArmSmmuLlQueue) -> None:
    cons = (Q_WRP(llq, llq.cons) | Q_IDX(llq, llq.cons)) + 1
    llq.cons = Q_OVF(llq.cons) | Q_WRP(llq, cons) | Q_IDX(llq, cons)


# -- command encoding --------------------------------------------------------------------------


@define
class ArmSmmuCmdqEnt:
    """``struct arm_smmu_cmdq_ent`` (the members this driver uses)."""

    opcode: int
    sid: int = 0
    ssid: int = 0
    leaf: bool = False
    asid: int = 0
    vmid: int = 0
    addr: int = 0
    span: int = 0
    msiaddr: int = 0
    substream_valid: bool = False
    grpid: int = 0
    resp: int = 0


def arm_smmu_cmdq_build_cmd(ent: ArmSmmuCmdqEnt) -> tuple[int, int]:
    """``arm_smmu_cmdq_build_cmd``: the two command words."""
    op = ent.opcode
    cmd0 = FIELD_PREP(r.CMDQ_0_OP, op)
    cmd1 = 0
    if op == r.CMDQ_OP_TLBI_EL2_ALL or op == r.CMDQ_OP_TLBI_NSNH_ALL:
        pass
    elif op == r.CMDQ_OP_PREFETCH_CFG:
        cmd0 |= FIELD_PREP(r.CMDQ_PREFETCH_0_SID, ent.sid)
    elif op == r.CMDQ_OP_CFGI_CD:
        cmd0 |= FIELD_PREP(r.CMDQ_CFGI_0_SSID, ent.ssid)
        cmd0 |= FIELD_PREP(r.CMDQ_CFGI_0_SID, ent.sid)
        cmd1 |= FIELD_PREP(r.CMDQ_CFGI_1_LEAF, int(ent.leaf))
    elif op == r.CMDQ_OP_CFGI_STE:
        cmd0 |= FIELD_PREP(r.CMDQ_CFGI_0_SID, ent.sid)
        cmd1 |= FIELD_PREP(r.CMDQ_CFGI_1_LEAF, int(ent.leaf))
    elif op == r.CMDQ_OP_CFGI_CD_ALL:
        cmd0 |= FIELD_PREP(r.CMDQ_CFGI_0_SID, ent.sid)
    elif op == r.CMDQ_OP_CFGI_ALL:
        # Cover the entire SID range
        cmd1 |= FIELD_PREP(r.CMDQ_CFGI_1_RANGE, 31)
    elif op == r.CMDQ_OP_TLBI_NH_VA:
        cmd0 |= FIELD_PREP(r.CMDQ_TLBI_0_VMID, ent.vmid)
        cmd0 |= FIELD_PREP(r.CMDQ_TLBI_0_ASID, ent.asid)
        cmd1 |= FIELD_PREP(r.CMDQ_TLBI_1_LEAF, int(ent.leaf))
        cmd1 |= ent.addr & r.CMDQ_TLBI_1_VA_MASK
    elif op == r.CMDQ_OP_TLBI_NH_ASID:
        cmd0 |= FIELD_PREP(r.CMDQ_TLBI_0_ASID, ent.asid)
        cmd0 |= FIELD_PREP(r.CMDQ_TLBI_0_VMID, ent.vmid)
    elif op == r.CMDQ_OP_TLBI_NH_ALL or op == r.CMDQ_OP_TLBI_S12_VMALL:
        cmd0 |= FIELD_PREP(r.CMDQ_TLBI_0_VMID, ent.vmid)
    elif op == r.CMDQ_OP_TLBI_S2_IPA:
        cmd0 |= FIELD_PREP(r.CMDQ_TLBI_0_VMID, ent.vmid)
        cmd1 |= FIELD_PREP(r.CMDQ_TLBI_1_LEAF, int(ent.leaf))
        cmd1 |= ent.addr & r.CMDQ_TLBI_1_IPA_MASK
    elif op == r.CMDQ_OP_PRI_RESP:
        cmd0 |= FIELD_PREP(r.CMDQ_0_SSV, int(ent.substream_valid))
        cmd0 |= FIELD_PREP(r.CMDQ_PRI_0_SSID, ent.ssid)
        cmd0 |= FIELD_PREP(r.CMDQ_PRI_0_SID, ent.sid)
        cmd1 |= FIELD_PREP(r.CMDQ_PRI_1_GRPID, ent.grpid)
        cmd1 |= FIELD_PREP(r.CMDQ_PRI_1_RESP, ent.resp)
    elif op == r.CMDQ_OP_CMD_SYNC:
        if ent.msiaddr:
            cmd0 |= FIELD_PREP(r.CMDQ_SYNC_0_CS, r.CMDQ_SYNC_0_CS_IRQ)
            cmd1 |= ent.msiaddr & r.CMDQ_SYNC_1_MSIADDR_MASK
        else:
            cmd0 |= FIELD_PREP(r.CMDQ_SYNC_0_CS, r.CMDQ_SYNC_0_CS_SEV)
        cmd0 |= FIELD_PREP(r.CMDQ_SYNC_0_MSH, r.ARM_SMMU_SH_ISH)
        cmd0 |= FIELD_PREP(r.CMDQ_SYNC_0_MSIATTR, r.ARM_SMMU_MEMATTR_OIWB)
    else:
        raise ValueError(f"arm-smmu-v3: no encoding for opcode {op:#x}")
    return cmd0, cmd1


def _build_sync_cmd(smmu: ArmSmmuDevice, prod: int) -> tuple[int, int]:
    """``arm_smmu_cmdq_build_sync_cmd``: with MSI polling, the CMD_SYNC's MSI targets
    the SYNC entry itself and writes 0 over its first word."""
    q = smmu.cmdq
    ent = ArmSmmuCmdqEnt(r.CMDQ_OP_CMD_SYNC)
    if smmu.msipoll:
        ent.msiaddr = q.base_dma + Q_IDX(q.llq, prod) * q.ent_dwords * 8
    return arm_smmu_cmdq_build_cmd(ent)


# -- submission ---------------------------------------------------------------------------------


def _sync_cons_in(smmu: ArmSmmuDevice) -> int:
    q = smmu.cmdq
    q.llq.cons = smmu.base.readl(q.cons_reg)
    return q.llq.cons


def _poll_until_not_full(smmu: ArmSmmuDevice, n: int) -> int:
    """``arm_smmu_cmdq_poll_until_not_full``: 0, or -ETIMEDOUT."""
    q = smmu.cmdq
    if queue_has_space(q.llq, n):
        return 0
    try:
        readx_poll_timeout(
            lambda: _sync_cons_in(smmu),
            lambda _v: queue_has_space(q.llq, n),
            0,
            r.ARM_SMMU_POLL_TIMEOUT_US,
        )
    except ETIMEDOUT:
        dev_err(smmu, "CMDQ timeout")
        return -ETIMEDOUT.errno
    return 0


def queue_consumed(llq: ArmSmmuLlQueue, prod: int) -> bool:
    """``queue_consumed``: CONS has moved past position ``prod``."""
    cons = llq.cons
    if Q_WRP(llq, cons) == Q_WRP(llq, prod):
        return Q_IDX(llq, cons) > Q_IDX(llq, prod)
    return Q_IDX(llq, cons) <= Q_IDX(llq, prod)


def _poll_until_sync(smmu: ArmSmmuDevice, sync_prod: int) -> int:
    """``__arm_smmu_cmdq_poll_until_msi`` / ``__arm_smmu_cmdq_poll_until_consumed``."""
    q = smmu.cmdq
    try:
        if smmu.msipoll:
            entry = Q_ENT(q, sync_prod)
            readx_poll_timeout(
                lambda: read32(entry), lambda v: v == 0, 0, r.ARM_SMMU_POLL_TIMEOUT_US
            )
        else:
            readx_poll_timeout(
                lambda: _sync_cons_in(smmu),
                lambda _v: queue_consumed(q.llq, sync_prod),
                0,
                r.ARM_SMMU_POLL_TIMEOUT_US,
            )
    except ETIMEDOUT:
        dev_err(
            smmu,
            f"CMD_SYNC timeout at 0x{sync_prod:08x} [hwprod 0x{smmu.base.readl(q.prod_reg):08x}, "
            f"hwcons 0x{smmu.base.readl(q.cons_reg):08x}]",
        )
        return -ETIMEDOUT.errno
    _sync_cons_in(smmu)
    return 0


def arm_smmu_cmdq_issue_cmdlist(
    smmu: ArmSmmuDevice, cmds: list[tuple[int, int]], sync: bool
) -> int:
    """``arm_smmu_cmdq_issue_cmdlist``: write ``cmds`` (and a CMD_SYNC) into the ring,
    publish them with one CMDQ_PROD write, and wait for the SYNC. 0 or -ETIMEDOUT."""
    q = smmu.cmdq
    llq = q.llq
    n = len(cmds) + int(sync)
    if _poll_until_not_full(smmu, n):
        return -ETIMEDOUT.errno
    prod = llq.prod
    for cmd0, cmd1 in cmds:
        entry = Q_ENT(q, prod)
        write64(entry, cmd0)
        write64(entry + 8, cmd1)
        prod = queue_inc_prod_n(ArmSmmuLlQueue(llq.max_n_shift, prod), 1)
    sync_prod = prod
    if sync:
        cmd0, cmd1 = _build_sync_cmd(smmu, prod)
        entry = Q_ENT(q, prod)
        write64(entry, cmd0)
        write64(entry + 8, cmd1)
        prod = queue_inc_prod_n(ArmSmmuLlQueue(llq.max_n_shift, prod), 1)
    llq.prod = prod
    smmu.cmds_issued += len(cmds)
    if trace_arm_smmu_cmd.enabled:
        names = ",".join(r.CMDQ_OP_NAMES.get(c0 & 0xFF, hex(c0 & 0xFF)) for c0, _ in cmds)
        trace_arm_smmu_cmd(smmu=smmu.name, ops=names, sync=int(sync))
    # dma_wmb(): the entries are in RAM before the SMMU sees the new PROD.
    smmu.base.writel(prod, q.prod_reg)
    if not sync:
        return 0
    smmu.syncs_issued += 1
    return _poll_until_sync(smmu, sync_prod)


def arm_smmu_cmdq_issue_cmd(smmu: ArmSmmuDevice, ent: ArmSmmuCmdqEnt) -> int:
    """``arm_smmu_cmdq_issue_cmd``: one command, no SYNC."""
    return arm_smmu_cmdq_issue_cmdlist(smmu, [arm_smmu_cmdq_build_cmd(ent)], False)


def arm_smmu_cmdq_issue_cmd_with_sync(smmu: ArmSmmuDevice, ent: ArmSmmuCmdqEnt) -> int:
    """``arm_smmu_cmdq_issue_cmd_with_sync``."""
    return arm_smmu_cmdq_issue_cmdlist(smmu, [arm_smmu_cmdq_build_cmd(ent)], True)


@define(eq=False)
class ArmSmmuCmdqBatch:
    """``struct arm_smmu_cmdq_batch``: up to CMDQ_BATCH_ENTRIES commands; a full batch
    is submitted without a SYNC, the last one with."""

    smmu: ArmSmmuDevice
    cmds: list[tuple[int, int]] = field(factory=list)


def arm_smmu_cmdq_batch_add(
    smmu: ArmSmmuDevice, cmds: ArmSmmuCmdqBatch, ent: ArmSmmuCmdqEnt
) -> None:
    """``arm_smmu_cmdq_batch_add``."""
    if len(cmds.cmds) == r.CMDQ_BATCH_ENTRIES:
        arm_smmu_cmdq_issue_cmdlist(smmu, cmds.cmds, False)
        cmds.cmds = []
    cmds.cmds.append(arm_smmu_cmdq_build_cmd(ent))


def arm_smmu_cmdq_batch_submit(smmu: ArmSmmuDevice, cmds: ArmSmmuCmdqBatch) -> int:
    """``arm_smmu_cmdq_batch_submit``: the rest of the batch and a CMD_SYNC."""
    ret = arm_smmu_cmdq_issue_cmdlist(smmu, cmds.cmds, True)
    cmds.cmds = []
    return ret


# -- event queue ----------------------------------------------------------------------------------


def queue_sync_prod_in(q: ArmSmmuQueue, smmu: ArmSmmuDevice) -> int:
    """``queue_sync_prod_in``: -EOVERFLOW when the SMMU toggled OVFLG since last time."""
    prod = smmu.base.readl(q.prod_reg)
    ret = -EOVERFLOW.errno if Q_OVF(prod ^ q.llq.prod) else 0
    q.llq.prod = prod
    return ret


def queue_sync_cons_out(q: ArmSmmuQueue, smmu: ArmSmmuDevice) -> None:
    smmu.base.writel(q.llq.cons, q.cons_reg)


def queue_sync_cons_ovf(q: ArmSmmuQueue, smmu: ArmSmmuDevice) -> None:
    """``queue_sync_cons_ovf``: acknowledge an overflow by copying OVFLG to OVACKFLG."""
    llq = q.llq
    if Q_OVF(llq.prod) == Q_OVF(llq.cons):
        return
    llq.cons = Q_OVF(llq.prod) | Q_WRP(llq, llq.cons) | Q_IDX(llq, llq.cons)
    queue_sync_cons_out(q, smmu)


def queue_remove_raw(q: ArmSmmuQueue, smmu: ArmSmmuDevice) -> tuple[int, ...] | None:
    """``queue_remove_raw``: the next entry, or None when the queue is empty."""
    if queue_empty(q.llq):
        return None
    entry = Q_ENT(q, q.llq.cons)
    evt = tuple(read64(entry + 8 * i) for i in range(q.ent_dwords))
    queue_inc_cons(q.llq)
    queue_sync_cons_out(q, smmu)
    return evt


@define
class ArmSmmuEvent:
    """``struct arm_smmu_event`` (6.14): a decoded event record."""

    id: int
    sid: int
    ssv: bool
    ssid: int
    privileged: bool
    instruction: bool
    read: bool
    s2: bool
    cls: int
    class_tt: bool
    ttrnw: bool
    stall: bool
    stag: int
    iova: int
    ipa: int
    fetch_addr: int
    dev_name: str | None = None


def arm_smmu_decode_event(smmu: ArmSmmuDevice, raw: tuple[int, ...]) -> ArmSmmuEvent:
    """``arm_smmu_decode_event``."""
    e0, e1, e2, e3 = raw
    ssv = bool(FIELD_GET(r.EVTQ_0_SSV, e0))
    sid = FIELD_GET(r.EVTQ_0_SID, e0)
    master = smmu.streams.get(sid)
    return ArmSmmuEvent(
        id=FIELD_GET(r.EVTQ_0_ID, e0),
        sid=sid,
        ssv=ssv,
        ssid=FIELD_GET(r.EVTQ_0_SSID, e0) if ssv else 0,
        privileged=bool(FIELD_GET(r.EVTQ_1_PnU, e1)),
        instruction=bool(FIELD_GET(r.EVTQ_1_InD, e1)),
        read=bool(FIELD_GET(r.EVTQ_1_RnW, e1)),
        s2=bool(FIELD_GET(r.EVTQ_1_S2, e1)),
        cls=FIELD_GET(r.EVTQ_1_CLASS, e1),
        class_tt=FIELD_GET(r.EVTQ_1_CLASS, e1) == 1,
        ttrnw=bool(FIELD_GET(r.EVTQ_1_TT_READ, e1)),
        stall=bool(FIELD_GET(r.EVTQ_1_STALL, e1)),
        stag=FIELD_GET(r.EVTQ_1_STAG, e1),
        iova=FIELD_GET(r.EVTQ_2_ADDR, e2),
        ipa=e3 & r.EVTQ_3_IPA,
        fetch_addr=e3 & r.EVTQ_3_FETCH_ADDR,
        dev_name=None if master is None else master.dev.init_name,
    )


_TRANSLATION_EVENTS = (
    r.EVT_ID_TRANSLATION_FAULT,
    r.EVT_ID_ADDR_SIZE_FAULT,
    r.EVT_ID_ACCESS_FAULT,
    r.EVT_ID_PERMISSION_FAULT,
)


def arm_smmu_dump_event(smmu: ArmSmmuDevice, evt: ArmSmmuEvent) -> None:
    """``arm_smmu_dump_event`` (6.14): one or two ``dev_err`` lines per event."""
    name = r.EVENT_STR.get(evt.id, "UNKNOWN")
    client = evt.dev_name or "(unassigned sid)"
    head = f"event: {name} client: {client} sid: {evt.sid:#x} ssid: {evt.ssid:#x}"
    if evt.id in _TRANSLATION_EVENTS:
        dev_err(smmu, f"{head} iova: {evt.iova:#x} ipa: {evt.ipa:#x}")
        tt = (" ttd_read" if evt.ttrnw else " ttd_write") if evt.class_tt else ""
        dev_err(
            smmu,
            f"{'priv' if evt.privileged else 'unpriv'} {'inst' if evt.instruction else 'data'} "
            f"{'read' if evt.read else 'write'} {'s2' if evt.s2 else 's1'} "
            f'"{r.EVENT_CLASS_STR[evt.cls]}"{tt}{" stall" if evt.stall else ""} '
            f"stag: {evt.stag:#x}",
        )
    elif evt.id in (r.EVT_ID_STE_FETCH_FAULT, r.EVT_ID_CD_FETCH_FAULT):
        dev_err(smmu, f"{head} fetch addr: {evt.fetch_addr:#x}")
    else:
        dev_err(smmu, head)


def arm_smmu_handle_event(smmu: ArmSmmuDevice, evt: ArmSmmuEvent) -> None:
    """Hand a translation fault of a known master to the IOMMU core's fault reporting
    (``report_iommu_fault``); Linux 6.14 reports only stall events there and
    logs the rest, this driver does both for the four translation faults."""
    master = smmu.streams.get(evt.sid)
    if master is None or evt.id not in _TRANSLATION_EVENTS:
        return
    flags = IOMMU_FAULT_READ if evt.read else IOMMU_FAULT_WRITE
    report_iommu_fault(master.dev, evt.iova, flags, evt.ssid if evt.ssv else None)


def arm_smmu_evtq_thread(irq: int, smmu: ArmSmmuDevice) -> int:
    """``arm_smmu_evtq_thread``: drain the event queue, decode and log each record."""
    q = smmu.evtq
    while True:
        while (raw := queue_remove_raw(q, smmu)) is not None:
            evt = arm_smmu_decode_event(smmu, raw)
            smmu.events.append(evt)
            arm_smmu_dump_event(smmu, evt)
            arm_smmu_handle_event(smmu, evt)
        if queue_sync_prod_in(q, smmu) == -EOVERFLOW.errno:
            dev_err(smmu, "EVTQ overflow detected -- events lost")
        if queue_empty(q.llq):
            break
    queue_sync_cons_ovf(q, smmu)
    return IRQ_HANDLED


# -- PRI queue -------------------------------------------------------------------------------


def arm_smmu_handle_ppr(smmu: ArmSmmuDevice, evt: tuple[int, ...]) -> None:
    """``arm_smmu_handle_ppr``: what 6.12 does with a page request — nothing but
    report it. The driver never enables PRI on a master (there is no IOPF path for
    PRI in arm-smmu-v3; only stall-capable masters get IOPF), so any page request is
    unexpected: it is logged and, when it ends its group, denied with CMD_PRI_RESP
    (RESP=Deny, which the function sees as Invalid Request). The command is issued
    without a CMD_SYNC, as in Linux (``arm_smmu_cmdq_issue_cmd``)."""
    e0, e1 = evt[0], evt[1]
    sid = FIELD_GET(r.PRIQ_0_SID, e0)
    ssv = bool(FIELD_GET(r.PRIQ_0_SSID_V, e0))
    ssid = FIELD_GET(r.PRIQ_0_SSID, e0) if ssv else 0
    last = bool(FIELD_GET(r.PRIQ_0_PRG_LAST, e0))
    grpid = FIELD_GET(r.PRIQ_1_PRG_IDX, e1)
    dev_info(smmu, "unexpected PRI request received:")
    dev_info(
        smmu,
        f"\tsid 0x{sid:08x}.0x{ssid:05x}: [{grpid}{'L' if last else ''}] "
        f"{'' if e0 & r.PRIQ_0_PERM_PRIV else 'un'}privileged "
        f"{'R' if e0 & r.PRIQ_0_PERM_READ else ''}{'W' if e0 & r.PRIQ_0_PERM_WRITE else ''}"
        f"{'X' if e0 & r.PRIQ_0_PERM_EXEC else ''} access at iova "
        f"0x{e1 & r.PRIQ_1_ADDR_MASK:016x}",
    )
    smmu.ppr_seen += 1
    if last:
        cmd = ArmSmmuCmdqEnt(
            r.CMDQ_OP_PRI_RESP,
            sid=sid,
            ssid=ssid,
            substream_valid=ssv,
            grpid=grpid,
            resp=r.PRI_RESP_DENY,
        )
        arm_smmu_cmdq_issue_cmd(smmu, cmd)


def arm_smmu_priq_thread(irq: int, smmu: ArmSmmuDevice) -> int:
    """``arm_smmu_priq_thread``: drain the PRI queue, handling each request; report a
    lost request once per overflow and acknowledge it."""
    q = smmu.priq
    while True:
        while (evt := queue_remove_raw(q, smmu)) is not None:
            arm_smmu_handle_ppr(smmu, evt)
        if queue_sync_prod_in(q, smmu) == -EOVERFLOW.errno:
            dev_err(smmu, "PRIQ overflow detected -- requests lost")
        if queue_empty(q.llq):
            break
    queue_sync_cons_ovf(q, smmu)
    return IRQ_HANDLED


# -- global errors ---------------------------------------------------------------------------

_CERROR_STR = ("No error", "Illegal command", "Abort on command fetch", "ATC invalidate timeout")


def __arm_smmu_cmdq_skip_err(smmu: ArmSmmuDevice) -> None:
    """``__arm_smmu_cmdq_skip_err``: an illegal command is overwritten with a CMD_SYNC
    (so the queue can resume past it); a fetch abort is retried; an ATC timeout
    leaves the SYNC in place."""
    q = smmu.cmdq
    cons = smmu.base.readl(q.cons_reg)
    idx = FIELD_GET(r.CMDQ_CONS_ERR, cons)
    text = _CERROR_STR[idx] if idx < len(_CERROR_STR) else "Unknown"
    dev_err(smmu, f"CMDQ error (cons 0x{cons:08x}): {text}")
    if idx == r.CMDQ_ERR_CERROR_ABT_IDX:
        dev_err(smmu, "retrying command fetch")
        return
    if idx in (r.CMDQ_ERR_CERROR_NONE_IDX, r.CMDQ_ERR_CERROR_ATC_INV_IDX):
        return
    entry = Q_ENT(q, cons)
    dev_err(smmu, "skipping command in error state:")
    for i in range(r.CMDQ_ENT_DWORDS):
        dev_err(smmu, f"\t0x{read64(entry + 8 * i):016x}")
    cmd0, cmd1 = arm_smmu_cmdq_build_cmd(ArmSmmuCmdqEnt(r.CMDQ_OP_CMD_SYNC))
    write64(entry, cmd0)
    write64(entry + 8, cmd1)
    smmu.cmdq_errors_skipped += 1


def arm_smmu_gerror_handler(irq: int, smmu: ArmSmmuDevice) -> int:
    """``arm_smmu_gerror_handler``: report the active global errors, recover a
    command-queue error, acknowledge by copying GERROR into GERRORN."""
    base = smmu.base
    gerror = base.readl(r.ARM_SMMU_GERROR)
    gerrorn = base.readl(r.ARM_SMMU_GERRORN)
    active = (gerror ^ gerrorn) & r.GERROR_ERR_MASK
    if not active:
        return IRQ_NONE
    dev_warn(smmu, f"unexpected global error reported (0x{active:08x}), this could be serious")
    if active & r.GERROR_SFM_ERR:
        dev_err(smmu, "device has entered Service Failure Mode!")
    if active & r.GERROR_MSI_GERROR_ABT_ERR:
        dev_warn(smmu, "GERROR MSI write aborted")
    if active & r.GERROR_MSI_EVTQ_ABT_ERR:
        dev_warn(smmu, "EVTQ MSI write aborted")
    if active & r.GERROR_MSI_CMDQ_ABT_ERR:
        dev_warn(smmu, "CMDQ MSI write aborted")
    if active & r.GERROR_MSI_PRIQ_ABT_ERR:
        dev_warn(smmu, "PRIQ MSI write aborted")
    if active & r.GERROR_PRIQ_ABT_ERR:
        dev_err(smmu, "PRIQ write aborted -- events may have been lost")
    if active & r.GERROR_EVTQ_ABT_ERR:
        dev_err(smmu, "EVTQ write aborted -- events may have been lost")
    if active & r.GERROR_CMDQ_ERR:
        __arm_smmu_cmdq_skip_err(smmu)
    base.writel(gerror, r.ARM_SMMU_GERRORN)
    return IRQ_HANDLED
