"""A user program driving a DSA work queue through ``/dev/dsa/wqD.Q`` — what an
application built on accel-config's library does: open the WQ's character device
(binding its address space), map the portal, build descriptors and completion
records in its own memory, submit with ENQCMD (retrying while the WQ says retry),
MOVDIR64B or ``write(2)``, and poll the completion record's status byte.

Everything goes through the modelled process: ``mmap``, user copies that fault
pages in, the ENQCMD instruction with the task's IA32_PASID.
"""

from __future__ import annotations

from attrs import define

from kernel.delay import udelay, wait_next_event
from kernel.fs import close_fd, do_sys_open, ksys_mmap, ksys_write
from kernel.mmap import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from kernel.platform import platform
from kernel.sched import TaskStruct, use_task
from kernel.traps import ENQCMD_RETRY, user_enqcmd, user_movdir64b
from kernel.uaccess import copy_from_user, copy_to_user
from kernel.uapi.idxd import (
    DSA_OPCODE_MEMMOVE,
    IDXD_OP_FLAG_BOF,
    IDXD_OP_FLAG_CC,
    IDXD_OP_FLAG_CRAV,
    IDXD_OP_FLAG_RCR,
    DsaCompletionRecord,
    DsaHwDesc,
)

ENQCMD_MAX_RETRIES = 64
POLL_STEP_US = 1
POLL_TIMEOUT_US = 10_000_000


@define(eq=False)
class UserWq:
    """An open user WQ of one process, with its portal mapped (or not)."""

    task: TaskStruct
    fd: int
    portal: int
    shared: bool
    enqcmd_retries: int = 0

    @classmethod
    def open(
        cls, task: TaskStruct, path: str, shared: bool = True, map_portal: bool = True
    ) -> UserWq:
        """``open(path)`` and, with ``map_portal``, ``mmap`` of its portal page."""
        fd = do_sys_open(task, path)
        portal = 0
        if map_portal:
            portal = ksys_mmap(task, 0, 4096, PROT_WRITE, MAP_SHARED, fd)
        return cls(task, fd, portal, shared)

    def alloc(self, size: int, touch: bool = False) -> int:
        """Anonymous memory (demand-zero); ``touch`` writes every page first."""
        addr = ksys_mmap(
            self.task, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1
        )
        if touch:
            self.store(addr, bytes(size))
        return addr

    def store(self, addr: int, data: bytes) -> None:
        """The program writes its memory (faulting pages in)."""
        with use_task(self.task):
            left = copy_to_user(addr, data)
        if left:
            raise MemoryError(f"pid {self.task.pid}: store at {addr:#x} faulted")

    def load(self, addr: int, size: int) -> bytes:
        with use_task(self.task):
            data, left = copy_from_user(addr, size)
        if left:
            raise MemoryError(f"pid {self.task.pid}: load at {addr:#x} faulted")
        return data

    @staticmethod
    def memmove(src: int, dst: int, size: int, comp: int, bof: bool = False) -> DsaHwDesc:
        """A memmove descriptor with a completion record (user privilege, PASID 0:
        ENQCMD fills it in)."""
        flags = IDXD_OP_FLAG_CRAV | IDXD_OP_FLAG_RCR | IDXD_OP_FLAG_CC
        if bof:
            flags |= IDXD_OP_FLAG_BOF
        return DsaHwDesc(
            opcode=DSA_OPCODE_MEMMOVE,
            flags=flags,
            src_addr=src,
            dst_addr=dst,
            xfer_size=size,
            completion_addr=comp,
        )

    def submit(self, desc: DsaHwDesc, desc_addr: int, via: str = "insn") -> None:
        """Write the descriptor to ``desc_addr`` and submit it: ENQCMD (shared WQ,
        retried while the WQ answers retry) or MOVDIR64B (dedicated) with
        ``via="insn"``, or ``write(2)`` on the file with ``via="write"``."""
        self.store(desc_addr, desc.to_bytes())
        if via == "write":
            ksys_write(self.task, self.fd, desc_addr, 64)
            return
        if not self.shared:
            user_movdir64b(self.task, self.portal, desc_addr)
            return
        for _ in range(ENQCMD_MAX_RETRIES):
            if user_enqcmd(self.task, self.portal, desc_addr) != ENQCMD_RETRY:
                return
            self.enqcmd_retries += 1
            udelay(POLL_STEP_US)
        raise TimeoutError(f"pid {self.task.pid}: ENQCMD refused {ENQCMD_MAX_RETRIES} times")

    def wait(self, comp: int, timeout_us: int = POLL_TIMEOUT_US) -> DsaCompletionRecord:
        """Poll the completion record's status byte until it is non-zero (between
        reads, time runs to the next device event, as a spin loop would see)."""
        deadline = platform().clock.now + timeout_us * 1000
        while True:
            status = self.load(comp, 1)[0]
            if status:
                return DsaCompletionRecord.from_bytes(self.load(comp, 32))
            if not wait_next_event(deadline):
                raise TimeoutError(f"pid {self.task.pid}: no completion at {comp:#x}")

    def close(self) -> None:
        close_fd(self.task, self.fd)
