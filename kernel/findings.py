"""The kernel's side of findings (DESIGN §7): call chains, the report, the record.

A :class:`hw.bus.Finding` is filled by whoever notices the problem. Hardware models
report theirs (stale uses, DMA faults) through the platform's finding sink; kernel
layers (the page-table ownership sanitizer in :mod:`kernel.iommu.iommu_pages`,
DMA-API debugging) build theirs here with :func:`call_chain`. Every finding is kept
in the booted kernel's list (:func:`findings`), traced as ``iommulab:finding``, and
the ones Linux would print as a sanitizer report (a stale use, a page-table write
into a data page) go to dmesg, one line per line of :meth:`hw.bus.Finding.report`,
framed like a KASAN report (``mm/kasan/report.c``). A DMA fault is kept and traced,
not printed: the IOMMU driver prints its own fault line, as 6.12 does.

:func:`call_chain` is what the kernel gives the platform as its write origin
(:meth:`hw.bus.Platform.set_write_origin`): a model calls it when a RAM write hits a
table entry one of its cached entries was read from, which is the models' cold path,
so capturing costs nothing on a cache hit. The frames are kept as code objects and
formatted only when a report is read.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Callable
from types import CodeType, FrameType
from typing import TypeVar

import hw.bus
from hw.bus import Finding
from kernel.context import current
from kernel.printk import KERN_ERR, printk
from kernel.trace import define_tracepoint

MAX_FRAMES = 16
"""Frames a call chain keeps (innermost first), as a WARN's trace is cut short."""
_HW_DIR = os.path.dirname(os.path.abspath(hw.bus.__file__)) + os.sep
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_STDLIB = sysconfig.get_paths()["stdlib"] + os.sep
_RUNNER = (f"{os.sep}_pytest{os.sep}", f"{os.sep}pluggy{os.sep}", f"{os.sep}pytest{os.sep}")
_FRONT = f"{_ROOT}iommulab{os.sep}"
"""What runs the software under test (pytest, the CLI): a call chain ends there."""
INLINE: set[int] = set()
"""``id`` of the code of functions C inlines (``WRITE_ONCE``-like stores): left out
of call chains (code objects hash by value, which is slow: ids are kept instead)."""
F = TypeVar("F", bound=Callable[..., object])
PRINTED = frozenset({"stale", "pt-owner"})
"""Checks whose findings are printed to dmesg as a report."""

trace_finding = define_tracepoint(
    "iommulab:finding",
    ("check", "unit", "device", "pasid", "iova", "cache", "message"),
    "{check} unit={unit} dev={device} pasid={pasid} iova={iova} cache={cache}: {message}",
)


def inline(fn: F) -> F:
    """Mark ``fn`` as inlined in C: call chains leave its frame out."""
    INLINE.add(id(fn.__code__))
    _KINDS.pop(id(fn.__code__), None)
    return fn


def _line_of(code: CodeType, lasti: int) -> int | None:
    """The source line of the instruction at byte offset ``lasti``."""
    for first, last, line in code.co_lines():
        if first <= lasti < last:
            return line
    return None


def _where(code: CodeType, lasti: int) -> str:
    path = os.path.abspath(code.co_filename)
    shown = path[len(_ROOT) :] if path.startswith(_ROOT) else os.path.basename(path)
    return f"{code.co_qualname} ({shown}:{_line_of(code, lasti)})"


_KEEP, _STOP, _LAST, _SKIP, _HW = range(5)
_KINDS: dict[int, tuple[CodeType, int]] = {}
"""``id`` of a code object -> (the code, kept alive so the id stays its own; what a
call chain does with its frames), decided once per code object."""


def _kind(code: CodeType) -> int:
    got = _KINDS.get(id(code))
    if got is None:
        name = code.co_filename
        if name.startswith(_HW_DIR):
            kind = _HW
        elif name.startswith((_STDLIB, "<frozen")) or any(r in name for r in _RUNNER):
            kind = _STOP
        elif name.startswith(_FRONT):
            kind = _LAST
        else:
            kind = _SKIP if id(code) in INLINE else _KEEP
        got = _KINDS[id(code)] = (code, kind)
    return got[1]


class CallChain:
    """The software frames above a point: frames of the hardware models (``hw``)
    are skipped at the inner end, the chain ends before the test runner or the
    standard library, or at the first frame of the front door (``iommulab``: a demo,
    a scenario runner), and functions C inlines (:func:`inline`) are left out.
    Frames are kept as (code, instruction offset) pairs and resolved to text only
    when read. Satisfies :class:`hw.bus.CallChain`."""

    __slots__ = ("frames",)

    def __init__(self, depth: int = 1) -> None:
        frames: list[tuple[CodeType, int]] = []
        kinds = _KINDS
        f: FrameType | None = sys._getframe(depth)
        inner = True
        while f is not None:
            code = f.f_code
            got = kinds.get(id(code))
            kind = _kind(code) if got is None else got[1]
            if kind == _HW:
                if inner:
                    f = f.f_back
                    continue
                kind = _KEEP
            inner = False
            if kind == _STOP:
                break
            if kind != _SKIP:
                frames.append((code, f.f_lasti))
                if kind == _LAST or len(frames) == MAX_FRAMES:
                    break
            f = f.f_back
        self.frames = tuple(frames)

    def lines(self) -> list[str]:
        return [_where(code, lasti) for code, lasti in self.frames]

    def functions(self) -> list[str]:
        """The frames' function names (innermost first)."""
        return [code.co_name for code, _ in self.frames]


def call_chain(depth: int = 1) -> CallChain:
    """The call chain of the caller ``depth`` levels up (1: whoever called this)."""
    return CallChain(depth + 1)


def findings() -> list[Finding]:
    """Every finding of the current kernel, oldest first."""
    found: list[Finding] = current.kernel.findings
    return found


def report_finding(finding: Finding) -> None:
    """Keep ``finding`` in the current kernel, trace it, and print it when it is a
    sanitizer-style report (:data:`PRINTED`)."""
    current.kernel.findings.append(finding)
    if trace_finding.enabled:
        trace_finding(
            check=finding.check,
            unit=finding.unit,
            device=finding.requester,
            pasid=finding.pasid,
            iova=finding.iova,
            cache=finding.cache,
            message=finding.message,
        )
    if finding.check in PRINTED:
        bar = "=" * 66
        printk(KERN_ERR, bar)
        for line in finding.report().splitlines():
            printk(KERN_ERR, f"iommulab: {line}")
        printk(KERN_ERR, bar)
