"""``Clock.post``: handle-less events keep the one time-then-scheduling order with
``schedule``'s, and the queue answers ``pending`` / ``next_event_time`` for both."""

from __future__ import annotations

import functools
import random

import pytest

from hw.clock import Clock


def test_posted_and_scheduled_events_run_in_time_then_scheduling_order() -> None:
    rng = random.Random(20)
    for _ in range(50):
        clock = Clock()
        order: list[int] = []
        expected: list[tuple[int, int]] = []
        cancelled: set[int] = set()
        for n in range(30):
            delay = rng.randrange(0, 50, 10)
            if rng.random() < 0.5:
                clock.post(delay, functools.partial(order.append, n))
            else:
                ev = clock.schedule(delay, functools.partial(order.append, n))
                if rng.random() < 0.2:
                    clock.cancel(ev)
                    cancelled.add(n)
            expected.append((delay, n))
        assert clock.pending == 30 - len(cancelled)
        clock.run_all()
        assert order == [n for _, n in sorted(expected) if n not in cancelled]
        assert clock.pending == 0 and clock.next_event_time() is None


def test_run_next_stops_at_the_first_posted_event() -> None:
    clock = Clock()
    seen: list[int] = []
    clock.post(200, lambda: seen.append(clock.now))
    clock.post(300, lambda: seen.append(clock.now))
    assert clock.run_next(10_000) and seen == [200] and clock.now == 200
    assert clock.run_next(250) and seen == [200] and clock.now == 250
    assert not clock.run_next(250)


def test_run_next_skips_an_event_cancelled_behind_the_first_due() -> None:
    clock = Clock()
    seen: list[str] = []
    clock.post(100, lambda: seen.append("posted"))
    ev = clock.schedule(100, lambda: seen.append("cancelled"), "victim")
    clock.schedule(100, lambda: seen.append("scheduled"))
    clock.cancel(ev)
    assert "victim" in repr(ev) and "cancelled" in repr(ev) and "at 100 ns" in repr(ev)
    assert clock.run_next(1000) and seen == ["posted", "scheduled"] and clock.now == 100
    assert clock.events_run == 2 and clock.pending == 0


def test_post_refuses_the_past() -> None:
    with pytest.raises(ValueError, match="in the past"):
        Clock().post(-1, lambda: None)
