"""Tracepoints (include/linux/tracepoint.h, kernel/trace/) and ftrace text.

A :class:`Tracepoint` is defined once per ``system:event`` with its field names and
a ``TP_printk``-like format (the Chrome/Perfetto JSON layout is the front door's:
``iommulab.perfetto``). Callers test ``tp.enabled`` before building the event
(the static-key idea), so a disabled tracepoint costs one attribute read. Each
booted kernel has its own :class:`Tracer` (enabled patterns, ring, sinks); a
tracepoint's ``enabled`` key is on while any live kernel's tracer enables it, and
an event is recorded by the current kernel's tracer only if that tracer enables
it, so two kernels in one process trace independently. Enabled
events are :class:`TraceEvent` records appended to the tracer's ring and handed to
sinks. Hardware models' events (``hw_vtd:*``, ``hw_dsa:*``) arrive through the
platform's hardware trace sink and are recorded the same way.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from attrs import define, field, frozen

from kernel.context import current

RING_EVENTS = 1 << 16


@frozen
class TraceEvent:
    ts_ns: int
    name: str
    fields: Mapping[str, Any]
    text: str

    @property
    def system(self) -> str:
        return self.name.partition(":")[0]

    @property
    def event(self) -> str:
        return self.name.partition(":")[2]

    def ftrace(self) -> str:
        """One line as ``print_trace_fmt`` lays it out: ``%16s-%-7d`` task and pid,
        ``[%03d]`` CPU, the five latency flags, `` %5lu.%06lu`` time stamp. The model
        has one CPU and one task."""
        sec, ns = divmod(self.ts_ns, 1_000_000_000)
        stamp = f"{sec:5d}.{ns // 1000:06d}"
        return f"{'kernel':>16}-{1:<7} [000] ..... {stamp}: {self.event}: {self.text}"


def _fmt(v: Any) -> str:
    """A field as the kernel prints it: integers in hex, arrays as ``__print_array``
    does (``{0x11,0x0}``), an absent value (a request without PASID) as ``none``."""
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:#x}"
    if isinstance(v, tuple | list):
        return "{" + ",".join(_fmt(x) for x in v) + "}"
    return "none" if v is None else str(v)


Sink = Callable[[TraceEvent], None]


@define(eq=False)
class Tracer:
    """The trace buffer of one booted kernel: enable flags, ring, sinks."""

    now: Callable[[], int] = lambda: 0
    ring: deque[TraceEvent] = field(factory=lambda: deque(maxlen=RING_EVENTS))
    sinks: list[Sink] = field(factory=list)
    enabled_patterns: set[str] = field(factory=set)
    on_patterns: Callable[[bool], None] | None = None
    """Told whether any pattern is enabled after each change; the kernel uses it to
    hook the platform's hardware trace sink in only while events can be recorded,
    so models skip building events nobody would keep."""

    wanted: dict[str, bool] = field(factory=dict)
    """Tracepoint name -> whether ``enabled_patterns`` select it (filled on demand)."""

    def set_patterns(self, patterns: Iterable[str]) -> None:
        """Replace the enabled patterns and re-evaluate every tracepoint's static key
        (on while any live tracer enables it)."""
        self.enabled_patterns = set(patterns)
        self.wanted.clear()
        _TRACERS.add(self)
        _update_keys()
        if self.on_patterns is not None:
            self.on_patterns(bool(self.enabled_patterns))

    def retire(self) -> None:
        """The kernel is down: this tracer no longer holds any tracepoint key on
        (its ring stays readable)."""
        _TRACERS.discard(self)
        _update_keys()

    def wants(self, name: str) -> bool:
        """Whether this tracer records the tracepoint ``name``."""
        try:
            return self.wanted[name]
        except KeyError:
            on = self.wanted[name] = _matches(name, self.enabled_patterns)
            return on

    def record(self, name: str, fields: Mapping[str, Any], text: str) -> None:
        ev = TraceEvent(self.now(), name, dict(fields), text)
        self.ring.append(ev)
        for sink in self.sinks:
            sink(ev)

    def hw_event(self, name: str, ts: int, fields: dict[str, object]) -> None:
        """Platform hardware trace sink: records ``hw_*`` events that are enabled.
        Bound to this tracer at boot, so a machine's events land in its own kernel's
        ring whichever kernel is current."""
        if self.wants(name):
            text = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
            ev = TraceEvent(ts, name, dict(fields), text)
            self.ring.append(ev)
            for sink in self.sinks:
                sink(ev)

    def events(self, pattern: str = "*") -> list[TraceEvent]:
        return [e for e in self.ring if _matches(e.name, {pattern})]


def _matches(name: str, patterns: Iterable[str]) -> bool:
    system = name.partition(":")[0]
    return any(p in ("*", "*:*", name, f"{system}:*", system) for p in patterns)


_REGISTRY: dict[str, Tracepoint] = {}
"""Every tracepoint defined (code, like the kernel's ``__tracepoints`` section)."""
_TRACERS: weakref.WeakSet[Tracer] = weakref.WeakSet()
"""The tracers that ever enabled patterns and are still alive: they decide the keys."""


def _update_keys() -> None:
    """Each tracepoint's static key: on while some live tracer records it."""
    tracers = list(_TRACERS)
    for tp in _REGISTRY.values():
        tp.enabled = any(t.wants(tp.name) for t in tracers)


def tracer() -> Tracer:
    """The current kernel's tracer."""
    return current.kernel.tracer


class Tracepoint:
    """``TRACE_EVENT(system, event, fields, fmt)``; call with keyword fields."""

    __slots__ = ("derive", "enabled", "fields", "fmt", "name")

    def __init__(
        self,
        name: str,
        fields: tuple[str, ...],
        fmt: str,
        derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.fields = fields
        self.fmt = fmt
        self.derive = derive
        self.enabled = False

    def __call__(self, **values: Any) -> None:
        if not self.enabled:
            return
        t = current.kernel.tracer
        if not t.wants(self.name):
            return
        shown = dict(values)
        if self.derive is not None:
            shown.update(self.derive(values))
        text = self.fmt.format(**{k: _fmt(v) for k, v in shown.items()})
        t.record(self.name, values, text)


def define_tracepoint(
    name: str,
    fields: tuple[str, ...],
    fmt: str,
    derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Tracepoint:
    """``TRACE_EVENT``: ``derive`` computes display-only values (``TP_printk`` arithmetic)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    tp = Tracepoint(name, fields, fmt, derive)
    tp.enabled = any(t.wants(name) for t in _TRACERS)
    _REGISTRY[name] = tp
    return tp


def pattern_known(pattern: str) -> bool:
    """Whether ``trace_event=pattern`` selects anything: a defined tracepoint, or a
    hardware model's system (``hw_*``; models emit their events without defining
    them first, so only the ``hw_`` prefix is checked). Mirrors the check behind
    early_enable_events()'s "Failed to enable trace event" (ftrace_set_clr_event
    returning -EINVAL when nothing matched)."""
    if pattern.partition(":")[0].startswith("hw_"):
        return True
    return any(_matches(name, {pattern}) for name in _REGISTRY)


def tracepoints() -> dict[str, Tracepoint]:
    return dict(_REGISTRY)


def enable(pattern: str = "*") -> None:
    """Enable events matching ``system:event``, ``system:*``, ``system`` or ``*``."""
    t = current.kernel.tracer
    t.set_patterns(t.enabled_patterns | {pattern})


def disable_all() -> None:
    current.kernel.tracer.set_patterns(())


@contextmanager
def capture(pattern: str = "*") -> Iterator[list[TraceEvent]]:
    """Enable ``pattern`` and collect the events raised inside the block."""
    got: list[TraceEvent] = []
    t = current.kernel.tracer
    before = set(t.enabled_patterns)
    t.set_patterns(before | {pattern})
    t.sinks.append(got.append)
    try:
        yield got
    finally:
        t.sinks.remove(got.append)
        t.set_patterns(before)


_LEGEND = (
    "#                                _-----=> irqs-off/BH-disabled",
    "#                               / _----=> need-resched",
    "#                              | / _---=> hardirq/softirq",
    "#                              || / _--=> preempt-depth",
    "#                              ||| / _-=> migrate-disable",
    "#                              |||| /     delay",
    "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION",
    "#              | |         |   |||||     |         |",
)


def to_ftrace(events: Iterable[TraceEvent]) -> str:
    """``/sys/kernel/tracing/trace``: ``print_trace_header`` with the latency-format
    legend (one CPU; nothing is lost between the ring and the reader), then the lines."""
    lines = [e.ftrace() for e in events]
    n = len(lines)
    head = ["# tracer: nop", "#", f"# entries-in-buffer/entries-written: {n}/{n}   #P:1", "#"]
    return "\n".join([*head, *_LEGEND, *lines]) + "\n"


# -- the kernel's own tracepoints (include/trace/events/iommu.h) --------------------------
def _group_id(v: dict[str, Any]) -> dict[str, Any]:
    return {"group_id": str(v["group_id"])}  # %d


trace_add_device_to_group = define_tracepoint(
    "iommu:add_device_to_group",
    ("group_id", "device"),
    "IOMMU: groupID={group_id} device={device}",
    _group_id,
)
trace_remove_device_from_group = define_tracepoint(
    "iommu:remove_device_from_group",
    ("group_id", "device"),
    "IOMMU: groupID={group_id} device={device}",
    _group_id,
)
trace_attach_device_to_domain = define_tracepoint(
    "iommu:attach_device_to_domain", ("device",), "IOMMU: device={device}"
)


def _iova_end(v: dict[str, Any]) -> dict[str, Any]:
    """iommu.h's ``0x%016llx`` addresses and ``%zu`` sizes."""
    out = {
        "iova": f"0x{v['iova']:016x}",
        "iova_end": f"0x{v['iova'] + v['size']:016x}",
        "size": str(v["size"]),
    }
    if "paddr" in v:
        out["paddr"] = f"0x{v['paddr']:016x}"
    if "unmapped_size" in v:
        out["unmapped_size"] = str(v["unmapped_size"])
    return out


def _fault(v: dict[str, Any]) -> dict[str, Any]:
    return {"iova": f"0x{v['iova']:016x}", "flags": f"0x{v['flags']:04x}"}


trace_map = define_tracepoint(
    "iommu:map",
    ("iova", "paddr", "size"),
    "IOMMU: iova={iova} - {iova_end} paddr={paddr} size={size}",
    _iova_end,
)
trace_unmap = define_tracepoint(
    "iommu:unmap",
    ("iova", "size", "unmapped_size"),
    "IOMMU: iova={iova} - {iova_end} size={size} unmapped_size={unmapped_size}",
    _iova_end,
)
trace_io_page_fault = define_tracepoint(
    "iommu:io_page_fault",
    ("device", "driver", "iova", "flags"),
    "IOMMU:{driver} {device} iova={iova} flags={flags}",
    _fault,
)
