"""What ``iommulab replay`` prints: a dmesg-style report, JSON, Perfetto JSON.

The text report puts each finding on a dmesg line stamped with the trace's own time
(``[   15.916009] DMA-API: 0000:00:04.0: ...``) followed by the trace lines involved,
then the reconciliation counts, the live mappings per device at every ``PHASE``-style
marker, the statistics (peak live mappings, IOVA space use, map/unmap rates), and the
checks a trace cannot decide. The Perfetto form (Chrome trace-event JSON, as
``iommulab trace --format json``) shows each DMA mapping as a slice on its device's
track and the live count as a counter.
"""

from __future__ import annotations

import json
from typing import Any

from iommulab.replay.check import UNDECIDABLE, Finding, Result
from iommulab.replay.ftrace import Trace


def _stamp(ts_ns: int) -> str:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return f"[{sec:5d}.{ns // 1000:06d}]"


def finding_line(f: Finding) -> str:
    """``[ ts] DMA-API: device: message (lines a, b)``: dmesg style with trace time."""
    prefix = "DMA-API" if f.check in ("mismatch", "sync", "double-unmap") else "replay"
    unsure = f" [uncertain: {f.uncertain}]" if f.uncertain else ""
    lines = ", ".join(str(n) for n in f.lines)
    return f"{_stamp(f.ts_ns)} {prefix}: {f.device}: {f.message} (trace lines {lines}){unsure}"


def text(trace: Trace, res: Result) -> str:
    st = res.stats
    out = [finding_line(f) for f in res.findings]
    certain = len(res.certain)
    out.append(
        f"replay: {len(trace.events)} events read to line {res.until_line} "
        f"({trace.unrelated} unrelated skipped, {len(trace.problems)} unreadable); "
        f"{certain} finding(s), {len(res.findings) - certain} uncertain"
    )
    out.append(
        f"replay: DMA API: {st.dma_maps} maps, {st.dma_unmaps} unmaps/frees, "
        f"{st.dma_reconciled} map/unmap pairs reconciled; IOMMU: {st.iommu_maps} map, "
        f"{st.iommu_unmaps} unmap, {st.iommu_reconciled} reconciled, "
        f"{st.invalidations} invalidations"
    )
    for lost in res.lost:
        out.append(f"replay: CPU {lost.cpu} lost {lost.count} events at line {lost.line}")
    for marker, live in st.at_markers:
        shown = ", ".join(f"{d} {n}" for d, n in sorted(live.items())) or "none"
        out.append(f"{_stamp(marker.ts_ns)} {marker.text} (line {marker.line}): live {shown}")
    for dev in sorted(st.peak_live):
        out.append(
            f"replay: {dev}: peak {st.peak_live[dev]} live mappings, "
            f"{st.live.get(dev, 0)} live at line {res.until_line}"
        )
    for space in sorted(st.peak_iova_bytes):
        lo, hi = st.iova_extent[space]
        out.append(
            f"replay: IOVA space {space}: peak {st.peak_iova_bytes[space]} bytes mapped, "
            f"extent [{lo:#x}-{hi:#x})"
        )
    out.append(
        f"replay: rates: {st.rate(st.dma_maps):.1f} maps/s, "
        f"{st.rate(st.dma_unmaps):.1f} unmaps/s over "
        f"{(st.last_ts - (st.first_ts or 0)) / 1e9:.6f} s"
    )
    out.append("replay: not decidable from a trace:")
    out.extend(f"  - {u}" for u in UNDECIDABLE)
    return "\n".join(out) + "\n"


def as_dict(trace: Trace, res: Result) -> dict[str, Any]:
    st = res.stats
    return {
        "findings": [
            {
                "check": f.check,
                "message": f.message,
                "device": f.device,
                "lines": list(f.lines),
                "line": f.line,
                "timestamp": f.stamp(),
                "uncertain": f.uncertain,
            }
            for f in res.findings
        ],
        "problems": [{"line": p.line, "message": p.message} for p in trace.problems],
        "lost": [{"line": e.line, "cpu": e.cpu, "count": e.count} for e in res.lost],
        "events": len(trace.events),
        "until_line": res.until_line,
        "reconciled": {"dma": st.dma_reconciled, "iommu": st.iommu_reconciled},
        "counts": {
            "dma_maps": st.dma_maps,
            "dma_unmaps": st.dma_unmaps,
            "iommu_maps": st.iommu_maps,
            "iommu_unmaps": st.iommu_unmaps,
            "invalidations": st.invalidations,
        },
        "live_at_markers": [
            {"line": m.line, "marker": m.text, "live": live} for m, live in st.at_markers
        ],
        "live": {d: n for d, n in st.live.items()},
        "peak_live": st.peak_live,
        "live_series": {
            d: [[ts / 1e9, n] for ts, n in series] for d, series in st.live_series.items()
        },
        "iova_peak_bytes": st.peak_iova_bytes,
        "rates_per_s": {"map": st.rate(st.dma_maps), "unmap": st.rate(st.dma_unmaps)},
        "undecidable": list(UNDECIDABLE),
    }


def json_text(trace: Trace, res: Result) -> str:
    return json.dumps(as_dict(trace, res), indent=1) + "\n"


def perfetto(res: Result) -> str:
    """Mapping lifetimes as complete ("X") slices per device, live counts as counters."""
    st = res.stats
    devices = sorted(set(st.live_series) | {m.device for m in res.live})
    pid = {d: i + 1 for i, d in enumerate(devices)}
    ev: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": p, "tid": 0, "args": {"name": d}}
        for d, p in pid.items()
    ]
    for dev, addr, size, t0, t1, line in st.lifetimes:
        ev.append({
            "name": f"{addr:#x}+{size}", "cat": "dma", "ph": "X", "ts": t0 / 1000.0,
            "dur": (t1 - t0) / 1000.0, "pid": pid[dev], "tid": 1, "args": {"line": line},
        })  # fmt: skip
    end = st.last_ts
    for m in res.live:
        ev.append({
            "name": f"{m.dev_addr:#x}+{m.size}", "cat": "dma", "ph": "X",
            "ts": m.ts_ns / 1000.0, "dur": (end - m.ts_ns) / 1000.0, "pid": pid[m.device],
            "tid": 1, "args": {"line": m.line, "live_at_end": True},
        })  # fmt: skip
    for dev, series in st.live_series.items():
        for ts, n in series:
            ev.append({
                "name": "live mappings", "ph": "C", "ts": ts / 1000.0, "pid": pid[dev],
                "tid": 0, "args": {"live": n},
            })  # fmt: skip
    return json.dumps({"traceEvents": ev, "displayTimeUnit": "ns"}) + "\n"
