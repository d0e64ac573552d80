"""Block on fault (DSA spec 3.10 / 8.1.2; facts B3, B8, B13, B14).

A descriptor with flag BOF on a WQ configured with WQCFG.bof (needs GENCAP bit 0) does
not complete at a page fault it can recover from: when the device's ATS Translation
Request came back with R=W=0 (:attr:`hw.bus.DmaFault.no_access`), the device sends a
PCIe page request for the faulting page through its PRI (:mod:`hw.pri`), keeps the
descriptor in its WQ (it still counts in the occupancy) and waits. On a Success
response it retries the descriptor; on Invalid Request or Response Failure it ends it
with a partial completion: status 0x04 (page response "invalid request") with bit 7
set for a write, the fault address and the bytes completed before the fault.

What is modelled and where it differs from hardware:

- MEMMOVE resumes where it stopped (source, destination and size advance by the bytes
  already moved) and translates from there a window at a time
  (:meth:`hw.dsa.dma.DmaCtx.copy`), so a 2 MiB copy into an untouched buffer costs one
  pass and a few page lookups per page request however many pages fault; every other
  operation is re-run from its start, which gives the same bytes because their buffers
  never overlap (the engine refuses overlap for them). An overlapping MEMMOVE whose
  destination lies above its source would need a backwards copy the model does not do.
- No page request is sent, and the fault completes as without BOF (0x03), when the
  function has PRI disabled or failed, when the WQ has WQCFG.prs_disable (WQCAP bit 55),
  or when the fault is not an R=W=0 completion (a recorded IOMMU fault). This reading of
  the spec is the model's.
- Faults inside a BATCH, on a batch's descriptor list and on the completion record do
  not block. Drain commands do not wait for blocked descriptors; Abort drops them (a
  later response is ignored).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import define

from hw.pri import PRG_RESP_SUCCESS
from hw.uapi import idxd

if TYPE_CHECKING:
    from hw.bus import DmaFault
    from hw.dsa.device import DsaDevice
    from hw.dsa.dma import DmaCtx
    from hw.dsa.engine import Job
    from hw.uapi.idxd import DsaCompletionRecord, DsaHwDesc

RESUMABLE = frozenset({idxd.DSA_OPCODE_MEMMOVE})
"""Operations that continue from the bytes already done after a page response."""


@define(slots=True)
class BofStats:
    page_requests: int = 0
    """Descriptors blocked on a page request."""
    retries: int = 0
    """Descriptors retried after a Success response."""
    failed: int = 0
    """Descriptors ended by an Invalid Request / Response Failure response."""


def _advance(raw: bytes, n: int) -> bytes:
    """The descriptor with source and destination advanced and size cut by ``n``."""
    b = bytearray(raw)
    for off in (16, 24):
        v = int.from_bytes(b[off : off + 8], "little") + n
        b[off : off + 8] = (v & (1 << 64) - 1).to_bytes(8, "little")
    size = int.from_bytes(b[32:36], "little") - n
    b[32:36] = size.to_bytes(4, "little")
    return bytes(b)


class BlockOnFault:
    """The device's page-request wait for blocked descriptors."""

    def __init__(self, dev: DsaDevice) -> None:
        self.dev = dev
        self.stats = BofStats()

    def block(self, job: Job, d: DsaHwDesc, ctx: DmaCtx, cr: DsaCompletionRecord) -> bool:
        """Try to block ``job`` on the fault that stopped it; False: complete it now."""
        fault = ctx.fault
        dev = self.dev
        wq = dev.wqs[job.wq]
        pri = dev.pri
        if fault is None or not fault.no_access or pri is None or wq.prs_disable:
            return False
        done = int(cr.bytes_completed)

        def answered(code: int) -> None:
            self._answered(job, d, done, fault, code)

        job.answered = False
        if not pri.request(job.pasid, job.priv, False, fault.addr, fault.write, answered):
            return False
        self.stats.page_requests += 1
        if job.seq not in wq.pending and not job.answered:
            job.blocked = True
            wq.pending[job.seq] = job
            dev.update_occupancy(wq)
        if dev.machine is not None:
            dev.machine.emit(
                "hw_dsa:page_fault_block",
                dev=str(dev.addr),
                wq=job.wq,
                pasid=job.pasid,
                addr=fault.addr,
                write=fault.write,
            )
        return True

    def _answered(self, job: Job, d: DsaHwDesc, done: int, fault: DmaFault, code: int) -> None:
        dev = self.dev
        m = dev.machine
        wq = dev.wqs[job.wq]
        if job.blocked and job.seq not in wq.pending:
            return  # aborted while waiting
        job.blocked = False
        job.answered = True
        if code == PRG_RESP_SUCCESS:
            self.stats.retries += 1
            job.resumed = True
            if d.opcode in RESUMABLE and done:
                job.raw = _advance(job.raw, done)
                job.done += done
        else:
            self.stats.failed += 1
            job.failed = (fault, job.done + done)
        wq.pending[job.seq] = job
        dev.update_occupancy(wq)
        if m is not None:
            delay = dev.cfg.desc_latency_ns
            job.event = m.clock.schedule(delay, lambda: dev.run_job(job), "dsa:bof")

    @staticmethod
    def fail(job: Job, cr: DsaCompletionRecord) -> None:
        """The partial completion of a descriptor whose page request was refused."""
        assert job.failed is not None
        fault, done = job.failed
        status = idxd.DSA_COMP_PAGE_FAULT_IR
        cr.status = status | (idxd.DSA_COMP_STATUS_WRITE if fault.write else 0)
        cr.bytes_completed = done
        cr.fault_addr = fault.addr
