"""A user-space DSA driver over a VFIO device file, as a VMM or a DPDK-style driver
runs one after binding the device through iommufd.

It reaches the device only through what VFIO hands user space: BAR0 (registers)
and BAR2 (WQ portals) mapped from the device file, and DMA addresses that are
IOVAs of the IOAS (or HWPT) the device is attached to. It configures one dedicated
WQ in group 0 with every engine, submits descriptors with MOVDIR64B and reads the
completion record from its own memory: the user process's (``task``), where the
completion record's IOVA is mapped from. No PASID: the DSA's requests carry the
requester ID only, so they translate through the device's RID attachment.
"""

from __future__ import annotations

from attrs import define

from hw.dsa import registers as regs
from kernel.delay import NSEC_PER_USEC, ktime_get_ns, udelay, wait_next_event
from kernel.errno import EFAULT, EIO, ETIMEDOUT
from kernel.io import IoMem, movdir64b
from kernel.sched import TaskStruct, use_task
from kernel.uaccess import copy_from_user, copy_to_user
from kernel.uapi.idxd import (
    DSA_OPCODE_MEMMOVE,
    IDXD_OP_FLAG_BOF,
    IDXD_OP_FLAG_CRAV,
    IDXD_OP_FLAG_RCR,
    DsaCompletionRecord,
    DsaHwDesc,
)
from kernel.vfio.device_cdev import VfioDeviceFile

CMD_ENABLE_DEVICE = 1
CMD_DISABLE_DEVICE = 2
CMD_ENABLE_WQ = 6
WQCFG_MIN_SHIFT = 5
WQ_SIZE = 16


@define(eq=False)
class VfioDsa:
    """The driver: ``enable()``, then ``memmove(...)`` any number of times, then
    ``disable()`` before the device file is closed."""

    bar0: IoMem
    bar2: IoMem
    task: TaskStruct
    """The process the driver runs in (its memory holds the completion records)."""

    @classmethod
    def open(cls, vfio: VfioDeviceFile, task: TaskStruct) -> VfioDsa:
        return cls(vfio.region(0), vfio.region(2), task)

    def _store(self, uptr: int, data: bytes) -> None:
        with use_task(self.task):
            if copy_to_user(uptr, data):
                raise EFAULT(f"completion record at {uptr:#x} is not writable")

    def _load(self, uptr: int, size: int) -> bytes:
        with use_task(self.task):
            data, left = copy_from_user(uptr, size)
        if left:
            raise EFAULT(f"completion record at {uptr:#x} is not readable")
        return data

    def _cmd(self, cmd: int, operand: int = 0) -> None:
        self.bar0.writel(regs.CMD.encode(cmd=cmd, operand=operand), regs.CMD_OFFSET)
        for _ in range(1000):
            sts = self.bar0.readl(regs.CMDSTS_OFFSET)
            if not sts >> 31:
                if sts & 0xFF:
                    raise EIO(f"DSA command {cmd} failed with status {sts & 0xFF:#x}")
                return
            udelay(1)
        raise ETIMEDOUT(f"DSA command {cmd}")

    def enable(self, pasid: int | None = None, bof: bool = False) -> None:
        """Configure WQ 0 (dedicated, 16 entries) in group 0 with all engines, enable
        the device and the WQ. With ``pasid`` the WQ tags every request with it (the
        device then translates through that PASID's attachment); with ``bof`` the WQ
        allows block-on-fault (descriptors then ask for it, see :meth:`submit`)."""
        table = self.bar0.readq(regs.TABLE_OFFSETS_OFFSET)
        grpcfg = (table & 0xFFFF) * regs.TABLE_OFFSET_MULT
        wqcfg = ((table >> 16) & 0xFFFF) * regs.TABLE_OFFSET_MULT
        engines = self.bar0.readq(regs.ENGCAP_OFFSET) & 0xFF
        self.bar0.writel(WQ_SIZE, wqcfg)
        mode = regs.WQCFG_MODE.encode(
            mode=1, priority=1, pasid_en=int(pasid is not None), pasid=pasid or 0, bof=int(bof)
        )
        self.bar0.writel(mode, wqcfg + 8)
        self.bar0.writel(
            regs.WQCFG_SHIFTS.encode(max_xfer_shift=31, max_batch_shift=10), wqcfg + 12
        )
        self.bar0.writeq(1, grpcfg)  # WQ 0
        self.bar0.writeq((1 << engines) - 1, grpcfg + 32)
        self._cmd(CMD_ENABLE_DEVICE)
        self._cmd(CMD_ENABLE_WQ, 0)

    def disable(self) -> None:
        self._cmd(CMD_DISABLE_DEVICE)

    def submit(
        self,
        src_iova: int,
        dst_iova: int,
        size: int,
        cr_iova: int,
        cr_uptr: int,
        bof: bool = False,
    ) -> None:
        """Submit a memmove without waiting (``bof``: block on fault, for a WQ
        enabled with it); :meth:`wait` reads the record."""
        self._store(cr_uptr, bytes(DsaCompletionRecord.SIZE))
        desc = DsaHwDesc(
            opcode=DSA_OPCODE_MEMMOVE,
            flags=IDXD_OP_FLAG_CRAV | IDXD_OP_FLAG_RCR | (IDXD_OP_FLAG_BOF if bof else 0),
            completion_addr=cr_iova,
            src_addr=src_iova,
            dst_addr=dst_iova,
            xfer_size=size,
        )
        movdir64b(self.bar2, desc.to_bytes())

    def memmove(
        self, src_iova: int, dst_iova: int, size: int, cr_iova: int, cr_uptr: int
    ) -> DsaCompletionRecord:
        """Copy ``size`` bytes between IOVAs; the completion record goes to
        ``cr_iova``, which user space sees at ``cr_uptr``. Returns the record."""
        self.submit(src_iova, dst_iova, size, cr_iova, cr_uptr)
        return self.wait(cr_uptr)

    def wait(self, cr_uptr: int) -> DsaCompletionRecord:
        """Poll the completion record at ``cr_uptr`` until the device wrote it, for up to
        10 ms of virtual time. Between reads it runs to the next clock event, the only
        thing that makes the device write: what a user spinning on the record sees, in
        as many reads as there are events (a 1 us step took 10,000 to time out)."""
        deadline = ktime_get_ns() + 10_000 * NSEC_PER_USEC
        while True:
            rec = DsaCompletionRecord.from_bytes(self._load(cr_uptr, DsaCompletionRecord.SIZE))
            if rec.status:
                return rec
            if not wait_next_event(deadline):
                raise ETIMEDOUT("DSA memmove never completed")
