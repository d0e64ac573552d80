"""printk and the dmesg ring (kernel/printk/printk.c), with ``dev_*`` helpers.

Records carry the virtual-clock timestamp and the log level; :func:`dmesg` renders
them the way ``dmesg`` prints them (``[    1.234567] text``). ``dev_info(dev, msg)``
prefixes the driver and device name as ``dev_printk`` does (``idxd 0000:00:02.0: ``).
``*_ratelimited`` variants follow ``___ratelimit``: a burst of 10 per 5 s interval.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from attrs import define, field, frozen

from kernel.context import current

KERN_EMERG, KERN_ALERT, KERN_CRIT, KERN_ERR, KERN_WARNING, KERN_NOTICE, KERN_INFO, KERN_DEBUG = (
    range(8)
)
LEVEL_NAMES = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")

RING_RECORDS = 1 << 14
RATELIMIT_INTERVAL_NS = 5_000_000_000
RATELIMIT_BURST = 10


@frozen
class LogRecord:
    ts_ns: int
    level: int
    text: str

    def format(self) -> str:
        sec, ns = divmod(self.ts_ns, 1_000_000_000)
        return f"[{sec:5d}.{ns // 1000:06d}] {self.text}"


class _Clocked(Protocol):
    @property
    def now(self) -> int: ...


@define
class RateLimit:
    """``struct ratelimit_state``: allow ``burst`` messages per ``interval_ns``."""

    interval_ns: int = RATELIMIT_INTERVAL_NS
    burst: int = RATELIMIT_BURST
    begin: int = -1
    printed: int = 0
    missed: int = 0

    def allow(self, now: int) -> bool:
        if self.begin < 0 or now - self.begin >= self.interval_ns:
            self.begin = now
            self.printed = 0
        if self.printed < self.burst:
            self.printed += 1
            return True
        self.missed += 1
        return False


@define
class LogBuffer:
    """The dmesg ring of one booted kernel."""

    clock: _Clocked | None = None
    records: deque[LogRecord] = field(factory=lambda: deque(maxlen=RING_RECORDS))
    console: Callable[[LogRecord], None] | None = None
    console_loglevel: int = KERN_DEBUG
    ratelimits: dict[str, RateLimit] = field(factory=dict)

    def emit(self, level: int, text: str) -> None:
        ts = self.clock.now if self.clock is not None else 0
        for line in text.rstrip("\n").split("\n"):
            rec = LogRecord(ts, level, line)
            self.records.append(rec)
            if self.console is not None and level <= self.console_loglevel:
                self.console(rec)

    def lines(self, max_level: int = KERN_DEBUG) -> list[str]:
        return [r.text for r in self.records if r.level <= max_level]

    def render(self, max_level: int = KERN_DEBUG) -> str:
        return "\n".join(r.format() for r in self.records if r.level <= max_level)

    def clear(self) -> None:
        self.records.clear()


def log_buffer() -> LogBuffer:
    """The current kernel's dmesg ring."""
    return current.kernel.log


def printk(level: int, text: str) -> None:
    current.kernel.log.emit(level, text)


def pr_emerg(text: str) -> None:
    current.kernel.log.emit(KERN_EMERG, text)


def pr_err(text: str) -> None:
    current.kernel.log.emit(KERN_ERR, text)


def pr_warn(text: str) -> None:
    current.kernel.log.emit(KERN_WARNING, text)


def pr_notice(text: str) -> None:
    current.kernel.log.emit(KERN_NOTICE, text)


def pr_info(text: str) -> None:
    current.kernel.log.emit(KERN_INFO, text)


def pr_debug(text: str) -> None:
    current.kernel.log.emit(KERN_DEBUG, text)


def printk_ratelimited(key: str, level: int, text: str) -> bool:
    """Print unless the per-call-site ``key`` exceeded its burst; returns whether printed."""
    log = current.kernel.log
    rl = log.ratelimits.setdefault(key, RateLimit())
    now = log.clock.now if log.clock is not None else 0
    if rl.allow(now):
        log.emit(level, text)
        return True
    return False


def pr_err_ratelimited(key: str, text: str) -> bool:
    return printk_ratelimited(key, KERN_ERR, text)


class _Named(Protocol):
    def dev_prefix(self) -> str: ...


def dev_printk(level: int, dev: _Named | None, text: str) -> None:
    prefix = dev.dev_prefix() if dev is not None else "(NULL device *)"
    current.kernel.log.emit(level, f"{prefix}: {text}")


def dev_err(dev: _Named | None, text: str) -> None:
    dev_printk(KERN_ERR, dev, text)


def dev_warn(dev: _Named | None, text: str) -> None:
    dev_printk(KERN_WARNING, dev, text)


def dev_notice(dev: _Named | None, text: str) -> None:
    dev_printk(KERN_NOTICE, dev, text)


def dev_info(dev: _Named | None, text: str) -> None:
    dev_printk(KERN_INFO, dev, text)


def dev_dbg(dev: _Named | None, text: str) -> None:
    dev_printk(KERN_DEBUG, dev, text)


def dev_err_ratelimited(dev: _Named | None, text: str) -> None:
    prefix = dev.dev_prefix() if dev is not None else "(NULL device *)"
    printk_ratelimited(f"dev:{prefix}", KERN_ERR, f"{prefix}: {text}")
