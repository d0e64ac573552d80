"""Tracepoints (ftrace text, Perfetto JSON), command-line parsing, errno errors, WARN."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from hw.machine import Machine
from kernel import trace
from kernel.boot import Kernel, boot
from kernel.bug import WARN, WARN_ON, WARN_ON_ONCE
from kernel.errno import EINVAL, ENOSPC, errno_name
from kernel.params import CommandLine, Param, parse_bool, parse_int

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations


def test_disabled_tracepoint_records_nothing(toy_kernel: Kernel) -> None:
    trace.trace_map(iova=0x1000, paddr=0x2000, size=0x1000)
    assert not toy_kernel.tracer.events()


def test_enabled_tracepoint_formats_like_tp_printk(toy_kernel: Kernel) -> None:
    with trace.capture("iommu:map") as got:
        trace.trace_map(iova=0x1000, paddr=0x2000, size=0x1000)
        trace.trace_unmap(iova=0x1000, size=0x1000, unmapped_size=0x1000)
    assert len(got) == 1
    # include/trace/events/iommu.h: "IOMMU: iova=0x%016llx - 0x%016llx paddr=0x%016llx size=%zu"
    assert got[0].text == (
        "IOMMU: iova=0x0000000000001000 - 0x0000000000002000 paddr=0x0000000000002000 size=4096"
    )
    assert "map: IOMMU: iova=0x0000000000001000" in trace.to_ftrace(got)


def test_trace_event_cmdline_enables_at_boot(toy_machine: Machine) -> None:
    k = boot(toy_machine, "trace_event=iommu:*,hw_test", entry_points=False)
    assert trace.trace_map.enabled and trace.trace_io_page_fault.enabled is not False
    toy_machine.emit("hw_test:poke", value=3)
    toy_machine.emit("hw_other:poke", value=4)
    assert [e.name for e in k.tracer.events("hw_test:*")] == ["hw_test:poke"]
    assert not k.tracer.events("hw_other")
    k.shutdown()
    trace.disable_all()


def test_hw_trace_sink_is_hooked_in_only_while_a_pattern_is_enabled(
    toy_machine: Machine,
) -> None:
    """Models build no event objects while nothing could record them."""
    k = boot(toy_machine, "", entry_points=False)
    assert toy_machine.hw_trace is None
    with trace.capture("hw_test") as got:
        assert toy_machine.hw_trace is not None
        toy_machine.emit("hw_test:poke", value=1)
    assert toy_machine.hw_trace is None and [e.name for e in got] == ["hw_test:poke"]
    k.shutdown()
    trace.enable("hw_test")
    assert toy_machine.hw_trace is None, "a shut-down kernel no longer owns the machine"
    trace.disable_all()


def test_cmdline_tokens_and_types() -> None:
    cl = CommandLine.parse('a=1 b "c=x y" flag d-e=off')
    assert cl.register(Param("a", 0, parse_int)).value == 1
    assert cl.register(Param("d_e", True, parse_bool)).value is False
    assert cl.register(Param("flag", False, parse_bool)).value is True
    assert cl.unclaimed() == ["b", "c=x y"]
    assert cl.claim("b") == [None]
    with pytest.raises(EINVAL):
        cl.register(Param("a", 0, parse_int))
    with pytest.raises(EINVAL):
        parse_bool("maybe")
    with pytest.raises(EINVAL):
        parse_int(None)


def test_errno_errors_carry_their_number() -> None:
    err = EINVAL("bad thing")
    assert err.errno == 22 and str(err) == "-EINVAL: bad thing" and err.name == "EINVAL"
    assert str(ENOSPC()) == "-ENOSPC"
    assert errno_name(-28) == "ENOSPC" and errno_name(999) == "E999"


def test_warn_records_site_and_prints_banner(
    toy_kernel: Kernel, iommulab_expect: Expectations
) -> None:
    for text in ("arithmetic works", "explicit", "once"):
        iommulab_expect.warn(text)
    assert WARN_ON(1 + 1 == 2, "arithmetic works")
    assert not WARN_ON(False)
    assert WARN(True, "explicit")
    for _ in range(3):
        WARN_ON_ONCE(True, "once")
    msgs = [w.message for w in toy_kernel.warnings()]
    assert msgs == ["arithmetic works", "explicit", "once"]
    assert "test_trace_params_errno.py" in toy_kernel.warnings()[0].site
    assert "WARNING: CPU: 0 PID: 1 at" in toy_kernel.dmesg()


def test_hardware_event_fields_print_in_hex_with_arrays_and_absent_values() -> None:
    """Issue 17: hw events printed Python tuples in decimal and ``None``."""
    from kernel.trace import Tracer

    t = Tracer()
    t.enabled_patterns.add("hw_vtd:*")
    t.hw_event("hw_vtd:qi_descriptor", 7, {"unit": "dmar0", "qw": (17, 0), "pasid": None})
    (ev,) = t.ring
    assert ev.text == "unit=dmar0 qw={0x11,0x0} pasid=none"
