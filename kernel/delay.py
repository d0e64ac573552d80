"""Time and waiting on the virtual clock: ``udelay``, ``msleep``, ``cpu_relax``,
``readx_poll_timeout``, completions and timers (include/linux/delay.h, iopoll.h,
completion.h, timer.h).

Every wait advances the machine's clock, which runs device events that fall due,
so a driver polling a status register sees the hardware finish, and a wait with
no event to end it times out in virtual time. HZ is 1000: one jiffy is 1 ms.
A timer's function runs in the kernel that armed it, even when the machine's clock
is advanced while another kernel is current.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field

from hw.bus import TimerHandle
from kernel.context import current, kernel_callback
from kernel.errno import ETIMEDOUT
from kernel.platform import platform

HZ = 1000
NSEC_PER_USEC = 1000
NSEC_PER_MSEC = 1_000_000
CPU_RELAX_NS = 10


def ktime_get_ns() -> int:
    return platform().clock.now


def jiffies() -> int:
    return platform().clock.now // NSEC_PER_MSEC


def msecs_to_jiffies(ms: int) -> int:
    return ms


def _advance_to(deadline: int) -> None:
    clock = platform().clock
    if deadline > clock.now:
        clock.advance(deadline - clock.now)
    else:
        clock.run_pending()


def ndelay(ns: int) -> None:
    _advance_to(platform().clock.now + ns)


def udelay(us: int) -> None:
    ndelay(us * NSEC_PER_USEC)


def usleep_range(lo_us: int, hi_us: int) -> None:
    ndelay(lo_us * NSEC_PER_USEC)


def msleep(ms: int) -> None:
    ndelay(ms * NSEC_PER_MSEC)


def cpu_relax() -> None:
    ndelay(CPU_RELAX_NS)


def wait_next_event(deadline: int) -> bool:
    """Busy-wait (``cpu_relax`` in a loop) until something can have changed: advance to
    the next device event, or to ``deadline`` if none is due before it.

    Only clock events change hardware state, so a poll loop that calls this between
    reads observes exactly what one spinning on ``cpu_relax`` would, in far fewer
    iterations. Returns False once the deadline has passed.
    """
    return current.kernel.machine.clock.run_next(deadline)  # platform(): every poll


def readx_poll_timeout(
    op: Callable[[], int], cond: Callable[[int], bool], sleep_us: int, timeout_us: int
) -> int:
    """``readx_poll_timeout(op, addr, val, cond, sleep_us, timeout_us)``.

    Returns the value that satisfied ``cond``; raises ETIMEDOUT after
    ``timeout_us`` of virtual time (the C macro returns -ETIMEDOUT with the last
    value read). ``timeout_us == 0`` polls forever, as in C; here that means
    until no device event is left to change anything, which raises ETIMEDOUT too.
    """
    clock = platform().clock
    deadline = clock.now + timeout_us * NSEC_PER_USEC if timeout_us else 1 << 62
    step = max(sleep_us * NSEC_PER_USEC, CPU_RELAX_NS)
    while True:
        val = op()
        if cond(val):
            return val
        if clock.now >= deadline or (not timeout_us and clock.next_event_time() is None):
            val = op()
            if cond(val):
                return val
            raise ETIMEDOUT(f"poll timed out after {timeout_us} us (last value {val:#x})")
        _advance_to(min(deadline, clock.now + step))


readl_poll_timeout = readx_poll_timeout


@define(eq=False)
class Completion:
    """``struct completion``."""

    done: int = 0
    waiters_woken: int = 0

    def reinit(self) -> None:
        self.done = 0


def init_completion(c: Completion) -> None:
    c.done = 0


def complete(c: Completion) -> None:
    c.done += 1


def complete_all(c: Completion) -> None:
    c.done = 1 << 30


def completion_done(c: Completion) -> bool:
    return c.done > 0


def wait_for_completion_timeout(c: Completion, timeout_jiffies: int) -> int:
    """Returns 0 on timeout, else the jiffies left (at least 1), as in C."""
    clock = platform().clock
    deadline = clock.now + timeout_jiffies * NSEC_PER_MSEC
    while c.done == 0:
        if not wait_next_event(deadline):
            return 0
    c.done -= 1
    c.waiters_woken += 1
    left = (deadline - clock.now) // NSEC_PER_MSEC
    return max(1, left)


def wait_for_completion(c: Completion, limit_ms: int = 60_000) -> None:
    """Waits without a timeout in C; here a wait no device event can end raises
    ETIMEDOUT after ``limit_ms`` of virtual time instead of hanging the test."""
    if not wait_for_completion_timeout(c, limit_ms):
        raise ETIMEDOUT("wait_for_completion: nothing will ever complete this")


@define(eq=False)
class TimerList:
    """``struct timer_list``: ``function`` runs in virtual time at ``expires`` (jiffies)."""

    function: Callable[[TimerList], None]
    expires: int = 0
    handle: TimerHandle | None = field(default=None)


def timer_setup(function: Callable[[TimerList], None]) -> TimerList:
    return TimerList(function)


def timer_pending(t: TimerList) -> bool:
    return t.handle is not None


def mod_timer(t: TimerList, expires: int) -> bool:
    """(Re)arm at ``expires`` jiffies, to fire in the current kernel; returns whether
    it was pending."""
    was = del_timer(t)
    clock = platform().clock
    delay = max(0, expires * NSEC_PER_MSEC - clock.now)

    @kernel_callback
    def fire() -> None:
        t.handle = None
        t.function(t)

    t.expires = expires
    t.handle = clock.schedule(delay, fire, "timer")
    return was


def del_timer(t: TimerList) -> bool:
    if t.handle is None:
        return False
    platform().clock.cancel(t.handle)
    t.handle = None
    return True


del_timer_sync = del_timer
