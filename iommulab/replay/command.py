"""``iommulab replay TRACE``: check a recorded DMA/IOMMU ftrace text offline.

Exit status: 0 clean, 1 when a (certain) finding is made, 2 when the input could not be
read — a binary ``trace.dat``, a missing file, or lines that are truncated, of unknown
DMA/IOMMU events or of another kernel's field layout. Each unreadable line is named on
stderr; the rest of the trace is still checked and reported.

``--rebuild`` (and ``--dump TARGET``) drive the trace into a booted model instead
(:mod:`iommulab.replay.machine`), to ``--until``, and show any ``iommulab dump`` target of
the state the calls left.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from iommulab.presets import load_machine_file
from iommulab.replay import report
from iommulab.replay.check import check
from iommulab.replay.events import Marker
from iommulab.replay.ftrace import Trace, UnreadableTrace, read_trace
from iommulab.replay.machine import machine_spec_for, rebuild

FORMATS = ("text", "json", "perfetto")


def until_line(trace: Trace, until: str) -> int:
    """``--until``: a line number, a timestamp (``12.5``: the last event at or before
    it) or marker text (the first ``tracing_mark_write`` containing it)."""
    if until.isdigit():
        return int(until)
    if re.fullmatch(r"\d+\.\d*", until):
        sec, _, frac = until.partition(".")
        ts = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9] or 0)
        before = [e.line for e in trace.events if e.ts_ns <= ts]
        return before[-1] if before else 0
    for e in trace.events:
        if isinstance(e, Marker) and until in e.text:
            return e.line
    raise ValueError(f"--until {until!r}: no line, timestamp or marker in the trace matches")


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        trace = read_trace(args.trace, sys.stdin.buffer)
    except UnreadableTrace as exc:
        print(f"iommulab: replay: {exc}", file=sys.stderr)
        return 2
    for p in trace.problems:
        print(f"iommulab: replay: {args.trace}: {p}", file=sys.stderr)
    until = until_line(trace, args.until) if args.until else None
    if args.rebuild or args.dump:
        sys.stdout.write(_rebuild(args, trace, until))
        return 2 if trace.problems else 0
    res = check(trace.events, until, args.lazy)
    if args.format == "json":
        out = report.json_text(trace, res)
    elif args.format == "perfetto":
        out = report.perfetto(res)
    else:
        out = report.text(trace, res)
    if args.output and args.output != "-":
        Path(args.output).write_text(out)
    else:
        sys.stdout.write(out)
    if trace.problems:
        return 2
    return 1 if res.certain else 0


def _rebuild(args: argparse.Namespace, trace: Trace, until: int | None) -> str:
    """``--rebuild``/``--dump``: drive the trace into a booted model, then dump."""
    from iommulab import cli  # the front door's boot plugins and dump rendering

    base = load_machine_file(args.machine_file) if args.machine_file else None
    spec = machine_spec_for(trace.events, base)
    r = rebuild(trace.events, spec, args.cmdline, until, cli.CORE_PLUGINS)
    out = r.summary()
    try:
        if args.dump:
            ns = argparse.Namespace(output_format=args.dump_format, format=args.dump_format)
            out += cli._render_dump(args.dump, r.kernel, ns)
    finally:
        r.kernel.shutdown()
    return out


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="check a recorded DMA/IOMMU ftrace (trace, trace_pipe, trace-cmd report)",
        description="Read ftrace text with dma:*, iommu:* and intel_iommu:* events and report "
        "DMA-API misuse, missing IOTLB invalidations, overlapping maps and device faults at "
        "unmapped IOVAs. Exit 1 on a finding, 2 on unreadable input.",
    )
    p.add_argument("trace", help="ftrace text file, or - for standard input (trace_pipe)")
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--until", help="stop at LINE, TIMESTAMP (seconds) or MARKER text")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument(
        "--lazy",
        action="store_true",
        help="the kernel ran iommu.strict=0: unmaps still in the flush queue at the end are "
        "no finding",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="drive the traced DMA API calls through the model (to --until) and report how "
        "often its IOVA choice equals the trace's",
    )
    p.add_argument("--dump", metavar="TARGET", help="after --rebuild, show a dump target")
    p.add_argument("--dump-format", default="text", help="the dump target's format")
    p.add_argument("--machine-file", help="machine to rebuild into (.toml/.json)")
    p.add_argument("--cmdline", default="iommu.strict=1", help="kernel command line for --rebuild")
    p.set_defaults(func=cmd_replay)
