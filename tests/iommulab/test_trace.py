"""``iommulab trace``: scenarios run with tracepoints on, as ftrace text or Perfetto JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from iommulab import cli, demo
from iommulab import trace as tracing
from kernel import trace as ktrace
from tests.iommulab.conftest import DSA_ENABLE, ScenarioFile
from tests.iommulab.schema import trace_event_schema, validate


def test_scenario_trace_json_has_events_that_validate(
    tmp_path: Path, scenario_file: ScenarioFile
) -> None:
    out = tmp_path / "t.json"
    assert cli.main(["trace", str(scenario_file(DSA_ENABLE)), "--format=json", f"-o{out}"]) == 0
    doc = json.loads(out.read_text())
    assert validate(doc, trace_event_schema()) == []
    (ev,) = [e for e in doc["traceEvents"] if e.get("cat") == "hw_dsa"]
    assert ev["name"] == "command" and ev["ph"] == "i" and ev["args"]["cmd"] == "0x1"


def test_the_schema_check_rejects_malformed_events() -> None:
    doc = {"traceEvents": [{"name": "map", "ph": "Q", "pid": 1, "tid": "1"}]}
    assert validate(doc, trace_event_schema()) == [
        "$.traceEvents[0].ph: 'Q' not one of "
        + str(trace_event_schema()["definitions"]["event"]["properties"]["ph"]["enum"]),
        "$.traceEvents[0].tid: expected integer, got str",
        "$.traceEvents[0]: missing 'ts'",
    ]


def test_text_trace_is_ftrace_format(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["trace", str(scenario_file(DSA_ENABLE))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# tracer: nop\n")
    assert "command: dev=0000:00:02.0 cmd=0x1 operand=0x0 status=" in out


def test_events_option_selects_tracepoints(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["trace", str(scenario_file(DSA_ENABLE)), "--events", "iommu:*"]) == 0
    assert "command:" not in capsys.readouterr().out


def test_demo_output_goes_to_stderr_so_stdout_is_the_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["trace", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["displayTimeUnit"] == "ns"
    assert "boot complete" in captured.err


def test_a_full_ring_is_reported(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ktrace, "RING_EVENTS", 1)
    assert cli.main(["trace", str(scenario_file(DSA_ENABLE + "\n    udelay(1)\n"))]) == 0
    assert cli.main(["trace", str(scenario_file(DSA_ENABLE)), "--events", "*"]) == 0
    assert "trace ring full" in capsys.readouterr().err


def test_a_failing_demo_gives_the_trace_its_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(args: argparse.Namespace) -> int:
        return 3

    monkeypatch.setattr(demo, "run", failing)
    assert cli.main(["trace"]) == 3
    assert "the traced run failed (exit status 3)" in capsys.readouterr().err


def test_unknown_trace_format_is_refused() -> None:
    with pytest.raises(ValueError, match="choose one of text, json"):
        tracing.render([], "xml")
