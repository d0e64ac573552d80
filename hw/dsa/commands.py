"""The CMD/CMDSTS command interface (DSA spec 9.2.9-9.2.10; facts B5).

:func:`execute` runs one command when its completion event fires and returns
``(error, result)`` for CMDSTS. Error-code choices where the facts are silent:
disabling/draining/aborting/resetting an already-disabled WQ succeeds (Linux skips
such commands itself); a WQ that belongs to no group fails Enable WQ with 0x11;
releasing an unknown interrupt handle fails with 0x41. Group errors at Enable
Device: 0x15 a bitmap names a nonexistent WQ or engine, 0x16 a WQ in two groups,
0x17 an engine in two groups, 0x18 a group with WQs but no engines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.dsa import registers as regs_

if TYPE_CHECKING:
    from hw.dsa.device import DsaDevice

CMD_ENABLE_DEVICE = 1
CMD_DISABLE_DEVICE = 2
CMD_DRAIN_ALL = 3
CMD_ABORT_ALL = 4
CMD_RESET_DEVICE = 5
CMD_ENABLE_WQ = 6
CMD_DISABLE_WQ = 7
CMD_DRAIN_WQ = 8
CMD_ABORT_WQ = 9
CMD_RESET_WQ = 10
CMD_DRAIN_PASID = 11
CMD_ABORT_PASID = 12
CMD_REQUEST_INT_HANDLE = 13
CMD_RELEASE_INT_HANDLE = 14

SUCCESS = 0x00
INVAL_CMD = 0x01
INVAL_WQIDX = 0x02
HW_ERR = 0x03
ERR_DEV_ENABLED = 0x10
ERR_CONFIG = 0x11
ERR_BUSMASTER_EN = 0x12
ERR_PASID_INVAL = 0x13
ERR_WQ_SIZE_ERANGE = 0x14
ERR_GRP_CONFIG = 0x15
ERR_GRP_CONFIG2 = 0x16
ERR_GRP_CONFIG3 = 0x17
ERR_GRP_CONFIG4 = 0x18
ERR_DEV_NOTEN = 0x20
ERR_WQ_ENABLED = 0x21
ERR_WQ_SIZE = 0x22
ERR_WQ_PRIOR = 0x23
ERR_WQ_MODE = 0x24
ERR_BOF_EN = 0x25
ERR_PASID_EN = 0x26
ERR_MAX_BATCH_SIZE = 0x27
ERR_MAX_XFER_SIZE = 0x28
ERR_DIS_DEV_EN = 0x31
ERR_DEV_NOT_EN = 0x32
ERR_INVAL_INT_IDX = 0x41
ERR_NO_HANDLE = 0x42


def execute(dev: DsaDevice, code: int, operand: int) -> tuple[int, int]:
    """One command; mirrors what ``idxd_cmd_exec`` expects back in CMDSTS."""
    if code < 1 or code > 14 or not dev.cfg.cmdcap >> code & 1:
        return INVAL_CMD, 0
    if dev.state == regs_.GENSTS_HALTED and code != CMD_RESET_DEVICE:
        return HW_ERR, 0
    if code == CMD_RESET_DEVICE:
        if dev.state == regs_.GENSTS_HALTED and dev.reset_type != regs_.RESET_SOFTWARE:
            return HW_ERR, 0
        dev.reset_device()
        return SUCCESS, 0
    if code == CMD_ENABLE_DEVICE:
        return _enable_device(dev), 0
    if code == CMD_DISABLE_DEVICE:
        if dev.state != regs_.GENSTS_ENABLED:
            return ERR_DIS_DEV_EN, 0
        dev.drain(dev.all_jobs())
        for wq in dev.wqs:
            dev.set_wq_enabled(wq.index, False)
        dev.set_state(regs_.GENSTS_DISABLED)
        return SUCCESS, 0
    if code == CMD_REQUEST_INT_HANDLE:
        return dev.request_int_handle(operand)
    if code == CMD_RELEASE_INT_HANDLE:
        return dev.release_int_handle(operand), 0
    if code == CMD_ENABLE_WQ:
        return _enable_wq(dev, operand), 0
    if dev.state != regs_.GENSTS_ENABLED:
        return ERR_DEV_NOT_EN, 0
    if code in (CMD_DRAIN_ALL, CMD_ABORT_ALL):
        jobs = dev.all_jobs()
        dev.drain(jobs) if code == CMD_DRAIN_ALL else dev.abort(jobs)
        return SUCCESS, 0
    if code in (CMD_DRAIN_PASID, CMD_ABORT_PASID):
        jobs = [j for j in dev.all_jobs() if j.pasid == operand]
        dev.drain(jobs) if code == CMD_DRAIN_PASID else dev.abort(jobs)
        return SUCCESS, 0
    ids = _wq_mask(operand)
    if not ids or max(ids) >= dev.cfg.num_wqs:
        return INVAL_WQIDX, 0
    jobs = [j for j in dev.all_jobs() if j.wq in ids]
    if code in (CMD_DISABLE_WQ, CMD_DRAIN_WQ):
        dev.drain(jobs)
    else:
        dev.abort(jobs)
    if code in (CMD_DISABLE_WQ, CMD_RESET_WQ):
        for i in ids:
            dev.set_wq_enabled(i, False)
    if code == CMD_RESET_WQ:
        for i in ids:
            dev.reset_wqcfg(i)
    return SUCCESS, 0


def _wq_mask(operand: int) -> list[int]:
    block = (operand >> 16) & 0xF
    return [block * 16 + b for b in range(16) if operand >> b & 1]


def _enable_device(dev: DsaDevice) -> int:
    """Enable Device: checks bus mastering, then GENCFG/GRPCFG/WQCFG consistency."""
    cfg = dev.cfg
    if dev.state == regs_.GENSTS_ENABLED:
        return ERR_DEV_ENABLED
    if not dev.bus_master:
        return ERR_BUSMASTER_EN
    wq_owner: dict[int, int] = {}
    eng_owner: dict[int, int] = {}
    rdbufs = 0
    usable = False
    for g in range(cfg.num_groups):
        wqs, engs, flags = dev.grpcfg(g)
        if wqs >> cfg.num_wqs or engs >> cfg.num_engines:
            return ERR_GRP_CONFIG
        for w in range(cfg.num_wqs):
            if wqs >> w & 1:
                if w in wq_owner:
                    return ERR_GRP_CONFIG2
                wq_owner[w] = g
        for e in range(cfg.num_engines):
            if engs >> e & 1:
                if e in eng_owner:
                    return ERR_GRP_CONFIG3
                eng_owner[e] = g
        if wqs and not engs:
            return ERR_GRP_CONFIG4
        rdbufs += regs_.GRPFLAGS.rdbufs_reserved.get(flags)
        if engs and any(wqs >> w & 1 and dev.wqcfg_size(w) for w in range(cfg.num_wqs)):
            usable = True
    if sum(dev.wqcfg_size(w) for w in range(cfg.num_wqs)) > cfg.total_wq_size:
        return ERR_WQ_SIZE_ERANGE
    if not usable or rdbufs > cfg.read_buffers:
        return ERR_CONFIG
    if dev.regs.field("GENCFG", regs_.GENCFG.rdbuf_limit) > cfg.read_buffers:
        return ERR_CONFIG
    dev.latch_groups(wq_owner, eng_owner)
    dev.set_state(regs_.GENSTS_ENABLED)
    return SUCCESS


def _enable_wq(dev: DsaDevice, operand: int) -> int:
    """Enable WQ: the checks of facts B5/B8 in the order of the error codes."""
    cfg = dev.cfg
    w = operand & 0xFFFF
    if w >= cfg.num_wqs:
        return INVAL_WQIDX
    if dev.state != regs_.GENSTS_ENABLED:
        return ERR_DEV_NOTEN
    wq = dev.wqs[w]
    if wq.enabled:
        return ERR_WQ_ENABLED
    size = dev.wqcfg_size(w)
    thresh = dev.wq_field(w, 1, regs_.WQCFG_THRESH.wq_thresh)
    others = sum(q.size for q in dev.wqs if q.enabled)
    if size == 0 or thresh > size or others + size > cfg.total_wq_size:
        return ERR_WQ_SIZE
    if wq.group < 0:
        return ERR_CONFIG
    mode = regs_.WQCFG_MODE
    dw2 = dev.wq_dword(w, 2)
    if mode.priority.get(dw2) == 0:
        return ERR_WQ_PRIOR
    dedicated = bool(mode.mode.get(dw2))
    if (dedicated and not cfg.dedicated_wq) or (not dedicated and not cfg.shared_wq):
        return ERR_WQ_MODE
    bof = bool(mode.bof.get(dw2))
    if bof and not cfg.block_on_fault:
        return ERR_BOF_EN
    pasid_en = bool(mode.pasid_en.get(dw2))
    priv = bool(mode.priv.get(dw2))
    if pasid_en and not dev.pasid_enabled:
        return ERR_PASID_EN
    if not dedicated and not pasid_en:
        return ERR_PASID_EN
    if priv and pasid_en and not dev.pasid_priv_enabled:
        return ERR_PASID_EN
    dw3 = dev.wq_dword(w, 3)
    batch_shift = regs_.WQCFG_SHIFTS.max_batch_shift.get(dw3)
    xfer_shift = regs_.WQCFG_SHIFTS.max_xfer_shift.get(dw3)
    if batch_shift == 0 or batch_shift > cfg.max_batch_shift:
        return ERR_MAX_BATCH_SIZE
    if xfer_shift > cfg.max_xfer_shift:
        return ERR_MAX_XFER_SIZE
    wq.size, wq.thresh, wq.dedicated, wq.bof = size, thresh, dedicated, bof
    wq.prs_disable = cfg.wq_prs_disable and bool(mode.prs_disable.get(dw2))
    wq.pasid, wq.pasid_en, wq.priv = mode.pasid.get(dw2), pasid_en, priv
    wq.max_xfer, wq.max_batch = 1 << xfer_shift, 1 << batch_shift
    wq.op_config = dev.wq_op_config(w)
    dev.set_wq_enabled(w, True)
    return SUCCESS
