"""The demo's trace laid out per machine part (iommulab.perfetto), and its ftrace text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from iommulab import cli
from iommulab import trace as tracing
from iommulab.perfetto import (
    KERNEL,
    TABLE_READ_NS,
    WALK_READS,
    chrome_events,
    processes,
    tracks,
)
from iommulab.replay.ftrace import _HEADER, parse_text
from kernel.boot import current_kernel
from kernel.trace import TraceEvent
from tests.iommulab.schema import trace_event_schema, validate

Doc = dict[str, Any]
REAL_TRACE = Path(__file__).parents[1] / "data" / "linux-6.12-trace.txt"
"""A real Linux 6.12 trace (spec/linux-6.12-trace/trace.txt)."""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Doc, list[TraceEvent]]:
    """``iommulab trace --format json demo``: the document it wrote and the ring it
    was made from."""
    out = tmp_path_factory.mktemp("trace") / "demo.json"
    assert cli.main(["trace", "--format", "json", "-o", str(out)]) == 0
    events, overflowed = tracing.recorded(current_kernel())
    assert not overflowed
    return json.loads(Path(out).read_text()), events


def _slices(doc: Doc, ph: str = "X") -> list[Doc]:
    return [e for e in doc["traceEvents"] if e["ph"] == ph]


def test_every_machine_part_is_a_named_process_with_named_tracks(
    demo_run: tuple[Doc, list[TraceEvent]],
) -> None:
    doc, _ = demo_run
    assert validate(doc, trace_event_schema()) == []
    procs = processes(doc)
    assert set(procs.values()) == {KERNEL, "IOMMU dmar0", "device 0000:00:02.0"}
    by_proc: dict[str, set[str]] = {}
    for (pid, _), name in tracks(doc).items():
        by_proc.setdefault(procs[pid], set()).add(name)
    assert {"invalidation queue", "page walks"} <= by_proc["IOMMU dmar0"]
    assert {"wq0", "wq1"} <= by_proc["device 0000:00:02.0"]
    assert {"kernel", "idxd wq0.0"} <= by_proc[KERNEL]
    named = set(tracks(doc))
    assert all((e["pid"], e["tid"]) in named for e in doc["traceEvents"] if e["ph"] in "Xi")


def test_descriptor_slices_last_the_models_virtual_time(
    demo_run: tuple[Doc, list[TraceEvent]],
) -> None:
    doc, ring = demo_run
    submitted = {e.fields["seq"]: e.ts_ns for e in ring if e.name == "hw_dsa:descriptor_submit"}
    done = {e.fields["seq"]: e.ts_ns for e in ring if e.name == "hw_dsa:descriptor_complete"}
    assert submitted and submitted.keys() == done.keys()
    procs, names = processes(doc), tracks(doc)
    got = {}
    for s in _slices(doc):
        if s["cat"] == "hw_dsa":
            assert procs[s["pid"]] == "device 0000:00:02.0"
            assert names[(s["pid"], s["tid"])] == f"wq{int(s['args']['wq'], 16)}"
            got[int(s["args"]["seq"], 16)] = (s["ts"], s["dur"])
    assert got.keys() == submitted.keys()
    for seq, (ts, dur) in got.items():
        assert ts * 1000 == pytest.approx(submitted[seq])
        assert dur * 1000 == pytest.approx(done[seq] - submitted[seq])
        assert dur > 0


def test_each_unmap_flows_to_the_invalidation_that_covers_it(
    demo_run: tuple[Doc, list[TraceEvent]],
) -> None:
    doc, ring = demo_run
    procs, names = processes(doc), tracks(doc)
    xs = _slices(doc)

    def enclosing(ev: Doc) -> Doc:
        """The slice a flow event binds to: of those on its track that contain its
        time, the one that began last (slices that touch end-to-start share a time)."""
        around = [
            s
            for s in xs
            if (s["pid"], s["tid"]) == (ev["pid"], ev["tid"])
            and s["ts"] <= ev["ts"] <= s["ts"] + s["dur"]
            and (s["name"] == "unmap" or names[(s["pid"], s["tid"])] == "invalidation queue")
        ]
        return max(around, key=lambda s: s["ts"])

    starts = {e["id"]: e for e in _slices(doc, "s") if e["name"] == "unmap → invalidation"}
    ends = {e["id"]: e for e in _slices(doc, "f")}
    unmaps = [e for e in ring if e.name == "iommu:unmap"]
    assert len(starts) == len(unmaps) > 0
    for fid, s in starts.items():
        src, dst = enclosing(s), enclosing(ends[fid])
        # Each slice precedes, in the document, the flow events bound to it (a
        # reader sorting by time alone keeps that order for equal times).
        order = {id(e): i for i, e in enumerate(doc["traceEvents"])}
        assert order[id(src)] < order[id(s)] and order[id(dst)] < order[id(ends[fid])]
        assert src["name"] == "unmap" and procs[src["pid"]] == KERNEL
        assert procs[dst["pid"]] == "IOMMU dmar0"
        iova = int(src["args"]["iova"], 16)
        # Decoded independently: a PASID-based IOTLB invalidation (type 6) whose
        # address (qw1 bits 63:12) is the unmapped page.
        words = [[int(w, 16) for w in d] for d in dst["args"]["descriptors"]]
        assert any(d[0] & 0xF == 6 and d[1] & ~0xFFF == iova for d in words), (iova, words)


def test_mapping_lifetimes_are_async_slices_on_the_device(
    demo_run: tuple[Doc, list[TraceEvent]],
) -> None:
    doc, ring = demo_run
    begins, ends = _slices(doc, "b"), {e["id"]: e for e in _slices(doc, "e")}
    maps = [e for e in ring if e.name in ("dma:dma_map_page", "dma:dma_alloc")]
    assert len(begins) == len(maps) > 0
    for b in begins:
        e = ends[b["id"]]
        assert e["name"] == b["name"] and e["pid"] == b["pid"] and e["ts"] >= b["ts"]
        assert processes(doc)[b["pid"]] == "device 0000:00:02.0"
        assert b["name"] == f"{b['args']['dma_addr']}+{b['args']['size']}"


def test_integers_in_args_are_hex(demo_run: tuple[Doc, list[TraceEvent]]) -> None:
    doc, _ = demo_run

    def ints(v: Any) -> list[Any]:
        if isinstance(v, dict):
            return [x for w in v.values() for x in ints(w)]
        if isinstance(v, list):
            return [x for w in v for x in ints(w)]
        return [v] if isinstance(v, int) and not isinstance(v, bool) else []

    assert ints([e.get("args", {}) for e in doc["traceEvents"] if e["ph"] != "M"]) == []
    qi = next(e for e in doc["traceEvents"] if e["name"] == "qi_descriptor")
    assert all(w.startswith("0x") for w in qi["args"]["qw"])


def test_the_text_trace_reads_as_linux_ftrace(demo_run: tuple[Doc, list[TraceEvent]]) -> None:
    _, ring = demo_run
    text = tracing.render(ring, "text")
    # The header as Linux 6.12 prints it, counts aside.
    real = REAL_TRACE.read_text().splitlines()
    n = len(ring)
    assert text.splitlines()[:12] == [
        *real[:2],
        f"# entries-in-buffer/entries-written: {n}/{n}   #P:1",
        *real[3:12],
    ]
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == len(ring)
    assert all(_HEADER.fullmatch(ln) for ln in lines)
    parsed = parse_text(text)
    assert parsed.problems == []
    linux = {"iommu", "dma", "intel_iommu"}
    assert len(parsed.events) == sum(e.system in linux for e in ring) > 0
    # Column for column as Linux 6.12 prints the event.
    theirs = _HEADER.fullmatch(next(ln for ln in real if "add_device_to_group:" in ln))
    ours = _HEADER.fullmatch(next(ln for ln in lines if "add_device_to_group:" in ln))
    assert theirs is not None and ours is not None
    assert ours.start("sec") == theirs.start("sec") and ours.end("name") == theirs.end("name")


def test_a_stale_use_without_an_unmap_has_no_flow() -> None:
    stale = TraceEvent(5, "hw_vtd:stale_translation", {"unit": "dmar0", "addr": 0x1000}, "")
    evs = chrome_events([stale])
    assert [e["name"] for e in evs if e["ph"] == "X"] == ["stale use"]
    assert not [e for e in evs if e["ph"] in "sf"]


def test_a_kernel_tracepoint_is_an_instant_on_the_kernel_track() -> None:
    ev = TraceEvent(2000, "iommu:attach_device_to_domain", {"device": "0000:00:03.0"}, "")
    doc = {"traceEvents": chrome_events([ev])}
    (inst,) = [e for e in doc["traceEvents"] if e["ph"] == "i"]
    assert processes(doc)[inst["pid"]] == KERNEL
    assert tracks(doc)[(inst["pid"], inst["tid"])] == "kernel"
    assert (
        inst["ts"] == 2.0 and inst["cat"] == "iommu" and inst["name"] == "attach_device_to_domain"
    )
    assert inst["args"] == {"device": "0000:00:03.0"}


def test_hardware_alone_still_gives_batches_and_open_ends_close_at_the_end(
    demo_run: tuple[Doc, list[TraceEvent]],
) -> None:
    _, ring = demo_run
    hw_only = chrome_events(e for e in ring if e.system.startswith("hw_"))
    batches = [e for e in hw_only if e["ph"] == "X" and e["cat"] == "queue"]
    waits = [e for e in ring if e.name == "hw_vtd:qi_descriptor" and e.fields["type"] == 5]
    assert len(batches) == len(waits) and {b["name"] for b in batches} == {"invalidation batch"}
    # Cut the run right after the first mapping: its lifetime ends with the trace.
    first = next(i for i, e in enumerate(ring) if e.name == "dma:dma_map_page")
    cut = chrome_events(ring[: first + 1])
    (begin,) = [e for e in cut if e["ph"] == "b" and e["cat"] == "dma_mapping" and
                e["args"]["dir"] != "0x0"]  # fmt: skip
    (end,) = [e for e in cut if e["ph"] == "e" and e["id"] == begin["id"]]
    assert end["args"] == {"live_at_end": True} and end["ts"] * 1000 == ring[first].ts_ns


def test_smmuv3_unmaps_flow_to_their_tlbi_on_the_command_queue(tmp_path: Path) -> None:
    out = tmp_path / "smmu.json"
    events = "iommu:*,dma:*,arm_smmu_v3:*,hw_smmuv3:command"
    argv = ["trace", "--machine", "smmuv3", "--events", events, "--format", "json"]
    assert cli.main([*argv, "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    procs, names = processes(doc), tracks(doc)
    assert set(procs.values()) >= {KERNEL, "IOMMU smmu0"}
    evs = doc["traceEvents"]
    queue = [e for e in evs if e["ph"] == "X" and e["cat"] == "queue"]
    assert queue and {names[(e["pid"], e["tid"])] for e in queue} == {"command queue"}
    starts = {e["id"]: i for i, e in enumerate(evs) if e["ph"] == "s"}
    ends = [(i, e) for i, e in enumerate(evs) if e["ph"] == "f"]
    assert len(ends) == sum(e["ph"] == "X" and e["name"] == "unmap" for e in evs) > 0

    def bound(at: int, ok: Any) -> int:
        """The slice a flow event binds to: the model takes no time over an SMMUv3
        batch, so several share a time stamp; the one placed last before it on its
        track."""
        track = (evs[at]["pid"], evs[at]["tid"])
        return max(i for i in range(at) if (evs[i]["pid"], evs[i]["tid"]) == track and ok(evs[i]))

    for at, f in ends:
        unmap = evs[bound(starts[f["id"]], lambda e: e["ph"] == "X" and e["name"] == "unmap")]
        iova = int(unmap["args"]["iova"], 16)
        b = bound(at, lambda e: e["ph"] == "X" and e["cat"] == "queue")
        # Between the batch's start and its CMD_SYNC the hardware consumed a
        # TLBI_NH_VA whose address (dw1 bits 63:12) is the unmapped page.
        inside = []
        for e in evs[b + 1 :]:
            if e["name"] == "command":
                inside.append(e["args"])
                if e["args"]["op"] == "CMD_SYNC":
                    break
        assert any(
            c["op"] == "TLBI_NH_VA" and int(c["dw"][1], 16) & ~0xFFF == iova for c in inside
        ), (iova, evs[b]["name"])


def _ev(ts: int, name: str, **fields: Any) -> TraceEvent:
    return TraceEvent(ts, name, fields, "")


def test_a_lazy_unmap_flows_to_the_flush_all_batch_that_follows_it() -> None:
    """Flush-queue (lazy) mode: the unmap is invalidated later, by a domain-wide
    flush; a batch before that flush (a context invalidation) does not take it."""
    qw = {"qw1": 0, "qw2": 0, "qw3": 0}
    evs = [
        _ev(100, "iommu:unmap", iova=0x1000, size=0x1000, unmapped_size=0x1000),
        _ev(200, "intel_iommu:qi_submit", iommu="dmar0", type="cc_inv", qw0=0x11, **qw),
        _ev(210, "hw_vtd:qi_descriptor", unit="dmar0", type=1, qw=(0x11, 0, 0, 0)),
        _ev(220, "hw_vtd:qi_descriptor", unit="dmar0", type=5, qw=(0x25, 0, 0, 0)),
        _ev(900, "intel_iommu:cache_tag_flush_all", iommu="dmar0", did=2),
        _ev(910, "intel_iommu:qi_submit", iommu="dmar0", type="iotlb_inv", qw0=0x12, **qw),
        _ev(920, "hw_vtd:qi_descriptor", unit="dmar0", type=2, qw=(0x12, 0, 0, 0)),
        _ev(950, "intel_iommu:qi_submit", iommu="dmar0", type="iotlb_inv", qw0=0x12, **qw),
    ]
    doc = {"traceEvents": chrome_events(evs)}
    batches = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["cat"] == "queue"]
    assert [(b["name"], b["ts"], b["dur"]) for b in batches] == [
        ("cc_inv", 0.2, 0.02),
        ("iotlb_inv", 0.91, 0.04),  # no wait yet: closed at the trace's end
    ]
    (s,) = [e for e in doc["traceEvents"] if e["ph"] == "s"]
    (f,) = [e for e in doc["traceEvents"] if e["ph"] == "f"]
    assert (s["ts"], f["ts"], f["pid"], f["tid"]) == (
        0.1, 0.91, batches[1]["pid"], batches[1]["tid"]
    )  # fmt: skip


def test_faults_and_unknown_events_have_a_track() -> None:
    evs = [
        _ev(1, "hw_vtd:fault", unit="dmar0", rid=0x10, pasid=None, addr=0x1000, reason=5),
        _ev(2, "hw_smmuv3:fault", unit="smmu0", sid=1, ssid=None, addr=0x2000, evt=0x10),
        _ev(3, "hw_dsa:halt", dev="0000:00:02.0", reset_type=1),
        _ev(4, "hw_new:thing", what=object.__name__, when=1.5),
        _ev(5, "hw_mock:stale_translation", unit="mock0", did=1, addr=None),
        _ev(6, "hw_vtd:page_request", unit="dmar0", rid=0x10, pasid=1, addr=0x4000),
        _ev(7, "hw_smmuv3:page_request", unit="smmu0", sid=1, ssid=1, addr=0x4000),
    ]
    doc = {"traceEvents": chrome_events(evs)}
    procs, names = processes(doc), tracks(doc)
    placed = [
        (procs[e["pid"]], names[(e["pid"], e["tid"])], e["name"])
        for e in doc["traceEvents"]
        if e["ph"] in "iX"
    ]
    assert placed == [
        ("IOMMU dmar0", "fault recording", "fault"),
        ("IOMMU smmu0", "event queue", "fault"),
        ("device 0000:00:02.0", "device", "halt"),
        ("machine", "hw_new", "thing"),
        ("IOMMU mock0", "stale uses", "stale use"),
        ("IOMMU dmar0", "page request queue", "page_request"),
        ("IOMMU smmu0", "PRI queue", "page_request"),
    ]
    thing = next(e for e in doc["traceEvents"] if e["name"] == "thing")
    assert thing["args"] == {"what": "object", "when": 1.5}


def test_a_stale_use_that_says_when_its_table_was_written_flows_from_that_write() -> None:
    """``write_ns`` (the stale-use record's table-write times): a write made by an
    unmap of the IOVA flows from that unmap's slice, even when a later unmap also
    covers the IOVA; a write no unmap made gets a ``table write`` slice of its own."""
    unmap = {"size": 0x1000, "unmapped_size": 0x1000}
    evs = [
        _ev(100, "iommu:unmap", iova=0x1000, **unmap),
        _ev(300, "iommu:unmap", iova=0x1000, **unmap),
        _ev(400, "hw_vtd:stale_translation", unit="dmar0", addr=0x1000, write_ns=[100, 350]),
    ]
    doc = chrome_events(evs)
    slices = {e["ts"]: e["name"] for e in doc if e["ph"] == "X"}
    assert slices == {0.1: "unmap", 0.3: "unmap", 0.35: "table write", 0.4: "stale use"}
    starts = sorted(e["ts"] for e in doc if e["ph"] == "s")
    assert starts == [0.1, 0.35]
    assert {e["ts"] for e in doc if e["ph"] == "f"} == {0.4}
    # Without write_ns: the latest unmap of the IOVA.
    (s,) = [e for e in chrome_events([*evs[:2], _ev(400, evs[2].name, unit="dmar0",
            addr=0x1000)]) if e["ph"] == "s"]  # fmt: skip
    assert s["ts"] == 0.3


def test_descriptors_in_flight_together_take_separate_lanes_of_their_queue() -> None:
    """Slices on one track must nest; overlapping descriptors of one WQ do not, so
    the second goes to ``wq0 #2`` and a later one returns to ``wq0``."""
    dev = {"dev": "0000:00:02.0", "wq": 0}
    done = {**dev, "opcode": 3, "status": 1, "pasid": None, "size": 0x1000}
    evs = [
        _ev(0, "hw_dsa:descriptor_submit", **dev, seq=1, desc=(0,) * 8),
        _ev(5, "hw_dsa:descriptor_submit", **dev, seq=2, desc=(0,) * 8),
        _ev(10, "hw_dsa:descriptor_complete", **done, seq=1),
        _ev(12, "hw_dsa:descriptor_complete", **done, seq=2),
        _ev(20, "hw_dsa:descriptor_submit", **dev, seq=3, desc=(0,) * 8),
        _ev(25, "hw_dsa:descriptor_submit", **dev, seq=4, desc=(0,) * 8),
        _ev(30, "hw_dsa:descriptor_complete", **done, seq=3),
    ]
    doc = {"traceEvents": chrome_events(evs)}
    names = tracks(doc)
    lanes = [
        (e["args"]["seq"], names[(e["pid"], e["tid"])])
        for e in doc["traceEvents"]
        if e["ph"] == "X"
    ]
    # seq 4 never completed: its slice runs to the end of the trace.
    assert lanes == [("0x1", "wq0"), ("0x2", "wq0 #2"), ("0x3", "wq0"), ("0x4", "wq0 #2")]
    last = [e for e in doc["traceEvents"] if e["ph"] == "X"][-1]
    assert (last["ts"], last["dur"], last["args"]["completed"]) == (0.025, 0.005, False)


def _walks(doc: list[Doc]) -> list[tuple[float, float]]:
    return [(e["ts"], e["dur"]) for e in doc if e["ph"] == "X" and e["name"] == "page walk"]


def test_a_walk_lasts_its_table_reads_and_ends_inside_its_descriptor() -> None:
    """The model resolves a descriptor's translations when it completes, in no
    virtual time; the export charges each walk WALK_READS reads of TABLE_READ_NS and
    ends it at that instant, inside the descriptor's slice."""
    dev = {"dev": "0000:00:02.0", "wq": 0}
    done = {**dev, "opcode": 3, "status": 1, "pasid": None, "size": 0x10000}
    evs = [
        _ev(1000, "hw_dsa:descriptor_submit", **dev, seq=1, desc=(0,) * 8),
        _ev(9000, "hw_vtd:iotlb_miss", unit="dmar0", did=1, tag=1, addr=0x1000),
        _ev(9000, "hw_vtd:iotlb_miss", unit="dmar0", did=1, tag=1, addr=0x2000),
        _ev(9000, "hw_dsa:descriptor_complete", **done, seq=1),
    ]
    doc = chrome_events(evs)
    charge = WALK_READS * TABLE_READ_NS
    assert charge == 400
    assert _walks(doc) == [(8.2, 0.4), (8.6, 0.4)]  # end to end, the last ends at 9 us
    (desc,) = [e for e in doc if e["ph"] == "X" and e["cat"] == "hw_dsa"]
    assert desc["ts"] <= 8.2 and 9.0 == desc["ts"] + desc["dur"]


def test_walks_that_do_not_fit_share_their_descriptors_time() -> None:
    """Three walks in a 300 ns descriptor (they would need 1200 ns): 100 ns each,
    from its start to its end; a later walk at an instant no descriptor ends starts
    no earlier than the previous walks on its track ended."""
    dev = {"dev": "0000:00:02.0", "wq": 0}
    done = {**dev, "opcode": 3, "status": 1, "pasid": None, "size": 0x1000}
    miss = {"unit": "smmu0", "vmid": 0, "asid": 1}
    evs = [
        _ev(700, "hw_dsa:descriptor_submit", **dev, seq=1, desc=(0,) * 8),
        *(_ev(1000, "hw_smmuv3:tlb_miss", **miss, addr=a << 12) for a in range(3)),
        _ev(1000, "hw_dsa:descriptor_complete", **done, seq=1),
        _ev(1200, "hw_smmuv3:tlb_miss", **miss, addr=0x9000),
    ]
    got = [(round(ts * 1000), round(dur * 1000)) for ts, dur in _walks(chrome_events(evs))]
    assert got == [(700, 100), (800, 100), (900, 100), (1000, 200)]


def test_demo_walks_take_time_and_nest_in_their_descriptors(
    demo_run: tuple[Doc, list[TraceEvent]],
) -> None:
    doc, ring = demo_run
    evs = doc["traceEvents"]
    descs = [(e["ts"], e["ts"] + e["dur"]) for e in _slices(doc) if e["cat"] == "hw_dsa"]
    walks = _walks(evs)
    assert len(walks) == sum(e.event == "iotlb_miss" for e in ring) > 0
    end = 0.0
    for ts, dur in walks:
        assert dur > 0 and ts >= end - 1e-9  # one track: walks never overlap
        end = ts + dur
        assert any(s <= ts + 1e-9 and end <= e + 1e-9 for s, e in descs), (ts, dur)
    # the walks of an instant end with the descriptor that ended then
    ends = {round(e, 6) for _, e in descs}
    assert {round(e.ts_ns / 1000, 6) for e in ring if e.event == "iotlb_miss"} <= ends
