"""Deterministic virtual time: nanoseconds and an ordered event queue.

Device work (descriptor execution, invalidation-queue processing, command
completion) is scheduled here. Nothing runs until time is advanced: the kernel's
wait primitives call :meth:`Clock.advance` / :meth:`Clock.run_until`, so a driver
that never waits never sees its work done. Events due at the same instant run in
the order they were scheduled.

The queue is a heap of ``(when, seq, callback, event)`` tuples: ``seq`` is unique, so
the heap orders by time then by scheduling order with tuple comparisons done in C,
never reaching the callback or the event. :meth:`Clock.schedule` returns the event (a
handle to cancel); :meth:`Clock.post` is the same without a handle, for device work
that is never cancelled (an invalidation queue's processing after a tail write).
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush

from attrs import define, field

from hw.bus import TimerHandle


class Event:
    """A scheduled callback; the handle :meth:`Clock.schedule` returns."""

    __slots__ = ("callback", "cancelled", "name", "seq", "when")

    def __init__(self, when: int, seq: int, callback: Callable[[], None], name: str) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.name = name
        self.cancelled = False

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<Event {self.name or self.callback!r} at {self.when} ns #{self.seq}{state}>"


_Entry = tuple[int, int, Callable[[], None], Event]


class _Posted:
    """The event slot of a :meth:`Clock.post` entry: never cancelled."""

    __slots__ = ()
    cancelled = False


_POSTED: Event = _Posted()  # type: ignore[assignment]


@define(slots=True)
class Clock:
    now: int = 0
    _queue: list[_Entry] = field(factory=list)
    _seq: int = 0
    events_run: int = 0

    def schedule(self, delay_ns: int, callback: Callable[[], None], name: str = "") -> Event:
        """Run ``callback`` ``delay_ns`` from now (0 = at the next advance)."""
        if delay_ns < 0:
            raise ValueError(f"cannot schedule {delay_ns} ns in the past")
        seq = self._seq = self._seq + 1
        when = self.now + delay_ns
        ev = Event(when, seq, callback, name)
        heappush(self._queue, (when, seq, callback, ev))
        return ev

    def post(self, delay_ns: int, callback: Callable[[], None]) -> None:
        """:meth:`schedule` without a handle: ``callback`` runs ``delay_ns`` from now,
        in the same order as scheduled events (it cannot be cancelled)."""
        if delay_ns < 0:
            raise ValueError(f"cannot schedule {delay_ns} ns in the past")
        seq = self._seq = self._seq + 1
        heappush(self._queue, (self.now + delay_ns, seq, callback, _POSTED))

    def cancel(self, event: TimerHandle) -> None:
        """Cancel a scheduled event (a handle from another clock is ignored)."""
        if isinstance(event, Event):
            event.cancelled = True

    @property
    def pending(self) -> int:
        return sum(1 for e in self._queue if not e[3].cancelled)

    def next_event_time(self) -> int | None:
        q = self._queue
        while q and q[0][3].cancelled:
            heappop(q)
        return q[0][0] if q else None

    def run_until(self, when: int) -> None:
        """Run every event due at or before ``when``, then set time to ``when``."""
        q = self._queue
        while q and q[0][0] <= when:
            t, _, callback, ev = heappop(q)
            if ev.cancelled:
                continue
            if t > self.now:
                self.now = t
            self.events_run += 1
            callback()
        if when > self.now:
            self.now = when

    def run_next(self, deadline: int) -> bool:
        """One step of a busy-wait: run the events due at the next event time, or
        advance to ``deadline`` when none is due before it (``run_until`` of that
        time). False, doing nothing, once ``deadline`` has passed. (Every poll of a
        busy-wait comes here.)"""
        if self.now >= deadline:
            return False
        nxt = self.next_event_time()  # (never before now: nothing is queued in the past)
        self.run_until(deadline if nxt is None or nxt > deadline else nxt)
        return True

    def advance(self, delta_ns: int) -> None:
        if delta_ns < 0:
            raise ValueError("time does not run backwards")
        self.run_until(self.now + delta_ns)

    def run_pending(self) -> None:
        """Run events due now (including ones they schedule with zero delay)."""
        self.run_until(self.now)

    def run_all(self, limit_ns: int = 10**12) -> None:
        """Run until the queue is empty or ``limit_ns`` of virtual time passed."""
        end = self.now + limit_ns
        while (t := self.next_event_time()) is not None and t <= end:
            self.run_until(t)
