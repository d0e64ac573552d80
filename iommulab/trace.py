"""``iommulab trace``: run a scenario with tracepoints on and write the trace.

Tracing is switched on through the kernel command line (``trace_event=PATTERNS``),
exactly as a user would on Linux, so the boot itself is traced too and the
demo — which boots its own kernel — needs no change. Output is ftrace text
(``/sys/kernel/tracing/trace``) or the Chrome/Perfetto trace-event JSON object
format that ui.perfetto.dev and chrome://tracing open.
"""

from __future__ import annotations

from collections.abc import Sequence

from iommulab.perfetto import to_chrome_json
from kernel.boot import Kernel
from kernel.trace import TraceEvent, to_ftrace

FORMATS = ("text", "json")


def traced_cmdline(cmdline: str, events: str) -> str:
    """``cmdline`` with ``trace_event=events`` appended (comma-separated patterns)."""
    return f"{cmdline} trace_event={events}".strip()


def recorded(kernel: Kernel) -> tuple[list[TraceEvent], bool]:
    """The kernel's trace ring, and whether it overflowed (oldest events dropped)."""
    ring = kernel.tracer.ring
    return list(ring), ring.maxlen is not None and len(ring) >= ring.maxlen


def render(events: Sequence[TraceEvent], fmt: str) -> str:
    if fmt == "json":
        return to_chrome_json(events) + "\n"
    if fmt == "text":
        return to_ftrace(events)
    raise ValueError(f"trace format {fmt!r}: choose one of {', '.join(FORMATS)}")
