"""Debug view of DMA-API debugging: ``iommulab dump dma-mappings``.

The text of ``/sys/kernel/debug/dma-api/dump`` (one line per live mapping, as
``debug_dma_dump_mappings`` prints it) with the mapping's call site, preceded by
the ``error_count``/``nr_total_entries``/``driver_filter`` files and followed by
the errors DMA-API debugging reported. Renders the current kernel; contributed
through the ``iommulab_dump_targets`` hook (the CLI and the pytest plugin register
this module as a plugin).
"""

from __future__ import annotations

import argparse

from kernel.debugfs import DumpTarget
from kernel.dma.debug import L1_CACHE_SHIFT, _dir, _names, dma_debug_state, format_stack
from kernel.hookspecs import hookimpl


def render_dma_mappings(args: argparse.Namespace) -> str:
    st = dma_debug_state()
    if st.disabled:
        return "dma-api: debugging disabled (dma_debug=off or no kernel booted)\n"
    entries = [e for lst in st.entries.values() for e in lst]
    out = [
        f"dma-api/error_count: {st.error_count}",
        f"dma-api/nr_total_entries: {len(entries)}",
        f"dma-api/driver_filter: {st.driver_filter or '(none)'}",
        "dma-api/dump:",
    ]
    for e in sorted(entries, key=lambda e: (e.dev.init_name, e.dev_addr)):
        drv, name = _names(e.dev)
        out.append(
            f"{drv} {name} {e.type} idx 0 P=0x{e.paddr:x} D=0x{e.dev_addr:x} L=0x{e.size:x} "
            f"cln=0x{e.paddr >> L1_CACHE_SHIFT:x} {_dir(e.direction)}"
        )
        if e.stack:
            out.append(f"    mapped at {format_stack(e)[0]}")
    if not entries:
        out.append("(no live mappings)")
    if st.errors:
        out.append("errors:")
        out.extend(f"  {msg.splitlines()[0]}" for msg in st.errors)
    return "\n".join(out) + "\n"


DMA_MAPPINGS = DumpTarget(
    "dma-mappings",
    "live DMA mappings and errors recorded by DMA-API debugging",
    render_dma_mappings,
)


@hookimpl
def iommulab_dump_targets() -> list[DumpTarget]:
    return [DMA_MAPPINGS]
