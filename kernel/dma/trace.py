"""The ``dma:*`` tracepoints (include/trace/events/dma.h, Linux 6.12).

Each is defined with the fields Linux records and printed as Linux 6.12's ``TP_printk``
prints it: the device name, ``dir=`` as ``decode_dma_data_direction`` names it, DMA and
physical addresses in bare hex (``%llx``), sizes in decimal (``%zu``), ``attrs=`` as
``decode_dma_attrs`` flags, ``flags=`` as ``show_gfp_flags`` names, arrays as
``__print_array`` (``{0x1000,0x2000}``). ``virt_addr`` is a kernel pointer, which ftrace
prints hashed; the model prints ``(____ptrval____)``, as Linux does before the hashing
key is ready, so that a trace stays the same from run to run.

Differences from Linux: ``dma_map_sg`` has the 6.12 layout (no ``nents=``/``ents=``
counts, which later kernels added).
"""

from __future__ import annotations

from typing import Any

from kernel.dma.direction import (
    DMA_ATTR_ALLOC_SINGLE_PAGES,
    DMA_ATTR_FORCE_CONTIGUOUS,
    DMA_ATTR_MMIO,
    DMA_ATTR_NO_KERNEL_MAPPING,
    DMA_ATTR_NO_WARN,
    DMA_ATTR_PRIVILEGED,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_ATTR_WEAK_ORDERING,
    DMA_ATTR_WRITE_COMBINE,
)
from kernel.mm import __GFP_NOWARN, __GFP_ZERO, GFP_ATOMIC, GFP_DMA32, GFP_KERNEL, GFP_NOWAIT
from kernel.trace import define_tracepoint

PTRVAL = "(____ptrval____)"
"""How ftrace prints a kernel pointer (``%p``) before its hashing key is ready."""

_DIR_NAMES = ("BIDIRECTIONAL", "TO_DEVICE", "FROM_DEVICE", "NONE")
_ATTR_NAMES = (
    (DMA_ATTR_WEAK_ORDERING, "WEAK_ORDERING"),
    (DMA_ATTR_WRITE_COMBINE, "WRITE_COMBINE"),
    (DMA_ATTR_NO_KERNEL_MAPPING, "NO_KERNEL_MAPPING"),
    (DMA_ATTR_SKIP_CPU_SYNC, "SKIP_CPU_SYNC"),
    (DMA_ATTR_FORCE_CONTIGUOUS, "FORCE_CONTIGUOUS"),
    (DMA_ATTR_ALLOC_SINGLE_PAGES, "ALLOC_SINGLE_PAGES"),
    (DMA_ATTR_NO_WARN, "NO_WARN"),
    (DMA_ATTR_PRIVILEGED, "PRIVILEGED"),
    (DMA_ATTR_MMIO, "MMIO"),
)
_GFP_NAMES = (
    (GFP_KERNEL, "GFP_KERNEL"),
    (GFP_ATOMIC, "GFP_ATOMIC"),
    (GFP_NOWAIT, "GFP_NOWAIT"),
    (GFP_DMA32, "GFP_DMA32"),
    (__GFP_ZERO, "__GFP_ZERO"),
    (__GFP_NOWARN, "__GFP_NOWARN"),
)


def _flags(value: int, names: tuple[tuple[int, str], ...]) -> str:
    """``__print_flags(value, "|", ...)``: known names, then any rest in hex."""
    out = []
    for bit, name in names:
        if value & bit:
            out.append(name)
            value &= ~bit
    if value:
        out.append(f"{value:#x}")
    return "|".join(out)


def _dir(d: int) -> str:
    return _DIR_NAMES[d] if 0 <= d < len(_DIR_NAMES) else f"{d:#x}"


def _array(values: Any) -> str:
    return "{" + ",".join(f"{v:#x}" for v in values) + "}"


def _shown(v: dict[str, Any]) -> dict[str, Any]:
    """``TP_printk``'s conversions of whichever of the class fields are present."""
    out: dict[str, Any] = {"dir": _dir(v["dir"])}
    if "dma_addr" in v:
        out["dma_addr"] = f"{v['dma_addr']:x}"
    if "size" in v:
        out["size"] = str(v["size"])
    if "phys_addr" in v:
        out["phys_addr"] = f"{v['phys_addr']:x}"
    if "attrs" in v:
        out["attrs"] = _flags(v["attrs"], _ATTR_NAMES)
    if "flags" in v:
        out["flags"] = _flags(v["flags"], _GFP_NAMES)
    if "virt_addr" in v:
        out["virt_addr"] = PTRVAL if v["virt_addr"] else "0000000000000000"
    for k in ("dma_addrs", "sizes", "phys_addrs"):
        if k in v:
            out[k] = _array(v[k])
    return out


_MAP = ("device", "dir", "dma_addr", "size", "phys_addr", "attrs")
_MAP_FMT = "{device} dir={dir} dma_addr={dma_addr} size={size} phys_addr={phys_addr} attrs={attrs}"
_UNMAP = ("device", "dir", "dma_addr", "size", "attrs")
_UNMAP_FMT = "{device} dir={dir} dma_addr={dma_addr} size={size} attrs={attrs}"
_ALLOC = ("device", "dir", "dma_addr", "size", "virt_addr", "flags", "attrs")
_ALLOC_FMT = (
    "{device} dir={dir} dma_addr={dma_addr} size={size} virt_addr={virt_addr} "
    "flags={flags} attrs={attrs}"
)
_FREE = ("device", "dir", "dma_addr", "size", "virt_addr", "attrs")
_FREE_FMT = "{device} dir={dir} dma_addr={dma_addr} size={size} virt_addr={virt_addr} attrs={attrs}"
_SYNC = ("device", "dir", "dma_addr", "size")
_SYNC_FMT = "{device} dir={dir} dma_addr={dma_addr} size={size}"

trace_dma_map_page = define_tracepoint("dma:dma_map_page", _MAP, _MAP_FMT, _shown)
trace_dma_unmap_page = define_tracepoint("dma:dma_unmap_page", _UNMAP, _UNMAP_FMT, _shown)
trace_dma_alloc = define_tracepoint("dma:dma_alloc", _ALLOC, _ALLOC_FMT, _shown)
trace_dma_free = define_tracepoint("dma:dma_free", _FREE, _FREE_FMT, _shown)
trace_dma_map_sg = define_tracepoint(
    "dma:dma_map_sg",
    ("device", "dir", "dma_addrs", "sizes", "phys_addrs", "attrs"),
    "{device} dir={dir} dma_addrs={dma_addrs} sizes={sizes} phys_addrs={phys_addrs} attrs={attrs}",
    _shown,
)
trace_dma_unmap_sg = define_tracepoint(
    "dma:dma_unmap_sg",
    ("device", "dir", "phys_addrs", "attrs"),
    "{device} dir={dir} phys_addrs={phys_addrs} attrs={attrs}",
    _shown,
)
trace_dma_sync_single_for_cpu = define_tracepoint(
    "dma:dma_sync_single_for_cpu", _SYNC, _SYNC_FMT, _shown
)
trace_dma_sync_single_for_device = define_tracepoint(
    "dma:dma_sync_single_for_device", _SYNC, _SYNC_FMT, _shown
)
trace_dma_sync_sg_for_cpu = define_tracepoint(
    "dma:dma_sync_sg_for_cpu",
    ("device", "dir", "dma_addrs", "sizes"),
    "{device} dir={dir} dma_addrs={dma_addrs} sizes={sizes}",
    _shown,
)
trace_dma_sync_sg_for_device = define_tracepoint(
    "dma:dma_sync_sg_for_device",
    ("device", "dir", "dma_addrs", "sizes"),
    "{device} dir={dir} dma_addrs={dma_addrs} sizes={sizes}",
    _shown,
)
