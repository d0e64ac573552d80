"""Deterministic virtual time: nanoseconds and an ordered event queue.

Device work (descriptor execution, invalidation-queue processing, command
completion) is scheduled here. Nothing runs until time is advanced: the kernel's
wait primitives call :meth:`Clock.advance` / :meth:`Clock.run_until`, so a driver
that never waits never sees its work done. Events due at the same instant run in
the order they were scheduled.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from attrs import define, field

from hw.bus import TimerHandle


@define(slots=True, eq=False)
class Event:
    when: int
    seq: int
    callback: Callable[[], None]
    name: str
    cancelled: bool = False

    def __lt__(self, other: Event) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)


@define(slots=True)
class Clock:
    now: int = 0
    _queue: list[Event] = field(factory=list)
    _seq: int = 0
    events_run: int = 0

    def schedule(self, delay_ns: int, callback: Callable[[], None], name: str = "") -> Event:
        """Run ``callback`` ``delay_ns`` from now (0 = at the next advance)."""
        if delay_ns < 0:
            raise ValueError(f"cannot schedule {delay_ns} ns in the past")
        self._seq += 1
        ev = Event(self.now + delay_ns, self._seq, callback, name)
        heapq.heappush(self._queue, ev)
        return ev

    def cancel(self, event: TimerHandle) -> None:
        """Cancel a scheduled event (a handle from another clock is ignored)."""
        if isinstance(event, Event):
            event.cancelled = True

    @property
    def pending(self) -> int:
        return sum(1 for e in self._queue if not e.cancelled)

    def next_event_time(self) -> int | None:
        while self._queue and self._queue[0].cancelled:
            heapq.heappop(self._queue)
        return self._queue[0].when if self._queue else None

    def run_until(self, when: int) -> None:
        """Run every event due at or before ``when``, then set time to ``when``."""
        q = self._queue
        while q and q[0].when <= when:
            ev = heapq.heappop(q)
            if ev.cancelled:
                continue
            if ev.when > self.now:
                self.now = ev.when
            self.events_run += 1
            ev.callback()
        if when > self.now:
            self.now = when

    def run_next(self, deadline: int) -> bool:
        """One step of a busy-wait: run the events due at the next event time, or
        advance to ``deadline`` when none is due before it (``run_until`` of that
        time). False, doing nothing, once ``deadline`` has passed."""
        now = self.now
        if now >= deadline:
            return False
        q = self._queue
        while q and q[0].cancelled:
            heapq.heappop(q)
        when = q[0].when if q else deadline
        self.run_until(deadline if when > deadline else when if when > now else now)
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
