"""DMA-API debugging (kernel/dma/debug.c, CONFIG_DMA_API_DEBUG).

Every successful mapping records a :class:`DmaDebugEntry` (device, device address,
size, type, direction, physical address, sg counts, whether ``dma_mapping_error``
was checked, and the mapping's call site: up to five frames outside the DMA and
IOMMU layers). Unmap, free and sync calls are checked against it, and a bus
notifier reports mappings still held when a driver unbinds. Each finding goes
through :func:`err_printk`: ``error_count`` always grows, and a ``WARN`` with the
kernel's text (``DMA-API: <driver> <device>: ...``) plus ``Mapped at:`` and the
saved frames is printed for the first error only, or for every one with
``all_errors`` (debugfs ``dma-api/all_errors``).

Boot parameters: ``dma_debug=off``, ``dma_debug_driver=<name>`` (report only for
that driver). Differences from Linux: entries are matched by (device, address)
with the best-fit score among those, instead of a 16384-bucket hash; the model
has no kernel text/rodata, so that check cannot fire; there is no entry pool (no
"pool grown" or "out of memory" self-disabling).
"""

from __future__ import annotations

import os
import sys
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Protocol

from attrs import define, field

from hw.bus import Finding
from kernel.bug import WARN
from kernel.context import current
from kernel.device import (
    BUS_NOTIFY_UNBOUND_DRIVER,
    Device,
    bus_register_notifier,
    bus_unregister_notifier,
)
from kernel.dma.direction import (
    DIR2NAME,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
)
from kernel.dma.scatterlist import Scatterlist
from kernel.findings import call_chain, report_finding
from kernel.init import initcall
from kernel.mm import (
    PAGE_SHIFT,
    PAGE_SIZE,
    current_mm,
    current_stack,
    is_vmalloc_addr,
    virt_addr_valid,
)
from kernel.module import InitLevel
from kernel.params import Param, parse_str
from kernel.pci import pci_bus_type
from kernel.printk import pr_info, pr_warn

if TYPE_CHECKING:
    from kernel.boot import Kernel

TYPE_SINGLE = "single"
TYPE_SG = "scather-gather"  # sic: debug.c's type2name spelling
TYPE_COHERENT = "coherent"
TYPE_RESOURCE = "resource"
TYPE_NONCOHERENT = "noncoherent"
TYPE_IOVA = "iova"

MAP_ERR_CHECK_NOT_APPLICABLE = 0
MAP_ERR_NOT_CHECKED = 1
MAP_ERR_CHECKED = 2

L1_CACHE_SHIFT = 6
ACTIVE_CACHELINE_MAX_OVERLAP = 7
STACKTRACE_ENTRIES = 5
_HERE = os.path.dirname(os.path.abspath(__file__))
_SKIP = (_HERE + os.sep, os.path.join(os.path.dirname(_HERE), "iommu") + os.sep)


@define(eq=False)
class DmaDebugEntry:
    """``struct dma_debug_entry``."""

    dev: Device
    type: str
    dev_addr: int
    size: int
    direction: int
    paddr: int = 0
    sg_call_ents: int = 0
    sg_mapped_ents: int = 0
    map_err_type: int = MAP_ERR_CHECK_NOT_APPLICABLE
    stack: tuple[tuple[CodeType, int], ...] = ()
    """The call site as (code, instruction offset) pairs, as a stack trace saves return
    addresses; resolved to text only when printed (:func:`format_stack`)."""


@define(eq=False)
class DmaDebugState:
    disabled: bool = False
    all_errors: bool = False
    show_num_errors: int = 1
    error_count: int = 0
    driver_filter: str = ""
    entries: dict[tuple[Device, int], list[DmaDebugEntry]] = field(factory=dict)
    cachelines: dict[int, int] = field(factory=dict)
    overflow_warned: set[int] = field(factory=set)
    errors: list[str] = field(factory=list)


DMA_DEBUG_OFF = DmaDebugState(disabled=True)
"""What a kernel whose ``dma_debug_init`` has not run sees (never modified: disabled)."""
DMA_DEBUG_KEY = "dma_debug"
"""Its slot in :attr:`Kernel.subsys`, filled by ``dma_debug_init``."""


def dma_debug_state() -> DmaDebugState:
    """The current kernel's DMA-API debug state (:data:`DMA_DEBUG_OFF` before
    ``dma_debug_init``). The streaming map/unmap calls of kernel/dma/mapping.py read
    ``disabled`` in line (``current.kernel.subsys.get(DMA_DEBUG_KEY, DMA_DEBUG_OFF)``,
    C's ``dma_debug_disabled()``) and call a hook only when debugging is on."""
    st: DmaDebugState = current.kernel.subsys.get(DMA_DEBUG_KEY, DMA_DEBUG_OFF)
    return st


def _call_site() -> tuple[tuple[CodeType, int], ...]:
    """Up to STACKTRACE_ENTRIES (code, instruction offset) pairs of the callers outside the DMA and
    IOMMU layers (C: ``stack_trace_save`` into the entry). Formatting is left to
    :func:`format_stack`, which runs only when a report is printed."""
    sites: list[tuple[CodeType, int]] = []
    f: FrameType | None = sys._getframe(2)
    while f is not None and len(sites) < STACKTRACE_ENTRIES:
        code = f.f_code
        if not code.co_filename.startswith(_SKIP):
            sites.append((code, f.f_lasti))
        f = f.f_back
    return tuple(sites)


def format_stack(entry: DmaDebugEntry) -> list[str]:
    """The entry's call site as ``file.py:line function`` lines."""
    return [
        f"{code.co_filename.rsplit(os.sep, 1)[-1]}:{_line_of(code, lasti)} {code.co_name}"
        for code, lasti in entry.stack
    ]


def _line_of(code: CodeType, lasti: int) -> int | None:
    """The source line of the instruction at byte offset ``lasti`` (``f_lineno``'s
    answer, computed only when a report needs it)."""
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line
    return None


def _names(dev: Device) -> tuple[str, str]:
    drv = dev.driver.name if dev.driver is not None else (dev.bus.name if dev.bus else "")
    return drv, dev.init_name


def _finding(dev: Device, entry: DmaDebugEntry | None, text: str) -> Finding:
    """The report as a finding: the device, the mapping the check matched (its
    type, device address, size, direction, physical address and where it was
    mapped) and the call chain of the call that broke the rule."""
    record: tuple[tuple[str, str], ...] = ()
    mapped = ""
    if entry is not None:
        record = (
            ("type", entry.type),
            ("device_address", hex(entry.dev_addr)),
            ("size", str(entry.size)),
            (
                "direction",
                DIR2NAME[entry.direction] if 0 <= entry.direction < 4 else str(entry.direction),
            ),
            ("phys", hex(entry.paddr)),
        )
        if entry.stack:
            mapped = "\n".join(["Mapped at:", *(f"  {line}" for line in format_stack(entry))])
    lines = text.splitlines() or [text]
    detail = "\n".join([*lines[1:], mapped]).strip("\n")
    return Finding(
        "dma-debug",
        lines[0],
        requester=dev.init_name,
        iova=None if entry is None else entry.dev_addr,
        record=record,
        chain=tuple(call_chain(3).lines()),
        detail=detail,
        time_ns=current.kernel.machine.clock.now,
    )


def err_printk(dev: Device, entry: DmaDebugEntry | None, msg: str) -> None:
    """``err_printk``: count, and WARN for the first error (or all with all_errors)."""
    st = dma_debug_state()
    st.error_count += 1
    st.errors.append(msg)
    drv, name = _names(dev)
    report_finding(_finding(dev, entry, msg))
    if st.driver_filter and drv != st.driver_filter:
        return
    if st.all_errors or st.show_num_errors > 0:
        WARN(True, f"DMA-API: {drv} {name}: {msg}")
        if st.show_num_errors > 0:
            st.show_num_errors -= 1
        if entry is not None and entry.stack:
            pr_warn("DMA-API: Mapped at:")
            for line in format_stack(entry):
                pr_warn(f"  {line}")


# --------------------------------------------------------------------------- entries


def _add(st: DmaDebugState, entry: DmaDebugEntry, attrs: int) -> None:
    st.entries.setdefault((entry.dev, entry.dev_addr), []).append(entry)
    if entry.direction == DMA_TO_DEVICE:
        return
    cln = entry.paddr >> L1_CACHE_SHIFT
    n = st.cachelines.get(cln, 0)
    st.cachelines[cln] = n + 1
    if n >= 1 and not attrs & DMA_ATTR_SKIP_CPU_SYNC:
        err_printk(
            entry.dev, entry, "cacheline tracking EEXIST, overlapping mappings aren't supported"
        )
    if n + 1 > ACTIVE_CACHELINE_MAX_OVERLAP and cln not in st.overflow_warned:
        st.overflow_warned.add(cln)
        WARN(True, f"DMA-API: exceeded 7 overlapping mappings of cacheline {cln << 6:#x}")


def _remove(st: DmaDebugState, entry: DmaDebugEntry) -> None:
    key = (entry.dev, entry.dev_addr)
    lst = st.entries[key]
    lst.remove(entry)
    if not lst:
        del st.entries[key]
    if entry.direction != DMA_TO_DEVICE:
        cln = entry.paddr >> L1_CACHE_SHIFT
        n = st.cachelines.get(cln, 0) - 1
        if n > 0:
            st.cachelines[cln] = n
        else:
            st.cachelines.pop(cln, None)


def _find(st: DmaDebugState, ref: DmaDebugEntry) -> DmaDebugEntry | None:
    """``bucket_find_exact``: a perfect match, else the single candidate."""
    cands = st.entries.get((ref.dev, ref.dev_addr), [])
    for e in cands:
        if (
            e.size == ref.size
            and e.type == ref.type
            and e.direction == ref.direction
            and (not ref.sg_call_ents or e.sg_call_ents == ref.sg_call_ents)
        ):
            return e
    return cands[0] if len(cands) == 1 else None


def _find_contain(st: DmaDebugState, ref: DmaDebugEntry) -> DmaDebugEntry | None:
    """``bucket_find_contain``: the mapping a sync's range starts in."""
    exact = st.entries.get((ref.dev, ref.dev_addr))
    if exact:
        return exact[0]
    for (dev, addr), lst in st.entries.items():
        if dev is ref.dev and addr <= ref.dev_addr < addr + lst[0].size:
            return lst[0]
    return None


def _dir(d: int) -> str:
    return DIR2NAME[d] if 0 <= d < len(DIR2NAME) else str(d)


class EntryFields(Protocol):
    """What the unmap/sync comparisons read from an entry: a :class:`DmaDebugEntry`,
    or a mapping rebuilt from a recorded trace (``iommulab replay``)."""

    @property
    def type(self) -> str: ...
    @property
    def dev_addr(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def direction(self) -> int: ...
    @property
    def paddr(self) -> int: ...
    @property
    def sg_call_ents(self) -> int: ...
    @property
    def map_err_type(self) -> int: ...


UNMAP_SIZE = "size"
UNMAP_FUNCTION = "function"
UNMAP_CPU_ADDRESS = "cpu-address"
UNMAP_SG_COUNT = "sg-count"
UNMAP_DIRECTION = "direction"
UNMAP_MAP_ERROR = "map-error"


def not_allocated_message(dev_addr: int, size: int) -> str:
    """``check_unmap``'s text when no entry matches the freed address."""
    if dev_addr == DMA_MAPPING_ERROR:
        return "device driver tries to free an invalid DMA memory address"
    return (
        "device driver tries to free DMA memory it has not allocated "
        f"[device address=0x{dev_addr:016x}] [size={size} bytes]"
    )


def unmap_mismatches(entry: EntryFields, ref: EntryFields) -> list[tuple[str, str]]:
    """``check_unmap``'s comparisons of the found ``entry`` with the unmap ``ref``, in
    debug.c's order: (kind, message) for each that fails (kinds ``UNMAP_*``)."""
    out: list[tuple[str, str]] = []
    if ref.size != entry.size:
        out.append((
            UNMAP_SIZE,
            "device driver frees DMA memory with different size "
            f"[device address=0x{ref.dev_addr:016x}] [map size={entry.size} bytes] "
            f"[unmap size={ref.size} bytes]",
        ))  # fmt: skip
    if ref.type != entry.type:
        out.append((
            UNMAP_FUNCTION,
            "device driver frees DMA memory with wrong function "
            f"[device address=0x{ref.dev_addr:016x}] [size={ref.size} bytes] "
            f"[mapped as {entry.type}] [unmapped as {ref.type}]",
        ))  # fmt: skip
    elif entry.type in (TYPE_COHERENT, TYPE_NONCOHERENT) and ref.paddr != entry.paddr:
        out.append((
            UNMAP_CPU_ADDRESS,
            "device driver frees DMA memory with different CPU address "
            f"[device address=0x{ref.dev_addr:016x}] [size={ref.size} bytes] "
            f"[cpu alloc address=0x{entry.paddr:x}] [cpu free address=0x{ref.paddr:x}]",
        ))  # fmt: skip
    if ref.sg_call_ents and ref.type == TYPE_SG and ref.sg_call_ents != entry.sg_call_ents:
        out.append((
            UNMAP_SG_COUNT,
            "device driver frees DMA sg list with different entry count "
            f"[map count={entry.sg_call_ents}] [unmap count={ref.sg_call_ents}]",
        ))  # fmt: skip
    if ref.direction != entry.direction:
        out.append((
            UNMAP_DIRECTION,
            "device driver frees DMA memory with different direction "
            f"[device address=0x{ref.dev_addr:016x}] [size={ref.size} bytes] "
            f"[mapped with {_dir(entry.direction)}] [unmapped with {_dir(ref.direction)}]",
        ))  # fmt: skip
    if entry.map_err_type == MAP_ERR_NOT_CHECKED:
        out.append((
            UNMAP_MAP_ERROR,
            "device driver failed to check map error "
            f"[device address=0x{ref.dev_addr:016x}] [size={ref.size} bytes] "
            f"[mapped as {entry.type}]",
        ))  # fmt: skip
    return out


def check_unmap(ref: DmaDebugEntry, cpu_addr: int | None = None) -> None:
    """``check_unmap``: the unmap/free checks in debug.c's order."""
    st = dma_debug_state()
    entry = _find(st, ref)
    if entry is None:
        err_printk(ref.dev, None, not_allocated_message(ref.dev_addr, ref.size))
        return
    for _, msg in unmap_mismatches(entry, ref):
        err_printk(ref.dev, entry, msg)
    _remove(st, entry)


def sync_not_allocated_message(dev_addr: int, size: int) -> str:
    """``check_sync``'s text when no mapping contains the synced address."""
    return (
        "device driver tries to sync DMA memory it has not allocated "
        f"[device address=0x{dev_addr:016x}] [size={size} bytes]"
    )


def sync_mismatches(entry: EntryFields, ref: EntryFields, to_cpu: bool) -> list[str]:
    """``check_sync``'s comparisons of the mapping ``entry`` the sync ``ref`` falls in."""
    out: list[str] = []
    end = ref.dev_addr - entry.dev_addr + ref.size
    if end > entry.size:
        out.append(
            "device driver syncs DMA memory outside allocated range "
            f"[device address=0x{entry.dev_addr:016x}] [allocation size={entry.size} bytes] "
            f"[sync offset+size={end}]"
        )
    if entry.direction == DMA_BIDIRECTIONAL:
        return out
    tail = (
        f"[device address=0x{ref.dev_addr:016x}] [size={ref.size} bytes] "
        f"[mapped with {_dir(entry.direction)}] [synced with {_dir(ref.direction)}]"
    )
    if ref.direction != entry.direction:
        out.append(f"device driver syncs DMA memory with different direction {tail}")
    if to_cpu and entry.direction != DMA_FROM_DEVICE and ref.direction != DMA_TO_DEVICE:
        out.append(f"device driver syncs device read-only DMA memory for cpu {tail}")
    if not to_cpu and entry.direction != DMA_TO_DEVICE and ref.direction != DMA_FROM_DEVICE:
        out.append(f"device driver syncs device write-only DMA memory to device {tail}")
    if ref.sg_call_ents and ref.type == TYPE_SG and ref.sg_call_ents != entry.sg_call_ents:
        out.append(
            "device driver syncs DMA sg list with different entry count "
            f"[map count={entry.sg_call_ents}] [sync count={ref.sg_call_ents}]"
        )
    return out


def check_sync(ref: DmaDebugEntry, to_cpu: bool) -> None:
    """``check_sync``."""
    st = dma_debug_state()
    entry = _find_contain(st, ref)
    if entry is None:
        err_printk(ref.dev, None, sync_not_allocated_message(ref.dev_addr, ref.size))
        return
    for msg in sync_mismatches(entry, ref, to_cpu):
        err_printk(ref.dev, entry, msg)


# --------------------------------------------------------------------------- map-side checks


def _check_for_stack(dev: Device, paddr: int) -> None:
    """``check_for_stack`` with CONFIG_VMAP_STACK: compare the page with the stack's."""
    stack = current_stack()
    area = current_mm().vmalloc_areas.get(stack.base)
    if area is None:
        return
    pfn = paddr >> PAGE_SHIFT
    for i, page in enumerate(area.pages):
        if page.pfn == pfn:
            addr = stack.base + i * PAGE_SIZE + (paddr & (PAGE_SIZE - 1))
            err_printk(dev, None, f"device driver maps memory from stack [probable addr={addr:#x}]")
            return


def debug_dma_map_single(dev: Device, addr: int, length: int) -> None:
    """``debug_dma_map_single``: invalid and vmalloc areas."""
    st = dma_debug_state()
    if st.disabled:
        return
    if not virt_addr_valid(addr):
        err_printk(
            dev,
            None,
            f"device driver maps memory from invalid area [addr={addr:#x}] [len={length}]",
        )
    if is_vmalloc_addr(addr):
        err_printk(
            dev,
            None,
            f"device driver maps memory from vmalloc area [addr={addr:#x}] [len={length}]",
        )


def debug_dma_map_phys(
    dev: Device, phys: int, size: int, direction: int, dma_addr: int, attrs: int
) -> None:
    """``debug_dma_map_page``/``debug_dma_map_phys``."""
    st = dma_debug_state()
    if st.disabled or dma_addr == DMA_MAPPING_ERROR:
        return
    entry = DmaDebugEntry(
        dev,
        TYPE_SINGLE,
        dma_addr,
        size,
        direction,
        paddr=phys,
        map_err_type=MAP_ERR_NOT_CHECKED,
        stack=_call_site(),
    )
    _check_for_stack(dev, phys)
    _add(st, entry, attrs)


def debug_dma_mapping_error(dev: Device, dma_addr: int) -> None:
    """``debug_dma_mapping_error``: mark the entry's error as checked."""
    st = dma_debug_state()
    if st.disabled:
        return
    for e in st.entries.get((dev, dma_addr), []):
        if e.map_err_type == MAP_ERR_NOT_CHECKED:
            e.map_err_type = MAP_ERR_CHECKED
            return


def debug_dma_unmap_phys(dev: Device, dma_addr: int, size: int, direction: int) -> None:
    st = dma_debug_state()
    if st.disabled:
        return
    check_unmap(DmaDebugEntry(dev, TYPE_SINGLE, dma_addr, size, direction))


def _check_sg_segment(dev: Device, sg: Scatterlist) -> None:
    from kernel.dma.mapping import dma_get_max_seg_size, dma_get_seg_boundary

    max_seg = dma_get_max_seg_size(dev)
    if sg.length > max_seg:
        err_printk(
            dev,
            None,
            f"mapping sg segment longer than device claims to support [len={sg.length}] "
            f"[max={max_seg}]",
        )
    boundary = dma_get_seg_boundary(dev)
    start = sg.dma_address
    end = start + sg.dma_length - 1
    if (start ^ end) & ~boundary:
        err_printk(
            dev,
            None,
            f"mapping sg segment across boundary [start=0x{start:016x}] [end=0x{end:016x}] "
            f"[boundary=0x{boundary:016x}]",
        )


def debug_dma_map_sg(
    dev: Device, sgl: list[Scatterlist], nents: int, mapped_ents: int, direction: int, attrs: int
) -> None:
    st = dma_debug_state()
    if st.disabled or mapped_ents <= 0:
        return
    stack = _call_site()
    for sg in sgl[:nents]:
        _check_for_stack(dev, sg.phys)
    for sg in sgl[:mapped_ents]:
        _check_sg_segment(dev, sg)
        entry = DmaDebugEntry(
            dev,
            TYPE_SG,
            sg.dma_address,
            sg.dma_length,
            direction,
            paddr=sg.phys,
            sg_call_ents=nents,
            sg_mapped_ents=mapped_ents,
            stack=stack,
        )
        _add(st, entry, attrs)


def debug_dma_unmap_sg(dev: Device, sgl: list[Scatterlist], nelems: int, direction: int) -> None:
    st = dma_debug_state()
    if st.disabled:
        return
    mapped = 0
    for i, sg in enumerate(sgl[:nelems]):
        ref = DmaDebugEntry(
            dev, TYPE_SG, sg.dma_address, sg.dma_length, direction, sg_call_ents=nelems
        )
        if i == 0:
            found = _find(st, ref)
            mapped = found.sg_mapped_ents if found is not None else 1
        check_unmap(ref)
        if i + 1 >= mapped:
            break


def debug_dma_alloc_coherent(dev: Device, size: int, dma_addr: int, paddr: int) -> None:
    st = dma_debug_state()
    if st.disabled or dma_addr == DMA_MAPPING_ERROR:
        return
    entry = DmaDebugEntry(
        dev, TYPE_COHERENT, dma_addr, size, DMA_BIDIRECTIONAL, paddr=paddr, stack=_call_site()
    )
    _add(st, entry, 0)


def debug_dma_free_coherent(dev: Device, size: int, paddr: int, dma_addr: int) -> None:
    st = dma_debug_state()
    if st.disabled:
        return
    check_unmap(DmaDebugEntry(dev, TYPE_COHERENT, dma_addr, size, DMA_BIDIRECTIONAL, paddr=paddr))


def debug_dma_map_resource(
    dev: Device, addr: int, size: int, direction: int, dma_addr: int, attrs: int
) -> None:
    """``debug_dma_map_resource``: a "resource" entry whose error must be checked."""
    st = dma_debug_state()
    if st.disabled or dma_addr == DMA_MAPPING_ERROR:
        return
    entry = DmaDebugEntry(
        dev,
        TYPE_RESOURCE,
        dma_addr,
        size,
        direction,
        paddr=addr,
        map_err_type=MAP_ERR_NOT_CHECKED,
        stack=_call_site(),
    )
    _add(st, entry, attrs)


def debug_dma_unmap_resource(dev: Device, dma_addr: int, size: int, direction: int) -> None:
    st = dma_debug_state()
    if st.disabled:
        return
    check_unmap(DmaDebugEntry(dev, TYPE_RESOURCE, dma_addr, size, direction))


def debug_dma_alloc_pages(
    dev: Device, paddr: int, size: int, direction: int, dma_addr: int, attrs: int
) -> None:
    """``debug_dma_alloc_pages``: ``dma_alloc_pages``/``dma_alloc_noncoherent`` are
    recorded as "noncoherent" entries (``page`` given as its physical address)."""
    st = dma_debug_state()
    if st.disabled:
        return
    entry = DmaDebugEntry(
        dev, TYPE_NONCOHERENT, dma_addr, size, direction, paddr=paddr, stack=_call_site()
    )
    _add(st, entry, attrs)


def debug_dma_free_pages(dev: Device, paddr: int, size: int, direction: int, dma_addr: int) -> None:
    st = dma_debug_state()
    if st.disabled:
        return
    check_unmap(DmaDebugEntry(dev, TYPE_NONCOHERENT, dma_addr, size, direction, paddr=paddr))


def debug_dma_iova_link(
    dev: Device, dma_addr: int, phys: int, size: int, direction: int, attrs: int
) -> None:
    """One "iova" entry per ``dma_iova_link`` (this model's hook: upstream debug.c
    does not track the two-step IOVA API)."""
    st = dma_debug_state()
    if st.disabled:
        return
    entry = DmaDebugEntry(dev, TYPE_IOVA, dma_addr, size, direction, paddr=phys, stack=_call_site())
    _add(st, entry, attrs)


def debug_dma_iova_unlink(dev: Device, dma_addr: int, size: int, direction: int) -> None:
    """Drop the "iova" entries linked in ``[dma_addr, dma_addr + size)``; report an
    unlink of nothing linked, or of a range that ends inside a link."""
    st = dma_debug_state()
    if st.disabled:
        return
    end = dma_addr + size
    found = [
        e
        for (d, addr), lst in st.entries.items()
        if d is dev and dma_addr <= addr < end
        for e in lst
        if e.type == TYPE_IOVA
    ]
    if not found:
        err_printk(
            dev,
            None,
            "device driver tries to unlink IOVA it has not linked "
            f"[device address=0x{dma_addr:016x}] [size={size} bytes]",
        )
        return
    for e in found:
        if e.dev_addr + e.size > end:
            err_printk(
                dev,
                e,
                "device driver unlinks part of a linked IOVA range "
                f"[device address=0x{e.dev_addr:016x}] [link size={e.size} bytes] "
                f"[unlink end=0x{end:016x}]",
            )
        if e.direction != direction:
            err_printk(
                dev,
                e,
                "device driver unlinks IOVA with different direction "
                f"[device address=0x{e.dev_addr:016x}] [size={e.size} bytes] "
                f"[linked with {_dir(e.direction)}] [unlinked with {_dir(direction)}]",
            )
        _remove(st, e)


def debug_dma_iova_overflow(
    dev: Device, dma_addr: int, alloc_size: int, offset: int, size: int
) -> None:
    """A link past the range ``dma_iova_try_alloc`` reserved."""
    st = dma_debug_state()
    if st.disabled:
        return
    err_printk(
        dev,
        None,
        "device driver links beyond the allocated IOVA range "
        f"[device address=0x{dma_addr:016x}] [allocation size={alloc_size} bytes] "
        f"[link offset+size={offset + size}]",
    )


def debug_dma_sync_single(
    dev: Device, dma_handle: int, size: int, direction: int, to_cpu: bool
) -> None:
    st = dma_debug_state()
    if st.disabled:
        return
    check_sync(DmaDebugEntry(dev, TYPE_SINGLE, dma_handle, size, direction), to_cpu)


def debug_dma_sync_sg(
    dev: Device, sgl: list[Scatterlist], nelems: int, direction: int, to_cpu: bool
) -> None:
    st = dma_debug_state()
    if st.disabled:
        return
    for sg in sgl[:nelems]:
        if not sg.dma_length:
            break
        ref = DmaDebugEntry(
            dev, TYPE_SG, sg.dma_address, sg.dma_length, direction, sg_call_ents=nelems
        )
        check_sync(ref, to_cpu)


def device_dma_allocations(dev: Device) -> list[DmaDebugEntry]:
    st = dma_debug_state()
    return [e for (d, _), lst in st.entries.items() if d is dev for e in lst]


def debug_dma_dump_mappings(dev: Device | None) -> list[str]:
    """``debug_dma_dump_mappings``: one line per live mapping (all devices if None)."""
    st = dma_debug_state()
    out = []
    for (d, _), lst in st.entries.items():
        if dev is not None and d is not dev:
            continue
        for e in lst:
            drv, name = _names(d)
            out.append(
                f"{drv} {name} {e.type} idx 0 P=0x{e.paddr:x} D=0x{e.dev_addr:x} L=0x{e.size:x} "
                f"cln=0x{e.paddr >> L1_CACHE_SHIFT:x} {_dir(e.direction)}"
            )
    for line in out:
        pr_info(f"DMA-API: {line}")
    return out


def dma_debug_device_change(event: int, dev: Device) -> None:
    """The bus notifier: pending mappings when a driver unbinds."""
    st = dma_debug_state()
    if st.disabled or event != BUS_NOTIFY_UNBOUND_DRIVER:
        return
    leaked = device_dma_allocations(dev)
    if not leaked:
        return
    e = leaked[0]
    err_printk(
        dev,
        e,
        "device driver has pending DMA allocations while released from device "
        f"[count={len(leaked)}]\nOne of leaked entries details: "
        f"[device address=0x{e.dev_addr:016x}] [size={e.size} bytes] "
        f"[mapped with {_dir(e.direction)}] [mapped as {e.type}]",
    )


# --------------------------------------------------------------------------- boot


def _parse_dma_debug(text: str | None) -> bool:
    return parse_str(text).strip() != "off"


def _dma_debug_teardown(k: Kernel) -> None:
    bus_unregister_notifier(pci_bus_type, dma_debug_device_change)
    k.subsys.pop(DMA_DEBUG_KEY, None)


@initcall(InitLevel.FS, "dma_debug_init", _dma_debug_teardown)
def dma_debug_init(k: Kernel) -> None:
    """``dma_debug_init``: on unless ``dma_debug=off``; watch the PCI bus."""
    on = k.cmdline.register(Param("dma_debug", True, _parse_dma_debug, "DMA-API debugging"))
    flt = k.cmdline.register(Param("dma_debug_driver", "", parse_str, "only this driver"))
    st = DmaDebugState(disabled=not on.value, driver_filter=str(flt.value))
    k.subsys[DMA_DEBUG_KEY] = st
    if st.disabled:
        pr_info("DMA-API: debugging disabled on kernel command line")
        return
    bus_register_notifier(pci_bus_type, dma_debug_device_change)
    pr_info("DMA-API: debugging enabled by kernel config")
