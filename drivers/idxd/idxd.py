"""drivers/dma/idxd/idxd.h: the driver's structures (device, groups, engines,
work queues, descriptors, interrupt entries) and the small predicates on them.

Differences from Linux: no ``conf_dev``/sysfs kobjects (the configuration API in
:mod:`drivers.idxd.sysfs` sets these fields), no percpu refs or sbitmap (one
thread: a free list of descriptor slots), and the hardware descriptor is a
:class:`DsaHwDesc` object copied to the portal, as the 64-byte store does in C.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field

from kernel.delay import Completion
from kernel.dma.dmaengine import DmaAsyncTxDescriptor, DmaChan, DmaDevice
from kernel.io import IoMem
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.pci import PciDev
from kernel.uapi.idxd import DsaCompletionRecord, DsaHwDesc

IDXD_WQT_NONE = "none"
IDXD_WQT_KERNEL = "kernel"
IDXD_WQT_USER = "user"
WQ_TYPES = (IDXD_WQT_NONE, IDXD_WQT_KERNEL, IDXD_WQT_USER)

IDXD_WQ_DISABLED = "disabled"
IDXD_WQ_ENABLED = "enabled"
IDXD_DEV_DISABLED = "disabled"
IDXD_DEV_ENABLED = "enabled"
IDXD_DEV_HALTED = "halted"

IDXD_COMPLETE_NORMAL = 0
IDXD_COMPLETE_ABORT = 1
IDXD_COMPLETE_DEV_FAIL = 2

IDXD_ENQCMDS_RETRIES = 32
IDXD_ENQCMDS_MAX_RETRIES = 64
WQ_DEFAULT_QUEUE_DEPTH = 16
WQ_DEFAULT_MAX_XFER_SHIFT = 21  # 2 MiB, accel-config's default max_transfer_size
WQ_DEFAULT_MAX_BATCH_SHIFT = 5
WQ_NAME_SIZE = 1024
DSA_COMP_RECORD_SIZE = 32

IDXD_OP_BLOCK = 0
IDXD_OP_NONBLOCK = 1


@define(eq=False)
class IdxdHw:
    """``struct idxd_hw``: the capability registers read at probe."""

    version: int = 0
    gen_cap: int = 0
    wq_cap: int = 0
    group_cap: int = 0
    engine_cap: int = 0
    opcap: tuple[int, ...] = ()
    cmd_cap: int = 0


@define(eq=False)
class IdxdIrqEntry:
    """``struct idxd_irq_entry``: an MSI-X vector, its handle and pending list."""

    id: int
    vector: int = -1
    int_handle: int = -1
    pasid: int = IOMMU_PASID_INVALID
    pending: list[IdxdDesc] = field(factory=list)
    requested: bool = False


@define(eq=False)
class IdxdDesc:
    """``struct idxd_desc``: one descriptor slot of a WQ and its completion record."""

    id: int
    wq: IdxdWq
    compl_vaddr: int
    compl_dma: int
    hw: DsaHwDesc = field(factory=DsaHwDesc)
    txd: DmaAsyncTxDescriptor | None = None
    len: int = 0
    in_use: bool = False
    status: int = 0
    """Completion status byte seen at completion (kept after the slot is freed)."""
    completion: DsaCompletionRecord | None = None
    reason: int = IDXD_COMPLETE_NORMAL
    callback: Callable[[IdxdDesc], None] | None = None


@define(eq=False)
class IdxdGroup:
    """``struct idxd_group``."""

    id: int
    rdbufs_reserved: int = 0
    rdbufs_allowed: int = 0
    use_rdbuf_limit: bool = False
    tc_a: int = -1
    tc_b: int = -1
    desc_progress_limit: int = 0
    batch_progress_limit: int = 0
    grpcfg_wqs: int = 0
    grpcfg_engines: int = 0
    grpcfg_flags: int = 0


@define(eq=False)
class IdxdEngine:
    """``struct idxd_engine``."""

    id: int
    group_id: int = -1


@define(eq=False)
class IdxdWq:
    """``struct idxd_wq``: configuration (the sysfs knobs) and runtime state."""

    id: int
    idxd: IdxdDevice
    group_id: int = -1
    size: int = 0
    threshold: int = 0
    priority: int = 0
    dedicated: bool = True
    block_on_fault: bool = False
    prs_disable: bool = False
    """``WQ_FLAG_PRS_DISABLE``: no page requests for this WQ (needs WQCAP bit 55)."""
    type: str = IDXD_WQT_NONE
    name: str = ""
    driver_name: str = ""
    max_xfer_shift: int = WQ_DEFAULT_MAX_XFER_SHIFT
    max_batch_shift: int = WQ_DEFAULT_MAX_BATCH_SHIFT
    enqcmds_retries: int = IDXD_ENQCMDS_RETRIES
    state: str = IDXD_WQ_DISABLED
    wqcfg: list[int] = field(factory=lambda: [0] * 8)
    portal: IoMem | None = None
    portal_offset: int = 0
    ie: IdxdIrqEntry | None = None
    descs: list[IdxdDesc] = field(factory=list)
    free_descs: list[int] = field(factory=list)
    compls_vaddr: int | None = None
    descs_shadow: int | None = None
    compls_dma: int = 0
    compls_size: int = 0
    num_descs: int = 0
    dma_dev: DmaDevice | None = None
    dma_chan: DmaChan | None = None
    pasid: int = IOMMU_PASID_INVALID
    """A dedicated user WQ's PASID while a process has it open (``wq->wqcfg->pasid``)."""
    idxd_cdev: Any = None
    """The character device of a user WQ (:class:`drivers.idxd.cdev.IdxdCdev`)."""
    upasid_xa: dict[int, Any] = field(factory=dict)
    """PASID -> user context of the processes that have the WQ open."""
    client_count: int = 0
    """``idxd_wq_refcount``: open files of a user WQ."""
    submitted: int = 0
    completed: int = 0
    errors: int = 0
    enqcmds_retried: int = 0

    @property
    def shared(self) -> bool:
        return not self.dedicated

    @property
    def name_dev(self) -> str:
        return f"wq{self.idxd.id}.{self.id}"

    @property
    def in_flight(self) -> int:
        return sum(1 for d in self.descs if d.in_use)


@define(eq=False)
class IdxdDevice:
    """``struct idxd_device``."""

    pdev: PciDev
    id: int = 0
    hw: IdxdHw = field(factory=IdxdHw)
    reg_base: IoMem | None = None
    wq_base: IoMem | None = None
    state: str = IDXD_DEV_DISABLED
    pasid: int = IOMMU_PASID_INVALID
    pasid_enabled: bool = False
    """``IDXD_FLAG_PASID_ENABLED``: the system PASID is attached."""
    pasid_api: str = ""
    """The IOMMU core's PASID API generation used to attach it."""
    user_pasid_enabled: bool = False
    """``IDXD_FLAG_USER_PASID_ENABLED``: IOPF and SVA on (user WQs may bind mms)."""
    configurable: bool = False
    max_groups: int = 0
    max_engines: int = 0
    max_wqs: int = 0
    max_wq_size: int = 0
    max_rdbufs: int = 0
    max_xfer_bytes: int = 0
    max_batch_size: int = 0
    rdbuf_limit: int = 0
    wqcfg_size: int = 32
    grpcfg_offset: int = 0
    wqcfg_offset: int = 0
    msix_perm_offset: int = 0
    irq_cnt: int = 0
    misc_ie: IdxdIrqEntry = field(factory=lambda: IdxdIrqEntry(0))
    groups: list[IdxdGroup] = field(factory=list)
    engines: list[IdxdEngine] = field(factory=list)
    wqs: list[IdxdWq] = field(factory=list)
    cmd_done: Completion = field(factory=Completion)
    cmd_status: int = 0
    sw_err: tuple[int, int, int, int] = (0, 0, 0, 0)
    swerr_count: int = 0
    halts: int = 0
    resets: int = 0
    allocs: list[int] = field(factory=list)
    """kzalloc'ed shadows of the C structures (freed at remove; leak checks see them)."""
    reinit_timer: Any = None
    user_int_en: bool = False
    kernel_priv: bool = False
    """``idxd.kernel_priv``: the 2022 privileged kernel descriptors with a PASID."""
    user_submission_safe: bool = False
    """``idxd->user_submission_safe``: false for the DSA 1.0 parts (INTEL-SA-01084), so
    mapping a portal needs CAP_SYS_RAWIO and batches cannot go through ``write``."""
    sva: Any = None
    """5.15 ``idxd->sva``: the supervisor SVA bond (``iommu.pasid_api=kernel-sva``)."""

    @property
    def name(self) -> str:
        return f"dsa{self.id}"

    def wq_pasid_enabled(self, wq: IdxdWq) -> bool:
        """``wq_pasid_enabled``: a kernel WQ with the system PASID, or a user WQ
        with SVA."""
        if wq.type == IDXD_WQT_KERNEL:
            return self.pasid_enabled
        return wq.type == IDXD_WQT_USER and self.user_pasid_enabled

    def wq_shared_supported(self, wq: IdxdWq) -> bool:
        """``wq_shared_supported``: ENQCMDS needs the WQ's PASID."""
        return self.wq_pasid_enabled(wq)
