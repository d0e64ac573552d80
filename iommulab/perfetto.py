"""The trace as a Chrome/Perfetto trace-event JSON document, laid out like the machine.

One *process* per machine part — ``kernel (CPU)``, each IOMMU unit (``IOMMU dmar0``),
each PCI device (``device 0000:00:02.0``) — and inside it one named *track* (a
thread in the JSON format) per queue or concern: a DSA's work queues (``wq0``), the
VT-d invalidation queue, the SMMUv3 command and event queues, page walks, stale uses,
faults; descriptors in flight together on one queue spread over extra lanes (``wq0 #2``),
since a track's slices must nest. Every recorded event is on its track, as an instant or
as the slice it begins, ends or is (with its fields as the slice's ``args``); the
converter derives

- complete slices (``X``): a descriptor from the portal that accepted it to its
  completion (``hw_dsa:descriptor_submit`` → ``descriptor_complete``, matched by the
  device's ``seq``) and, on the kernel's ``idxd wqN.M`` tracks, from ``idxd:submit``
  to ``idxd:complete``; an invalidation batch from the driver's first ``qi_submit``
  (``cmdq_issue`` on SMMUv3) to the hardware processing its wait descriptor
  (``CMD_SYNC``); each page walk (``iotlb_miss`` / ``tlb_miss``); each stale use; and
  each ``iommu:unmap``, from the unmap to the end of the DMA-API call that made it;
- async slices (``b``/``e``) for DMA mapping lifetimes on the device's process:
  ``dma_map_page`` → ``dma_unmap_page``, ``dma_alloc`` → ``dma_free``,
  ``dma_map_sg`` → ``dma_unmap_sg``; one still mapped at the end closes there with
  ``live_at_end``;
- flows (``s``/``f``): from an ``iommu:unmap`` to the invalidation batch that covers it
  (VT-d: the batch that follows a ``cache_tag_flush_range`` covering the IOVA or a
  ``cache_tag_flush_all``; SMMUv3: the batch of the next ``cmdq_issue`` with a TLBI),
  and from each table write that made a cached entry stale to the stale use (the flow
  runs the way causality does: write first, stale use after): from the unmap that made
  the write, found by the write's time when the stale-use event carries it
  (``write_ns``) and otherwise by the IOVA.

Time stamps and durations are the model's virtual time (``hw.clock``), in the format's
microseconds. Integers in ``args`` are hex strings (addresses, descriptor words,
identifiers alike), lists stay lists, an absent value is ``null``.

Page walks take no virtual time in the model: a table read is a synchronous RAM
access that never touches the clock (``hw/vtd/walk.py``, ``hw/smmuv3/walk.py``), and a
DSA descriptor's time is fixed when it is accepted (``desc_latency_ns`` plus its size
over ``bytes_per_ns``, ``_enqueue`` in ``hw/dsa/device.py``), after which its DMA,
walks included, runs at the instant it completes. So a walk event's time stamp is the
end of the descriptor that needed it. Giving walks time in the model would move every
DMA off that instant and change the timing every other event shows, so the time is
charged here, in the export only: each walk lasts :data:`WALK_READS` table reads of
:data:`TABLE_READ_NS` (the presets' tables have four levels, VT-d first stage and
SMMUv3 stage 1 alike), and the walks of one instant are laid end to end so the last
ends at that instant. When they would not fit after the previous walks on their
track, or inside the latest descriptor slice that ends at that instant, they share
that time evenly instead (the model's DSA moves a 4 KiB page in 136 ns, faster than
serial walks of 400 ns could feed it; the hardware overlaps walks with each other
and with the transfer), so a walk slice always nests in its descriptor's time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import define, field

from kernel.trace import TraceEvent

KERNEL = "kernel (CPU)"
"""The process of the kernel's own tracepoints."""

_UNIT_TRACKS = {
    "qi_descriptor": "invalidation queue",
    "command": "command queue",
    "iotlb_miss": "page walks",
    "tlb_miss": "page walks",
    "stale_translation": "stale uses",
    "ats_translate": "ATS",
    "devtlb_invalidate": "ATS",
    "page_request": "page request queue",
    "prq_write": "page request queue",
    "prq_overflow": "page request queue",
    "prg_response": "page request queue",
    "irte": "interrupt remapping",
    "reg_write": "registers",
}
"""Track of a hardware event raised by an IOMMU unit (others go to ``events``)."""

WALK_READS = 4
"""Table reads charged to one page walk in the export (a four-level walk)."""
TABLE_READ_NS = 100
"""Nanoseconds charged to one table read in the export (a DRAM access; the model
charges none)."""

_QI_WAIT = 0x5
"""VT-d invalidation wait descriptor type: the end of a batch."""

_UNMAP_ENDS = frozenset({"dma:dma_unmap_page", "dma:dma_unmap_sg", "dma:dma_free"})
"""DMA-API calls whose trace point follows the IOMMU unmaps they made."""


def _arg(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str | float):
        return v
    if isinstance(v, int):
        return f"{v:#x}"
    if isinstance(v, tuple | list):
        return [_arg(x) for x in v]
    return str(v)


def _args(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _arg(v) for k, v in fields.items()}


def _us(ns: float) -> float:
    return ns / 1000.0


@define
class _Unmap:
    ev: TraceEvent
    pid: int
    tid: int
    iova: int
    end: int
    slice: dict[str, Any]
    """Its slice, placed when the unmap is seen; the DMA-API call's end sets ``dur``."""
    covered: bool = False
    """A flush covering it was traced; the next batch on its unit takes it."""


@define
class _Batch:
    start: int
    slice: dict[str, Any]
    """Placed when the batch opens, so that flows into it bind to it; completed at the
    wait descriptor."""
    names: list[str] = field(factory=list)
    words: list[Any] = field(factory=list)


@define
class _Layout:
    """Builds the document: processes, tracks, and the events placed on them."""

    out: list[dict[str, Any]] = field(factory=list)
    pids: dict[str, int] = field(factory=dict)
    tids: dict[tuple[int, str], int] = field(factory=dict)
    lanes: dict[tuple[str, str], list[int]] = field(factory=dict)
    """(process, track) -> when the last slice of each of its lanes ends."""
    next_flow: int = 0

    def track(self, process: str, track: str) -> tuple[int, int]:
        pid = self.pids.get(process)
        if pid is None:
            pid = self.pids[process] = len(self.pids) + 1
            self.out.append(_meta("process_name", pid, 0, process))
            self.out.append(_meta("process_sort_index", pid, 0, pid, "sort_index"))
        tid = self.tids.get((pid, track))
        if tid is None:
            tid = self.tids[(pid, track)] = len(self.tids) + 1
            self.out.append(_meta("thread_name", pid, tid, track))
        return pid, tid

    def lane(self, process: str, track: str, start: int, end: int) -> tuple[int, int]:
        """The track for a slice that may overlap others of its queue (descriptors in
        flight together): the queue's own track, or the first of its extra lanes
        (``wq0 #2`` ...) whose slices all ended by ``start`` — a track's slices must
        nest for Perfetto."""
        ends = self.lanes.setdefault((process, track), [])
        for i, last in enumerate(ends):
            if last <= start:
                ends[i] = end
                break
        else:
            i = len(ends)
            ends.append(end)
        return self.track(process, track if i == 0 else f"{track} #{i + 1}")

    def instant(self, ev: TraceEvent, pid: int, tid: int) -> None:
        self.out.append({
            "name": ev.event, "cat": ev.system, "ph": "i", "s": "t", "ts": _us(ev.ts_ns),
            "pid": pid, "tid": tid, "args": _args(ev.fields),
        })  # fmt: skip

    def slice(
        self, name: str, cat: str, start: int, end: int, pid: int, tid: int, args: dict[str, Any]
    ) -> dict[str, Any]:
        """A complete slice, placed now in the document (a flow event binds to the
        slice placed before it at the same time)."""
        ev = {
            "name": name, "cat": cat, "ph": "X", "ts": _us(start), "dur": _us(end - start),
            "pid": pid, "tid": tid, "args": args,
        }  # fmt: skip
        self.out.append(ev)
        return ev

    def flow(self, name: str, src: tuple[int, int, int], dst: tuple[int, int, int]) -> None:
        """A flow arrow from the slice enclosing ``src`` (ts, pid, tid) to the one
        enclosing ``dst``."""
        self.next_flow += 1
        fid = self.next_flow
        for ph, (ts, pid, tid) in (("s", src), ("f", dst)):
            ev: dict[str, Any] = {
                "name": name, "cat": "flow", "ph": ph, "id": fid, "ts": _us(ts),
                "pid": pid, "tid": tid,
            }  # fmt: skip
            if ph == "f":
                ev["bp"] = "e"
            self.out.append(ev)


def _meta(name: str, pid: int, tid: int, value: Any, key: str = "name") -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": {key: value}}


def place(ev: TraceEvent) -> tuple[str, str]:
    """The (process, track) an event belongs to."""
    f = ev.fields
    if not ev.system.startswith("hw_"):
        return KERNEL, "kernel"
    unit = f.get("unit")
    if isinstance(unit, str):
        track = _UNIT_TRACKS.get(ev.event)
        if ev.system == "hw_smmuv3" and ev.event in ("fault", "page_request", "prg_response"):
            track = "event queue" if ev.event == "fault" else "PRI queue"
        elif ev.event == "fault":
            track = "fault recording"
        return f"IOMMU {unit}", track or "events"
    dev = f.get("dev")
    if isinstance(dev, str):
        wq = f.get("wq")
        return f"device {dev}", f"wq{wq}" if isinstance(wq, int) else "device"
    return "machine", ev.system


class _Builder:
    """One pass over the events in ring order (which is time order)."""

    def __init__(self) -> None:
        self.lay = _Layout()
        self.kpid, self.ktid = self.lay.track(KERNEL, "kernel")
        self.desc: dict[tuple[str, int], TraceEvent] = {}
        self.idxd: dict[tuple[str, int], TraceEvent] = {}
        self.batches: dict[str, _Batch] = {}
        self.hw_first: dict[str, int] = {}
        self.unmaps: list[_Unmap] = []
        self.pending: list[_Unmap] = []
        """Unmaps not yet tied to an invalidation batch."""
        self.open_unmaps: list[_Unmap] = []
        """Unmaps whose DMA-API call has not ended yet."""
        self.maps: dict[tuple[str, Any], tuple[int, str, int]] = {}
        self.next_map = 0
        self.last_ts = 0
        self.walks: dict[tuple[int, int], list[tuple[int, list[dict[str, Any]]]]] = {}
        """Page-walk track -> its walks grouped by instant, timed at the end."""
        self.desc_start: dict[int, int] = {}
        """Instant -> the latest start of a descriptor slice that ends then."""

    # -- kernel events ---------------------------------------------------------------
    def kernel(self, ev: TraceEvent) -> None:
        f = ev.fields
        name = ev.name
        if name == "iommu:unmap":
            ts = ev.ts_ns
            sl = self.lay.slice("unmap", "iommu", ts, ts, self.kpid, self.ktid, _args(f))
            u = _Unmap(ev, self.kpid, self.ktid, f["iova"], f["iova"] + f["size"], sl)
            self.unmaps.append(u)
            self.pending.append(u)
            self.open_unmaps.append(u)
        elif name in _UNMAP_ENDS:
            for u in self.open_unmaps:
                u.slice["dur"] = _us(ev.ts_ns - u.ev.ts_ns)
            self.open_unmaps.clear()
        if name == "intel_iommu:cache_tag_flush_range":
            for u in self.pending:
                u.covered |= u.iova <= f["end"] and f["start"] < u.end
        elif name == "intel_iommu:cache_tag_flush_all":
            for u in self.pending:
                u.covered = True
        elif name == "intel_iommu:qi_submit":
            words = [f[k] for k in _QWS]
            self._batch_join(f["iommu"], "invalidation queue", ev.ts_ns, f["type"], words)
        elif name == "arm_smmu_v3:cmdq_issue":
            ops = str(f["ops"])
            if "TLBI" in ops:
                for u in self.pending:
                    u.covered = True
            self._batch_join(f["smmu"], "command queue", ev.ts_ns, ops, [])
        elif ev.system == "idxd" and ev.event in ("submit", "complete"):
            self._idxd(ev)
        elif ev.system == "dma":
            self._mapping(ev)

    def _batch_join(self, unit: str, queue: str, ts: int, what: str, words: list[Any]) -> None:
        """The driver queued ``what``: it opens the unit's batch or joins the open one,
        and the unmaps a traced flush covered flow to it."""
        pid, tid = self.lay.track(f"IOMMU {unit}", queue)
        b = self.batches.get(unit)
        if b is None:
            sl = self.lay.slice("invalidation batch", "queue", ts, ts, pid, tid, {})
            b = self.batches[unit] = _Batch(ts, sl)
        b.names.append(what)
        if words:
            b.words.append(words)
        still = []
        for u in self.pending:
            if u.covered:
                self.lay.flow("unmap → invalidation", (u.ev.ts_ns, u.pid, u.tid), (ts, pid, tid))
            else:
                still.append(u)
        self.pending = still

    def _idxd(self, ev: TraceEvent) -> None:
        key = (str(ev.fields["wq"]), ev.fields["desc"])
        if ev.event == "submit":
            self.idxd[key] = ev
            return
        start = self.idxd.pop(key, None)
        if start is not None:
            pid, tid = self.lay.lane(KERNEL, f"idxd {key[0]}", start.ts_ns, ev.ts_ns)
            args = _args({**start.fields, **ev.fields})
            self.lay.slice(f"desc {key[1]:#x}", "idxd", start.ts_ns, ev.ts_ns, pid, tid, args)

    def _mapping(self, ev: TraceEvent) -> None:
        f = ev.fields
        dev = str(f["device"])
        if ev.event in ("dma_map_page", "dma_alloc", "dma_map_sg"):
            key = (dev, f["dma_addr"] if "dma_addr" in f else tuple(f["phys_addrs"]))
            addr = f["dma_addr"] if "dma_addr" in f else f["dma_addrs"][0]
            size = f["size"] if "size" in f else sum(f["sizes"])
            self.next_map += 1
            label = f"{addr:#x}+{size:#x}"
            self.maps[key] = (self.next_map, label, ev.ts_ns)
            self._async("b", dev, self.next_map, label, ev.ts_ns, _args(f))
        elif ev.event in ("dma_unmap_page", "dma_free", "dma_unmap_sg"):
            key = (dev, f["dma_addr"] if "dma_addr" in f else tuple(f["phys_addrs"]))
            got = self.maps.pop(key, None)
            if got is not None:
                self._async("e", dev, got[0], got[1], ev.ts_ns, _args(f))

    def _async(self, ph: str, dev: str, mid: int, label: str, ts: int, args: Any) -> None:
        pid, _ = self.lay.track(f"device {dev}", "device")
        self.lay.out.append({
            "name": label, "cat": "dma_mapping", "ph": ph, "id": mid, "ts": _us(ts),
            "pid": pid, "tid": 0, "args": args,
        })  # fmt: skip

    # -- hardware events -------------------------------------------------------------
    def hardware(self, ev: TraceEvent, pid: int, tid: int) -> None:
        f = ev.fields
        e = ev.event
        if ev.system == "hw_dsa" and e in ("descriptor_submit", "descriptor_complete"):
            key = (str(f["dev"]), f["seq"])
            if e == "descriptor_submit":
                self.desc[key] = ev
                return
            start = self.desc.pop(key, None)
            if start is not None:
                args = _args({**start.fields, **f})
                name = f"op {f['opcode']:#x} seq {key[1]:#x}"
                process, track = place(ev)
                pid, tid = self.lay.lane(process, track, start.ts_ns, ev.ts_ns)
                self.lay.slice(name, ev.system, start.ts_ns, ev.ts_ns, pid, tid, args)
                latest = self.desc_start.get(ev.ts_ns)
                if latest is None or start.ts_ns > latest:
                    self.desc_start[ev.ts_ns] = start.ts_ns
                return
        elif e in ("iotlb_miss", "tlb_miss"):
            sl = self.lay.slice("page walk", ev.system, ev.ts_ns, ev.ts_ns, pid, tid, _args(f))
            groups = self.walks.setdefault((pid, tid), [])
            if groups and groups[-1][0] == ev.ts_ns:
                groups[-1][1].append(sl)
            else:
                groups.append((ev.ts_ns, [sl]))
            return
        elif e == "stale_translation":
            self._stale(ev, pid, tid)
            return
        elif ev.system == "hw_vtd" and e == "qi_descriptor":
            self._hw_queue(str(f["unit"]), ev.ts_ns, pid, tid, f["type"] == _QI_WAIT)
        elif ev.system == "hw_smmuv3" and e == "command":
            self._hw_queue(str(f["unit"]), ev.ts_ns, pid, tid, f["op"] == "CMD_SYNC")
        self.lay.instant(ev, pid, tid)

    def _hw_queue(self, unit: str, ts: int, pid: int, tid: int, wait: bool) -> None:
        """The hardware consumed a queued descriptor; a wait (sync) ends the batch."""
        self.hw_first.setdefault(unit, ts)
        if not wait:
            return
        b = self.batches.pop(unit, None)
        first = self.hw_first.pop(unit)
        if b is None:  # the driver's submissions were not traced
            self.lay.slice("invalidation batch", "queue", first, ts, pid, tid, {})
            return
        self._close(b, ts)

    @staticmethod
    def _close(b: _Batch, end: int) -> None:
        b.slice["name"] = "+".join(dict.fromkeys(n for part in b.names for n in part.split(",")))
        b.slice["dur"] = _us(end - b.start)
        if b.words:
            b.slice["args"]["descriptors"] = _arg(b.words)

    def _stale(self, ev: TraceEvent, pid: int, tid: int) -> None:
        """A stale use, with a flow from each table write that made it stale. When the
        event says when those writes happened (``write_ns``), each flow starts at the
        unmap that made the write (the first unmap covering the IOVA at or after it:
        the trace point follows the store), or at a ``table write`` slice placed at
        that time when no unmap did; without ``write_ns``, at the latest unmap that
        covered the IOVA."""
        addr = ev.fields.get("addr")
        dst = (ev.ts_ns, pid, tid)
        self.lay.slice("stale use", ev.system, ev.ts_ns, ev.ts_ns, pid, tid, _args(ev.fields))
        if not isinstance(addr, int):
            return
        covering = [u for u in self.unmaps if u.iova <= addr < u.end]
        writes = ev.fields.get("write_ns")
        if not isinstance(writes, list | tuple) or not writes:
            if covering:
                last = covering[-1]
                self.lay.flow(_STALE_FLOW, (last.ev.ts_ns, last.pid, last.tid), dst)
            return
        for w in dict.fromkeys(writes):
            u = next((c for c in covering if c.ev.ts_ns >= w), None)
            if u is None:
                args = {"iova": _arg(addr), "write_ns": _arg(w)}
                self.lay.slice("table write", "iommu", w, w, self.kpid, self.ktid, args)
                src = (w, self.kpid, self.ktid)
            else:
                src = (u.ev.ts_ns, u.pid, u.tid)
            self.lay.flow(_STALE_FLOW, src, dst)

    def _time_walks(self) -> None:
        """Give the walks their charged time (see the module's docstring): each
        instant's walks end to end up to it, squeezed evenly into the time after the
        track's previous walks and the start of the latest descriptor ending then."""
        charge = WALK_READS * TABLE_READ_NS
        for groups in self.walks.values():
            prev = 0
            for at, slices in groups:
                floor = max(prev, self.desc_start.get(at, 0))
                n = len(slices)
                each = charge if n * charge <= at - floor else (at - floor) / n
                for i, sl in enumerate(slices):
                    sl["ts"] = _us(at - (n - i) * each)
                    sl["dur"] = _us(each)
                prev = at

    # -- the end -------------------------------------------------------------------
    def finish(self) -> list[dict[str, Any]]:
        self._time_walks()
        for b in self.batches.values():  # no wait descriptor before the trace ended
            self._close(b, self.last_ts)
        for (_, seq), ev in self.desc.items():  # accepted, not completed when it ended
            process, track = place(ev)
            pid, tid = self.lay.lane(process, track, ev.ts_ns, self.last_ts)
            args = {**_args(ev.fields), "completed": False}
            self.lay.slice(f"seq {seq:#x}", ev.system, ev.ts_ns, self.last_ts, pid, tid, args)
        for (dev, _), (mid, label, _ts) in self.maps.items():
            self._async("e", dev, mid, label, self.last_ts, {"live_at_end": True})
        return self.lay.out


_QWS = ("qw0", "qw1", "qw2", "qw3")
_STALE_FLOW = "table write → stale use"


def to_chrome_json(events: Iterable[TraceEvent]) -> str:
    """The trace-event JSON object (``traceEvents``), laid out per machine part."""
    return json.dumps(
        {"traceEvents": chrome_events(events), "displayTimeUnit": "ns"}, separators=(",", ":")
    )


def chrome_events(events: Iterable[TraceEvent]) -> list[dict[str, Any]]:
    b = _Builder()
    for ev in events:
        b.last_ts = max(b.last_ts, ev.ts_ns)
        process, track = place(ev)
        pid, tid = b.lay.track(process, track)
        if process == KERNEL:
            b.kernel(ev)
            if ev.name != "iommu:unmap":  # its slice carries it
                b.lay.instant(ev, pid, tid)
        else:
            b.hardware(ev, pid, tid)
    return b.finish()


def processes(doc: Mapping[str, Any]) -> dict[int, str]:
    """pid -> process name of a document (for readers and tests)."""
    return {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}


def tracks(doc: Mapping[str, Any]) -> dict[tuple[int, int], str]:
    """(pid, tid) -> track name of a document."""
    return {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in doc["traceEvents"]
        if e["name"] == "thread_name"
    }
