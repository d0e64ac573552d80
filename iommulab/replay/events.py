"""Typed records of the ftrace events ``iommulab replay`` reads.

One frozen record per event class Linux 6.12 defines in ``include/trace/events/dma.h``,
``include/trace/events/iommu.h`` and ``drivers/iommu/intel/trace.h``, plus the trace's
own markers (``tracing_mark_write``) and lost-event notes. Every record carries the
line it came from (1-based), the timestamp in nanoseconds, the CPU and the task, so a
finding can name the lines involved. Numbers are ints, directions the names
``decode_dma_data_direction`` prints (``TO_DEVICE`` ...), hashed pointers are kept as
printed text (``(____ptrval____)`` or a hash): nothing reads them as addresses.
"""

from __future__ import annotations

from attrs import frozen

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


@frozen
class Event:
    """The columns every ftrace line has: line number, time, CPU, task."""

    line: int
    ts_ns: int
    cpu: int
    task: str

    @property
    def name(self) -> str:
        return ""

    def stamp(self) -> str:
        """The timestamp as ftrace prints it (seconds with microseconds)."""
        sec, ns = divmod(self.ts_ns, 1_000_000_000)
        return f"{sec}.{ns // 1000:06d}"


# --------------------------------------------------------------------------- dma:*


@frozen
class DmaMap(Event):
    """``dma:dma_map_page`` / ``dma:dma_map_resource`` (class ``dma_map``)."""

    event: str
    device: str
    dir: str
    dma_addr: int
    size: int
    phys_addr: int
    attrs: str

    @property
    def name(self) -> str:
        return self.event


@frozen
class DmaUnmap(Event):
    """``dma:dma_unmap_page`` / ``dma:dma_unmap_resource`` (class ``dma_unmap``)."""

    event: str
    device: str
    dir: str
    dma_addr: int
    size: int
    attrs: str

    @property
    def name(self) -> str:
        return self.event


@frozen
class DmaAlloc(Event):
    """``dma:dma_alloc``, ``dma_alloc_pages``, ``dma_alloc_sgt`` and their ``_err``
    forms (``phys_addrs`` only for the sgt form; ``virt_addr`` as printed, hashed)."""

    event: str
    device: str
    dir: str
    dma_addr: int
    size: int
    virt_addr: str
    flags: str
    attrs: str
    phys_addrs: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return self.event

    @property
    def failed(self) -> bool:
        return self.event.endswith("_err")


@frozen
class DmaFree(Event):
    """``dma:dma_free``, ``dma_free_pages``, ``dma_free_sgt``."""

    event: str
    device: str
    dir: str
    dma_addr: int
    size: int
    virt_addr: str
    attrs: str
    phys_addrs: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return self.event


@frozen
class DmaMapSg(Event):
    """``dma:dma_map_sg`` (and ``dma_map_sg_err``, whose ``dma_addrs`` Linux fills
    with the physical addresses and whose ``err`` is set)."""

    event: str
    device: str
    dir: str
    dma_addrs: tuple[int, ...]
    sizes: tuple[int, ...]
    phys_addrs: tuple[int, ...]
    attrs: str
    err: int = 0

    @property
    def name(self) -> str:
        return self.event


@frozen
class DmaUnmapSg(Event):
    """``dma:dma_unmap_sg``: Linux prints only the physical addresses."""

    device: str
    dir: str
    phys_addrs: tuple[int, ...]
    attrs: str

    @property
    def name(self) -> str:
        return "dma_unmap_sg"


@frozen
class DmaSync(Event):
    """``dma:dma_sync_single_for_{cpu,device}`` and ``dma_sync_sg_for_{cpu,device}``
    (the sg forms with one address and size per entry)."""

    event: str
    device: str
    dir: str
    dma_addrs: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.event

    @property
    def for_cpu(self) -> bool:
        return self.event.endswith("_for_cpu")


# --------------------------------------------------------------------------- iommu:*


@frozen
class IommuMap(Event):
    """``iommu:map``: ``[iova, end)`` to ``paddr``; no domain or device is printed."""

    iova: int
    end: int
    paddr: int
    size: int

    @property
    def name(self) -> str:
        return "map"


@frozen
class IommuUnmap(Event):
    """``iommu:unmap``: the requested ``size`` and what the domain really unmapped."""

    iova: int
    end: int
    size: int
    unmapped_size: int

    @property
    def name(self) -> str:
        return "unmap"


@frozen
class IommuGroup(Event):
    """``iommu:add_device_to_group`` / ``remove_device_from_group``."""

    event: str
    group_id: int
    device: str

    @property
    def name(self) -> str:
        return self.event


@frozen
class IommuAttach(Event):
    """``iommu:attach_device_to_domain``."""

    device: str

    @property
    def name(self) -> str:
        return "attach_device_to_domain"


@frozen
class IoPageFault(Event):
    """``iommu:io_page_fault``: a device's DMA faulted at ``iova``."""

    driver: str
    device: str
    iova: int
    flags: int

    @property
    def name(self) -> str:
        return "io_page_fault"


# --------------------------------------------------------------------------- intel_iommu:*


@frozen
class QiSubmit(Event):
    """``intel_iommu:qi_submit``: one invalidation descriptor as submitted (decode it
    with :func:`iommulab.replay.qi.decode`)."""

    iommu: str
    type: str
    qw0: int
    qw1: int
    qw2: int
    qw3: int

    @property
    def name(self) -> str:
        return "qi_submit"


@frozen
class CacheTag(Event):
    """``intel_iommu:cache_tag_assign`` / ``cache_tag_unassign`` / ``cache_tag_flush_all``."""

    event: str
    iommu: str
    dev: str
    type: str
    did: int
    pasid: int
    ref: int

    @property
    def name(self) -> str:
        return self.event


@frozen
class CacheTagFlush(Event):
    """``intel_iommu:cache_tag_flush_range`` / ``cache_tag_flush_range_np``:
    ``[start, end]`` (inclusive, as printed) flushed as ``pages`` at ``addr``."""

    event: str
    iommu: str
    dev: str
    pasid: int
    type: str
    did: int
    start: int
    end: int
    addr: int
    pages: int
    mask: int

    @property
    def name(self) -> str:
        return self.event


@frozen
class PrqReport(Event):
    """``intel_iommu:prq_report``: a page request, decoded text kept as printed."""

    iommu: str
    dev: str
    seq: int
    text: str

    @property
    def name(self) -> str:
        return "prq_report"


# --------------------------------------------------------------------------- the trace's own


@frozen
class Marker(Event):
    """A ``trace_marker`` write (``tracing_mark_write: TEXT``)."""

    text: str

    @property
    def name(self) -> str:
        return "tracing_mark_write"


@frozen
class Lost(Event):
    """``CPU:N [LOST n EVENTS]``: events of this CPU were dropped here (ts is the
    previous event's)."""

    count: int

    @property
    def name(self) -> str:
        return "lost"


@frozen
class Problem:
    """Input the parser could not read: the line (0 for the whole file) and why."""

    line: int
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "input"
        return f"{where}: {self.message}"
