"""Read ftrace text: ``/sys/kernel/tracing/trace``, ``trace_pipe`` and ``trace-cmd report``.

The three layouts share one line shape — ``TASK-PID [CPU] FLAGS TIMESTAMP: EVENT: BODY`` —
with optional parts: the latency flags (``d..2.``; absent from ``trace-cmd report``
without ``-l``), the TGID column (``(  136)``), and the padding ``trace-cmd`` puts after
the event name. Comment lines (``#``) and ``trace-cmd``'s preamble (``cpus=1``,
``version = 6``) are skipped; ``CPU:N [LOST n EVENTS]`` (ftrace) and
``CPU:N [n EVENTS DROPPED]`` (trace-cmd) become :class:`~iommulab.replay.events.Lost`.

Events of other subsystems (``sched_switch`` ...) are passed over and counted. An event
of the DMA/IOMMU systems whose body does not have the Linux 6.12 layout, a name that
looks like one of theirs but is unknown, and a line that is not an ftrace line at all
(a truncated tail) become :class:`~iommulab.replay.events.Problem` entries; the rest of
the trace is still read. A binary ``trace.dat`` is recognised by its magic and refused
as a whole.

Linux (``kernel/trace/trace_output.c``) formats these lines; this module only reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from attrs import define, field

from iommulab.replay.events import (
    CacheTag,
    CacheTagFlush,
    DmaAlloc,
    DmaFree,
    DmaMap,
    DmaMapSg,
    DmaSync,
    DmaUnmap,
    DmaUnmapSg,
    Event,
    IommuAttach,
    IommuGroup,
    IommuMap,
    IommuUnmap,
    IoPageFault,
    Lost,
    Marker,
    Problem,
    PrqReport,
    QiSubmit,
)

TRACE_DAT_MAGIC = b"\x17\x08\x44tracing"
"""The first bytes of a binary ``trace-cmd record`` file."""

_HEADER = re.compile(
    r"\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:\S{4,5}\s+)?(?P<sec>\d+)\.(?P<frac>\d+):\s+(?P<name>\w+):\s*(?P<body>.*)"
)
_LOST = re.compile(r"CPU:(\d+) \[(?:LOST (\d+) EVENTS|(\d+) EVENTS DROPPED)\]")
_PREAMBLE = re.compile(r"cpus=\d+|version\s*=|CPU \d+ is empty|trace-cmd:")

_H = "([0-9a-f]+)"
_MAP = re.compile(rf"IOMMU: iova=0x{_H} - 0x{_H} paddr=0x{_H} size=(\d+)$")
_UNMAP = re.compile(rf"IOMMU: iova=0x{_H} - 0x{_H} size=(\d+) unmapped_size=(\d+)$")
_GROUP = re.compile(r"IOMMU: groupID=(\d+) device=(\S+)$")
_ATTACH = re.compile(r"IOMMU: device=(\S+)$")
_FAULT = re.compile(rf"IOMMU:(\S*) (\S+) iova=0x{_H} flags=0x{_H}$")
_QI = re.compile(rf"(\S+) (\S+): 0x{_H} 0x{_H} 0x{_H} 0x{_H}$")
_TAG = re.compile(r"(\S+)/(\S+) type (\w+) did (\d+) pasid (-?\d+) ref (\d+)$")
_FLUSH = re.compile(
    rf"(\S+) (\S+)\[(-?\d+)\] type (\w+) did (\d+) \[0x{_H}-0x{_H}\] addr 0x{_H} "
    rf"pages 0x{_H} mask 0x{_H}$"
)
_PRQ = re.compile(r"(\S+)/(\S+) seq# (\d+): (.*)$")
_MARK = re.compile(r"(?:tracing_mark_write: |0x[0-9a-f]+: |[\w.]+: )?(.*)$")

_OURS = re.compile(r"(dma_|iommu_|cache_tag_|prq_|intel_iommu)")


class LayoutError(Exception):
    """The body of a known event does not have the Linux 6.12 layout."""


Head = tuple[int, int, int, str]
Reader = Callable[[Head, str, str], Event]


def _kv(body: str, need: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``DEVICE key=value ...`` as the device and a dict; every name in ``need`` present."""
    parts = body.split(" ")
    out: dict[str, str] = {}
    for p in parts[1:]:
        k, sep, v = p.partition("=")
        if sep:
            out[k] = v
    for k in need:
        if k not in out:
            raise LayoutError(f"no {k}= field")
    return parts[0], out


def _hex(v: str) -> int:
    try:
        return int(v, 16)
    except ValueError:
        raise LayoutError(f"{v!r} is not a hex number") from None


def _dec(v: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise LayoutError(f"{v!r} is not a number") from None


def _array(v: str) -> tuple[int, ...]:
    """``__print_array``: ``{0x1,0x2}`` (empty ``{}``)."""
    if not (v.startswith("{") and v.endswith("}")):
        raise LayoutError(f"{v!r} is not an array")
    inner = v[1:-1]
    return tuple(int(x, 0) for x in inner.split(",")) if inner else ()


_DMA_MAP = re.compile(rf"(\S+) dir=(\w+) dma_addr={_H} size=(\d+) phys_addr={_H} attrs=(\S*)$")
_DMA_UNMAP = re.compile(rf"(\S+) dir=(\w+) dma_addr={_H} size=(\d+) attrs=(\S*)$")


def _dma_map(h: Head, name: str, body: str) -> Event:
    m = _DMA_MAP.match(body)  # the 6.12 layout; other orders through _kv
    if m is not None:
        g = m.groups()
        return DmaMap(*h, name, g[0], g[1], int(g[2], 16), int(g[3]), int(g[4], 16), g[5])
    dev, f = _kv(body, ("dir", "dma_addr", "size", "phys_addr", "attrs"))
    return DmaMap(
        *h, name, dev, f["dir"], _hex(f["dma_addr"]), _dec(f["size"]), _hex(f["phys_addr"]),
        f["attrs"],
    )  # fmt: skip


def _dma_unmap(h: Head, name: str, body: str) -> Event:
    m = _DMA_UNMAP.match(body)
    if m is not None:
        g = m.groups()
        return DmaUnmap(*h, name, g[0], g[1], int(g[2], 16), int(g[3]), g[4])
    dev, f = _kv(body, ("dir", "dma_addr", "size", "attrs"))
    return DmaUnmap(*h, name, dev, f["dir"], _hex(f["dma_addr"]), _dec(f["size"]), f["attrs"])


def _dma_alloc(h: Head, name: str, body: str) -> Event:
    sgt = name.startswith("dma_alloc_sgt") and name != "dma_alloc_sgt_err"
    dev, f = _kv(body, ("dir", "dma_addr", "size", "flags", "attrs"))
    virt = f.get("virt_addr", "")
    if not sgt and "virt_addr" not in f:
        raise LayoutError("no virt_addr= field")
    phys = _array(f["phys_addrs"]) if sgt and "phys_addrs" in f else ()
    return DmaAlloc(
        *h, name, dev, f["dir"], _hex(f["dma_addr"]), _dec(f["size"]), virt, f["flags"],
        f["attrs"], phys,
    )  # fmt: skip


def _dma_free(h: Head, name: str, body: str) -> Event:
    sgt = name == "dma_free_sgt"
    dev, f = _kv(body, ("dir", "dma_addr", "size") + (("phys_addrs",) if sgt else ("attrs",)))
    phys = _array(f["phys_addrs"]) if sgt else ()
    return DmaFree(
        *h, name, dev, f["dir"], _hex(f["dma_addr"]), _dec(f["size"]), f.get("virt_addr", ""),
        f.get("attrs", ""), phys,
    )  # fmt: skip


def _dma_map_sg(h: Head, name: str, body: str) -> Event:
    if name == "dma_map_sg_err":
        dev, f = _kv(body, ("dir", "dma_addrs", "err", "attrs"))
        phys = _array(f["dma_addrs"])
        return DmaMapSg(*h, name, dev, f["dir"], (), (), phys, f["attrs"], _dec(f["err"]))
    dev, f = _kv(body, ("dir", "dma_addrs", "sizes", "phys_addrs", "attrs"))
    addrs, sizes = _array(f["dma_addrs"]), _array(f["sizes"])
    if len(addrs) != len(sizes):
        raise LayoutError("dma_addrs and sizes differ in length")
    return DmaMapSg(*h, name, dev, f["dir"], addrs, sizes, _array(f["phys_addrs"]), f["attrs"])


def _dma_unmap_sg(h: Head, name: str, body: str) -> Event:
    dev, f = _kv(body, ("dir", "phys_addrs", "attrs"))
    return DmaUnmapSg(*h, dev, f["dir"], _array(f["phys_addrs"]), f["attrs"])


def _dma_sync_single(h: Head, name: str, body: str) -> Event:
    dev, f = _kv(body, ("dir", "dma_addr", "size"))
    return DmaSync(*h, name, dev, f["dir"], (_hex(f["dma_addr"]),), (_dec(f["size"]),))


def _dma_sync_sg(h: Head, name: str, body: str) -> Event:
    dev, f = _kv(body, ("dir", "dma_addrs", "sizes"))
    addrs, sizes = _array(f["dma_addrs"]), _array(f["sizes"])
    if len(addrs) != len(sizes):
        raise LayoutError("dma_addrs and sizes differ in length")
    return DmaSync(*h, name, dev, f["dir"], addrs, sizes)


def _match(rx: re.Pattern[str], body: str) -> tuple[str, ...]:
    m = rx.match(body)
    if m is None:
        raise LayoutError(f"expected {rx.pattern!r}")
    return m.groups()


def _map(h: Head, name: str, body: str) -> Event:
    g = _match(_MAP, body)
    return IommuMap(*h, int(g[0], 16), int(g[1], 16), int(g[2], 16), int(g[3]))


def _unmap(h: Head, name: str, body: str) -> Event:
    g = _match(_UNMAP, body)
    return IommuUnmap(*h, int(g[0], 16), int(g[1], 16), int(g[2]), int(g[3]))


def _group(h: Head, name: str, body: str) -> Event:
    g = _match(_GROUP, body)
    return IommuGroup(*h, name, int(g[0]), g[1])


def _attach(h: Head, name: str, body: str) -> Event:
    return IommuAttach(*h, _match(_ATTACH, body)[0])


def _fault(h: Head, name: str, body: str) -> Event:
    g = _match(_FAULT, body)
    return IoPageFault(*h, g[0], g[1], int(g[2], 16), int(g[3], 16))


def _qi(h: Head, name: str, body: str) -> Event:
    g = _match(_QI, body)
    return QiSubmit(*h, g[1], g[0], int(g[2], 16), int(g[3], 16), int(g[4], 16), int(g[5], 16))


def _tag(h: Head, name: str, body: str) -> Event:
    g = _match(_TAG, body)
    return CacheTag(*h, name, g[0], g[1], g[2], int(g[3]), int(g[4]), int(g[5]))


def _flush(h: Head, name: str, body: str) -> Event:
    g = _match(_FLUSH, body)
    return CacheTagFlush(
        *h, name, g[0], g[1], int(g[2]), g[3], int(g[4]), int(g[5], 16), int(g[6], 16),
        int(g[7], 16), int(g[8], 16), int(g[9], 16),
    )  # fmt: skip


def _prq(h: Head, name: str, body: str) -> Event:
    g = _match(_PRQ, body)
    return PrqReport(*h, g[0], g[1], int(g[2]), g[3])


def _mark(h: Head, name: str, body: str) -> Event:
    text = body if name == "tracing_mark_write" else _match(_MARK, body)[0]
    return Marker(*h, text.rstrip())


READERS: dict[str, Reader] = {
    "dma_map_page": _dma_map,
    "dma_map_resource": _dma_map,
    "dma_unmap_page": _dma_unmap,
    "dma_unmap_resource": _dma_unmap,
    "dma_alloc": _dma_alloc,
    "dma_alloc_pages": _dma_alloc,
    "dma_alloc_sgt": _dma_alloc,
    "dma_alloc_sgt_err": _dma_alloc,
    "dma_free": _dma_free,
    "dma_free_pages": _dma_free,
    "dma_free_sgt": _dma_free,
    "dma_map_sg": _dma_map_sg,
    "dma_map_sg_err": _dma_map_sg,
    "dma_unmap_sg": _dma_unmap_sg,
    "dma_sync_single_for_cpu": _dma_sync_single,
    "dma_sync_single_for_device": _dma_sync_single,
    "dma_sync_sg_for_cpu": _dma_sync_sg,
    "dma_sync_sg_for_device": _dma_sync_sg,
    "map": _map,
    "unmap": _unmap,
    "add_device_to_group": _group,
    "remove_device_from_group": _group,
    "attach_device_to_domain": _attach,
    "io_page_fault": _fault,
    "qi_submit": _qi,
    "cache_tag_assign": _tag,
    "cache_tag_unassign": _tag,
    "cache_tag_flush_all": _tag,
    "cache_tag_flush_range": _flush,
    "cache_tag_flush_range_np": _flush,
    "prq_report": _prq,
    "tracing_mark_write": _mark,
    "print": _mark,
}
"""Event name (as ftrace prints it, without the system) -> reader of its body."""


@define
class Trace:
    """A parsed trace: the events in order, what could not be read, what was skipped."""

    events: list[Event] = field(factory=list)
    problems: list[Problem] = field(factory=list)
    unrelated: int = 0
    """Events of other subsystems passed over."""
    lines: int = 0

    @property
    def lost(self) -> list[Lost]:
        return [e for e in self.events if isinstance(e, Lost)]


def parse_lines(lines: Iterable[str]) -> Trace:
    """Parse ftrace text lines (with or without line ends) into a :class:`Trace`."""
    out = Trace()
    events, problems = out.events, out.problems
    header = _HEADER.match
    readers = READERS
    scale = [10 ** (9 - k) if k <= 9 else 0 for k in range(16)]
    last_ts = 0
    n = 0
    for n, raw in enumerate(lines, 1):
        m = header(raw)
        if m is None:
            s = raw.strip()
            if not s or s[0] == "#" or _PREAMBLE.match(s):
                continue
            lost = _LOST.match(s)
            if lost is not None:
                count = int(lost.group(2) or lost.group(3))
                events.append(Lost(n, last_ts, int(lost.group(1)), "", count))
                continue
            problems.append(Problem(n, f"not an ftrace event line (truncated?): {s[:60]!r}"))
            continue
        task, _, cpu, sec, frac, name, body = m.groups()
        k = len(frac)
        last_ts = int(sec) * 1_000_000_000 + (int(frac) * scale[k] if k <= 9 else int(frac[:9]))
        read = readers.get(name)
        if read is None:
            if _OURS.match(name):
                problems.append(Problem(n, f"unknown event {name!r} (not a Linux 6.12 event)"))
            else:
                out.unrelated += 1
            continue
        try:
            events.append(read((n, last_ts, int(cpu), task), name, body.rstrip()))
        except (LayoutError, ValueError) as exc:
            problems.append(Problem(n, f"{name}: fields do not have the Linux 6.12 layout ({exc})"))
    out.lines = n
    return out


def parse_text(text: str) -> Trace:
    return parse_lines(text.splitlines())


class UnreadableTrace(Exception):
    """The file is not ftrace text at all (binary trace.dat, unreadable file)."""


def read_trace(path: str | Path, stdin: BinaryIO | None = None) -> Trace:
    """Read and parse a trace file (``-``: ``stdin``, e.g. piped from ``trace_pipe``);
    :class:`UnreadableTrace` when it is not ftrace text."""
    p = Path(path)
    try:
        data = stdin.read() if str(path) == "-" and stdin is not None else p.read_bytes()
    except OSError as exc:
        raise UnreadableTrace(f"{p}: {exc.strerror or exc}") from None
    if data.startswith(TRACE_DAT_MAGIC):
        raise UnreadableTrace(
            f"{p}: a binary trace-cmd trace.dat, not ftrace text; "
            f"convert it with 'trace-cmd report -i {p} > trace.txt'"
        )
    if b"\0" in data[:4096]:
        raise UnreadableTrace(f"{p}: binary data, not ftrace text")
    return parse_text(data.decode("utf-8", errors="replace"))
