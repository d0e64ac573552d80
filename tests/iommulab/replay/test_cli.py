"""``iommulab replay`` on the command line: report, formats, exit status, bad input.

Exit 0 on a clean trace, 1 on a finding, 2 on unreadable input with one message per
bad line naming it — while the readable rest is still checked and reported.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from iommulab import cli
from iommulab.replay import check as C
from iommulab.replay.ftrace import TRACE_DAT_MAGIC, parse_lines
from iommulab.replay.qi import decode, type_name
from tests.iommulab.replay.conftest import REAL_TRACE, line_of, real_lines
from tests.iommulab.schema import trace_event_schema, validate

Write = Callable[[list[str]], Path]
Capsys = pytest.CaptureFixture[str]


def run(capsys: Capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["replay", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_the_real_trace_is_clean_and_its_pairs_are_counted(capsys: Capsys) -> None:
    rc, out, err = run(capsys, str(REAL_TRACE))
    assert (rc, err) == (0, "")
    assert "0 finding(s), 0 uncertain" in out
    assert "521 map/unmap pairs reconciled" in out
    assert "PHASE eth1 down (line 1133): live 0000:00:03.0 257, 0000:00:04.0 258" in out
    assert "not decidable from a trace:" in out and "dma_mapping_error()" in out


def test_a_finding_prints_dmesg_style_with_the_trace_time_and_exits_1(
    capsys: Capsys, write_trace: Write
) -> None:
    lines = real_lines()
    at = line_of(lines, "dma_unmap_page:", "0000:00:04.0", "dma_addr=ffffd8c0", after=1133)
    lines[at - 1] = lines[at - 1].replace("size=1522", "size=64")
    rc, out, _ = run(capsys, str(write_trace(lines)))
    assert rc == 1
    mapped = line_of(lines, "dma_map_page:", "0000:00:04.0", "dma_addr=ffffd8c0")
    assert out.splitlines()[0] == (
        "[   15.916009] DMA-API: 0000:00:04.0: device driver frees DMA memory with different "
        "size [device address=0x00000000ffffd8c0] [map size=1522 bytes] [unmap size=64 bytes] "
        f"(trace lines {mapped}, {at})"
    )


def test_json_lists_findings_with_lines(capsys: Capsys, write_trace: Write) -> None:
    lines = real_lines()
    first = line_of(lines, "dma_unmap_page:", "0000:00:04.0", "dma_addr=ffffc140", after=1133)
    lines.insert(first, lines[first - 1])
    rc, out, _ = run(capsys, str(write_trace(lines)), "--format", "json")
    doc = json.loads(out)
    assert rc == 1
    assert [(f["check"], f["lines"][1:]) for f in doc["findings"]] == [
        (C.DOUBLE_UNMAP, [first, first + 1])
    ]
    assert doc["reconciled"]["dma"] == 521 and doc["problems"] == []


def test_perfetto_output_is_valid_trace_event_json(capsys: Capsys) -> None:
    rc, out, _ = run(capsys, str(REAL_TRACE), "--format", "perfetto")
    doc = json.loads(out)
    assert rc == 0 and validate(doc, trace_event_schema()) == []
    slices = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == 521


def test_until_a_marker_stops_there_without_end_of_trace_findings(capsys: Capsys) -> None:
    rc, out, _ = run(capsys, str(REAL_TRACE), "--until", "PHASE eth1 down")
    assert rc == 0
    assert "read to line 1133" in out and "0000:00:04.0: peak 258 live mappings, 258 live" in out
    rc, out, _ = run(capsys, str(REAL_TRACE), "--until", "1107", "--format", "json")
    assert json.loads(out)["until_line"] == 1107
    rc, out, _ = run(capsys, str(REAL_TRACE), "--until", "7.870013", "--format", "json")
    assert json.loads(out)["until_line"] == line_of(real_lines(), "7.870013")


def test_an_unknown_until_is_an_error(capsys: Capsys) -> None:
    rc, _, err = run(capsys, str(REAL_TRACE), "--until", "PHASE never")
    assert rc == 2 and "--until 'PHASE never'" in err


def test_a_binary_trace_dat_is_refused_with_how_to_convert_it(
    capsys: Capsys, tmp_path: Path
) -> None:
    dat = tmp_path / "trace.dat"
    dat.write_bytes(TRACE_DAT_MAGIC + b"\x00\x06\x00" * 40)
    rc, out, err = run(capsys, str(dat))
    assert (rc, out) == (2, "")
    assert "binary trace-cmd trace.dat" in err and "trace-cmd report" in err


def test_a_missing_file_is_named(capsys: Capsys, tmp_path: Path) -> None:
    rc, _, err = run(capsys, str(tmp_path / "nope.txt"))
    assert rc == 2 and "nope.txt" in err


def test_a_truncated_last_line_is_named_and_the_rest_still_checked(
    capsys: Capsys, write_trace: Write
) -> None:
    lines = real_lines()
    at = line_of(lines, "dma_unmap_page:", "0000:00:04.0", "dma_addr=ffffd8c0", after=1133)
    lines[at - 1] = lines[at - 1][: lines[at - 1].index("size=")]
    lines.append("              ip-235     [000] .....    16.98")
    rc, out, err = run(capsys, str(write_trace(lines)))
    assert rc == 2
    assert f"line {at}: dma_unmap_page: fields do not have the Linux 6.12 layout" in err
    assert f"line {len(lines)}: not an ftrace event line (truncated?)" in err
    assert (
        "DMA mapping still live at the end of the trace [device address=0x00000000ffffd8c0]" in out
    )


def test_an_unknown_dma_event_is_named(capsys: Capsys, write_trace: Write) -> None:
    lines = real_lines()
    lines.insert(60, "          ip-136     [000] .....     4.803800: dma_map_foo: 0000:00:03.0")
    rc, _, err = run(capsys, str(write_trace(lines)))
    assert rc == 2 and "line 61: unknown event 'dma_map_foo'" in err


def test_an_older_kernels_map_layout_is_named(capsys: Capsys, write_trace: Write) -> None:
    lines = real_lines()
    at = line_of(lines, "map: IOMMU: iova=0x00000000fffff000")
    lines[at - 1] = re.sub(r" - 0x[0-9a-f]+", "", lines[at - 1])  # before Linux 5.x: no end
    rc, _, err = run(capsys, str(write_trace(lines)))
    assert rc == 2 and f"line {at}: map: fields do not have the Linux 6.12 layout" in err


def test_unrelated_events_and_trace_cmd_layout_read_the_same(write_trace: Write) -> None:
    """``trace-cmd report``: a preamble, no flags column, event names padded."""
    lines = ["cpus=1"]
    for raw in real_lines():
        if raw.startswith("#"):
            continue
        raw = re.sub(r"\] [.a-zA-Z0-9]{5} ", "] ", raw)
        raw = re.sub(r": (\w+): ", lambda m: f": {m.group(1) + ':':<22}", raw, count=1)
        lines.append(raw)
        lines.append("          <idle>-0     [000]  1.0: sched_switch: prev=a next=b")
    trace = parse_lines(lines)
    assert trace.problems == [] and trace.unrelated == len(lines) // 2
    res = C.check(trace.events)
    assert res.findings == [] and res.stats.dma_reconciled == 521


def test_lost_events_make_absence_findings_uncertain(capsys: Capsys, write_trace: Write) -> None:
    lines = real_lines()
    gone = line_of(lines, "dma_unmap_page:", "0000:00:04.0", "dma_addr=ffffd8c0", after=1133)
    lines[gone - 1] = "CPU:0 [LOST 1 EVENTS]"
    rc, out, _ = run(capsys, str(write_trace(lines)))
    assert rc == 0
    assert f"[uncertain: 1 events lost at line {gone}]" in out
    assert f"CPU 0 lost 1 events at line {gone}" in out


def test_qi_submit_descriptors_decode_as_the_spec_lays_them_out() -> None:
    trace = parse_lines(real_lines())
    qi = [e for e in trace.events if e.name == "qi_submit"]
    assert all(type_name(e) == e.type for e in qi)
    psi = decode(next(e for e in qi if e.qw0 == 0x300F2 and e.qw1 == 0xFFE59040))
    assert (psi.cache, psi.granularity, psi.did, psi.start, psi.size) == (
        "iotlb", "page", 3, 0xFFE59000, 0x1000,
    )  # fmt: skip
    glob = decode(next(e for e in qi if e.qw0 == 0xD2))
    assert (glob.cache, glob.granularity) == ("iotlb", "global")
    assert decode(next(e for e in qi if e.qw0 == 0x11)).cache == "context"
    assert decode(next(e for e in qi if e.qw0 == 0x37)).granularity == "global"


def test_trace_pipe_text_on_standard_input(capsys: Capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cat trace_pipe | iommulab replay -``: no header, read from stdin."""
    body = "\n".join(s for s in real_lines() if not s.startswith("#")).encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(body)))
    rc, out, _ = run(capsys, "-")
    assert rc == 0 and "521 map/unmap pairs reconciled" in out


def test_events_lost_before_a_mapping_leave_its_leak_certain(
    capsys: Capsys, write_trace: Write
) -> None:
    """Only a loss after the map could have held its unmap: one before it changes nothing."""
    lines = real_lines()
    gone = line_of(lines, "dma_unmap_page:", "0000:00:04.0", "dma_addr=ffffd8c0", after=1133)
    del lines[gone - 1]
    lines.insert(13, "CPU:0 [LOST 3 EVENTS]")
    rc, out, _ = run(capsys, str(write_trace(lines)))
    assert rc == 1 and "uncertain" not in out.splitlines()[0]
    assert "CPU 0 lost 3 events at line 14" in out
