"""WARN_ON and friends (include/asm-generic/bug.h).

A WARN records a :class:`Warning` (message, call site, Python stack) in the booted
kernel's list and prints the kernel's ``WARNING: CPU: 0 PID: 1 at file:line func``
banner to dmesg. Tests fail on unexpected WARNs (the pytest plugin checks
:func:`warnings`). ``WARN_ON_ONCE`` warns once per call site.
"""

from __future__ import annotations

import sys
import traceback

from attrs import define, field, frozen

from kernel.context import current
from kernel.printk import KERN_WARNING, printk


@frozen
class KernelWarning:
    message: str
    site: str
    stack: str


@define
class WarnState:
    warnings: list[KernelWarning] = field(factory=list)
    once: set[str] = field(factory=set)


def warn_state() -> WarnState:
    """The current kernel's WARN record."""
    return current.kernel.warn


def _site(depth: int) -> tuple[str, str]:
    """``file:line function`` of the frame ``depth`` levels above this one, and a stack."""
    frame = sys._getframe(depth)
    parts = frame.f_code.co_filename.rsplit("/", 2)
    site = f"{'/'.join(parts[-2:])}:{frame.f_lineno} {frame.f_code.co_name}"
    stack = "".join(traceback.format_stack(frame, limit=12))
    return site, stack


def _warn(message: str, depth: int) -> None:
    site, stack = _site(depth + 1)
    current.kernel.warn.warnings.append(KernelWarning(message, site, stack))
    printk(KERN_WARNING, f"WARNING: CPU: 0 PID: 1 at {site}")
    if message:
        printk(KERN_WARNING, message)


def WARN(condition: object, message: str) -> bool:
    """``WARN(cond, fmt)``: warn with ``message`` when ``condition`` is true."""
    if condition:
        _warn(message, 2)
    return bool(condition)


def WARN_ON(condition: object, message: str = "") -> bool:
    if condition:
        _warn(message, 2)
    return bool(condition)


def WARN_ON_ONCE(condition: object, message: str = "") -> bool:
    if condition:
        site, _ = _site(2)
        once = current.kernel.warn.once
        if site not in once:
            once.add(site)
            _warn(message, 2)
    return bool(condition)


def warnings() -> list[KernelWarning]:
    return list(current.kernel.warn.warnings)
