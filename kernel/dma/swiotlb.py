"""The software IO TLB (kernel/dma/swiotlb.c): bounce buffers in low memory for
devices that cannot reach a buffer (dma-direct with a narrow mask), for
``swiotlb=force``, and for untrusted devices behind an IOMMU (dma-iommu bounces
sub-granule buffers so the device never sees the rest of the page).

The pool is ``nslabs`` slots of IO_TLB_SIZE (2 KiB) in segments of IO_TLB_SEGSIZE
(128) slots; a mapping takes contiguous free slots inside one segment, aligned to
a page when it is a page or larger, or to the caller's ``alloc_align_mask``. Each
slot remembers the original physical address, so the bounce copies run at the
moments Linux runs them:

- map: original → bounce, always (since the info-leak fix, even for
  DMA_FROM_DEVICE, so the device cannot read stale pool contents);
- ``dma_sync_single_for_cpu``: bounce → original for FROM_DEVICE/BIDIRECTIONAL;
- ``dma_sync_single_for_device``: original → bounce for TO_DEVICE/BIDIRECTIONAL;
- unmap: bounce → original for FROM_DEVICE/BIDIRECTIONAL (unless
  DMA_ATTR_SKIP_CPU_SYNC).

A driver that reads its buffer before ``dma_sync_single_for_cpu`` sees the bytes
from before the device wrote — as on real hardware with swiotlb.

Boot: ``swiotlb=<nslabs>[,<nareas>][,force|noforce]``. The pool is set up at
``core_initcall`` time from the lowest free pages when ``swiotlb=`` asks for it,
when RAM ends above 4 GiB, or when firmware marks a PCI port external-facing
(its devices are untrusted). Differences from Linux: the default size is 64 MiB
capped at a quarter of usable RAM (small test machines); one pool, no dynamic pools, no
areas (one CPU); ``min_align_mask`` is not modelled (0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import define, field

from kernel.context import current
from kernel.device import Device
from kernel.dma.direction import (
    DMA_ATTR_NO_WARN,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
)
from kernel.init import initcall
from kernel.mm import (
    PAGE_OFFSET,
    PAGE_SIZE,
    alloc_pages_exact,
    free_pages_exact,
    memcpy,
)
from kernel.module import InitLevel
from kernel.params import Param
from kernel.printk import dev_warn, pr_info, pr_warn

if TYPE_CHECKING:
    from kernel.boot import Kernel

IO_TLB_SHIFT = 11
IO_TLB_SIZE = 1 << IO_TLB_SHIFT
IO_TLB_SEGSIZE = 128
IO_TLB_DEFAULT_SIZE = 64 << 20
INVALID_PHYS_ADDR = -1
SWIOTLB_KEY = "swiotlb"
_4G = 1 << 32


@define(eq=False)
class IoTlbMem:
    """``struct io_tlb_mem`` with its one ``io_tlb_pool``."""

    start: int
    nslabs: int
    vaddr: int
    force_bounce: bool = False
    orig_addr: list[int] = field(factory=list)
    alloc_size: list[int] = field(factory=list)
    used: int = 0
    index: int = 0
    warned: set[str] = field(factory=set)

    @property
    def end(self) -> int:
        return self.start + (self.nslabs << IO_TLB_SHIFT)


@define(frozen=True)
class SwiotlbParam:
    nslabs: int = 0
    force: bool | None = None


def _parse(text: str | None) -> SwiotlbParam:
    """``setup_io_tlb_npages``: ``<nslabs>[,<nareas>][,force|noforce]``; a bad
    number is ignored as Linux's ``simple_strtoul`` stops at it."""
    nslabs = 0
    force: bool | None = None
    for i, part in enumerate((text or "").split(",")):
        part = part.strip()
        if part in ("force", "noforce"):
            force = part == "force"
        elif i == 0 and part.isdigit():
            nslabs = -(-int(part) // IO_TLB_SEGSIZE) * IO_TLB_SEGSIZE
    return SwiotlbParam(nslabs, force)


def io_tlb_default_mem() -> IoTlbMem | None:
    """The current kernel's pool (``io_tlb_default_mem``), None when not set up."""
    mem = current.kernel.subsys.get(SWIOTLB_KEY)
    return mem if isinstance(mem, IoTlbMem) else None


def _teardown(k: Kernel) -> None:
    mem = k.subsys.pop(SWIOTLB_KEY, None)
    if isinstance(mem, IoTlbMem):
        free_pages_exact(mem.vaddr, mem.nslabs << IO_TLB_SHIFT)


@initcall(InitLevel.CORE, "swiotlb_init", _teardown)
def swiotlb_init(k: Kernel) -> None:
    """``swiotlb_init``: the pool from the lowest free memory, when needed."""
    p = k.cmdline.register(Param("swiotlb", SwiotlbParam(), _parse, "bounce buffer size, force"))
    param = p.value
    assert isinstance(param, SwiotlbParam)
    fw = k.machine.firmware
    external = bool(fw.external_facing)
    if not (param.force is True or param.nslabs > 0 or k.mm.mem.size > _4G or external):
        return
    ram = sum(size for _, size in fw.e820_ram)
    size = param.nslabs << IO_TLB_SHIFT or min(IO_TLB_DEFAULT_SIZE, ram // 4)
    size -= size % (IO_TLB_SEGSIZE << IO_TLB_SHIFT)
    vaddr = alloc_pages_exact(size, 0) if size > 0 else None
    if vaddr is None:
        pr_warn(f"software IO TLB: Cannot allocate buffer of {size} bytes")
        return
    nslabs = size >> IO_TLB_SHIFT
    mem = IoTlbMem(
        vaddr - PAGE_OFFSET,
        nslabs,
        vaddr,
        force_bounce=param.force is True,
        orig_addr=[INVALID_PHYS_ADDR] * nslabs,
        alloc_size=[0] * nslabs,
    )
    k.subsys[SWIOTLB_KEY] = mem
    pr_info(f"software IO TLB: mapped [mem {mem.start:#018x}-{mem.end - 1:#018x}] ({size >> 20}MB)")


def is_swiotlb_active(dev: Device) -> bool:
    """``is_swiotlb_active``."""
    mem = io_tlb_default_mem()
    return mem is not None and mem.nslabs > 0


def is_swiotlb_force_bounce(dev: Device) -> bool:
    mem = io_tlb_default_mem()
    return mem is not None and mem.force_bounce


def is_swiotlb_buffer(dev: Device, paddr: int) -> bool:
    """``is_swiotlb_buffer``: only devices that ever bounced can own one."""
    if not dev.dma_uses_io_tlb:
        return False
    mem = io_tlb_default_mem()
    return mem is not None and mem.start <= paddr < mem.end


def swiotlb_max_mapping_size(dev: Device) -> int:
    """``swiotlb_max_mapping_size``: one segment (no min_align_mask here)."""
    return IO_TLB_SIZE * IO_TLB_SEGSIZE


def swiotlb_used(dev: Device) -> int:
    """Slots in use (debugfs ``io_tlb_used``)."""
    mem = io_tlb_default_mem()
    return 0 if mem is None else mem.used


def _find_slots(mem: IoTlbMem, alloc_size: int, align_mask: int) -> int:
    """``swiotlb_search_pool_area``: ``nslots`` free slots in one segment whose start
    is aligned to ``align_mask``, searched from the last position; -1 if none."""
    nslots = -(-alloc_size // IO_TLB_SIZE)
    if alloc_size >= PAGE_SIZE:
        align_mask |= PAGE_SIZE - 1
    stride = max(1, (align_mask + 1) >> IO_TLB_SHIFT)
    for k in range(0, mem.nslabs, stride):
        i = (mem.index - mem.index % stride + k) % mem.nslabs
        if i // IO_TLB_SEGSIZE != (i + nslots - 1) // IO_TLB_SEGSIZE:
            continue
        if i + nslots > mem.nslabs:
            continue
        if all(mem.orig_addr[j] == INVALID_PHYS_ADDR for j in range(i, i + nslots)):
            mem.index = (i + nslots) % mem.nslabs
            return i
    return -1


def _bounce(mem: IoTlbMem, tlb_addr: int, size: int, dir: int) -> None:
    """``swiotlb_bounce``: copy between the slot and the original buffer."""
    index = (tlb_addr - mem.start) >> IO_TLB_SHIFT
    orig = mem.orig_addr[index]
    if orig == INVALID_PHYS_ADDR:
        return
    orig += tlb_addr & (IO_TLB_SIZE - 1)
    if dir == DMA_TO_DEVICE:
        memcpy(PAGE_OFFSET + tlb_addr, PAGE_OFFSET + orig, size)
    else:
        memcpy(PAGE_OFFSET + orig, PAGE_OFFSET + tlb_addr, size)


def swiotlb_tbl_map_single(
    dev: Device,
    orig_addr: int,
    mapping_size: int,
    alloc_size: int,
    alloc_align_mask: int,
    dir: int,
    attrs: int,
) -> int:
    """``swiotlb_tbl_map_single``: slots for ``alloc_size`` bytes, the original
    copied in; the bounce address, or DMA_MAPPING_ERROR (warned once) when there is
    no pool, the sizes are inconsistent, or the pool is full."""
    mem = io_tlb_default_mem()
    if mem is None:
        dev_warn(
            dev,
            "Can not allocate SWIOTLB buffer earlier and can't now provide you with "
            "the DMA bounce buffer",
        )
        return DMA_MAPPING_ERROR
    if mapping_size > alloc_size or mapping_size <= 0:
        dev_warn(dev, f"Invalid sizes (mapping: {mapping_size} bytes, alloc: {alloc_size} bytes)")
        return DMA_MAPPING_ERROR
    index = (
        _find_slots(mem, alloc_size, alloc_align_mask)
        if alloc_size <= swiotlb_max_mapping_size(dev)
        else -1
    )
    if index == -1:
        if not attrs & DMA_ATTR_NO_WARN:
            dev_warn(
                dev,
                f"swiotlb buffer is full (sz: {alloc_size} bytes), total {mem.nslabs} "
                f"(slots), used {mem.used} (slots)",
            )
        return DMA_MAPPING_ERROR
    nslots = -(-alloc_size // IO_TLB_SIZE)
    for j in range(nslots):
        mem.orig_addr[index + j] = orig_addr + (j << IO_TLB_SHIFT)
        mem.alloc_size[index + j] = alloc_size - (j << IO_TLB_SHIFT)
    mem.used += nslots
    dev.dma_uses_io_tlb = True
    tlb_addr = mem.start + (index << IO_TLB_SHIFT)
    _bounce(mem, tlb_addr, mapping_size, DMA_TO_DEVICE)
    return tlb_addr


def swiotlb_tbl_unmap_single(
    dev: Device, tlb_addr: int, mapping_size: int, dir: int, attrs: int
) -> None:
    """``swiotlb_tbl_unmap_single``: copy back for FROM_DEVICE/BIDIRECTIONAL, then
    release the slots."""
    mem = io_tlb_default_mem()
    assert mem is not None  # callers checked is_swiotlb_buffer
    if not attrs & DMA_ATTR_SKIP_CPU_SYNC and dir in (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL):
        _bounce(mem, tlb_addr, mapping_size, DMA_FROM_DEVICE)
    index = (tlb_addr - mem.start) >> IO_TLB_SHIFT
    nslots = -(-mem.alloc_size[index] // IO_TLB_SIZE)
    for j in range(index, index + nslots):
        mem.orig_addr[j] = INVALID_PHYS_ADDR
        mem.alloc_size[j] = 0
    mem.used -= nslots


def swiotlb_sync_single_for_device(dev: Device, tlb_addr: int, size: int, dir: int) -> None:
    """``swiotlb_sync_single_for_device``."""
    mem = io_tlb_default_mem()
    if mem is not None and dir in (DMA_TO_DEVICE, DMA_BIDIRECTIONAL):
        _bounce(mem, tlb_addr, size, DMA_TO_DEVICE)


def swiotlb_sync_single_for_cpu(dev: Device, tlb_addr: int, size: int, dir: int) -> None:
    """``swiotlb_sync_single_for_cpu``."""
    mem = io_tlb_default_mem()
    if mem is not None and dir in (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL):
        _bounce(mem, tlb_addr, size, DMA_FROM_DEVICE)


def swiotlb_map(dev: Device, paddr: int, size: int, dir: int, attrs: int) -> int:
    """``swiotlb_map`` (dma-direct): bounce, and check the device reaches the slot."""
    tlb_addr = swiotlb_tbl_map_single(dev, paddr, size, size, 0, dir, attrs)
    if tlb_addr == DMA_MAPPING_ERROR:
        return DMA_MAPPING_ERROR
    if tlb_addr + size - 1 > dev.dma_mask:
        swiotlb_tbl_unmap_single(dev, tlb_addr, size, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
        mem = io_tlb_default_mem()
        if mem is not None and "overflow" not in mem.warned:
            mem.warned.add("overflow")
            dev_warn(
                dev,
                f"swiotlb addr 0x{tlb_addr:016x}+{size} overflow "
                f"(mask {dev.dma_mask:x}, bus limit 0).",
            )
        return DMA_MAPPING_ERROR
    return tlb_addr
