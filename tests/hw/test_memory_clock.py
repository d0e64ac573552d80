"""RAM bounds and watches; virtual time ordering."""

from __future__ import annotations

import random

import pytest

from hw.clock import Clock
from hw.memory import BusError, Memory


def test_out_of_range_access_is_a_bus_error_not_index_error() -> None:
    mem = Memory(8192)
    with pytest.raises(BusError) as info:
        mem.read(8190, 4)
    assert info.value.addr == 8190 and not info.value.write
    with pytest.raises(BusError):
        mem.write_u64(8192, 1)
    with pytest.raises(BusError):
        mem.read(-1, 1)
    assert "outside RAM" in str(info.value)


def test_little_endian_scalars() -> None:
    mem = Memory(4096)
    mem.write_u64(8, 0x1122334455667788)
    assert mem.read(8, 2) == b"\x88\x77"
    assert mem.read_u32(12) == 0x11223344
    mem.write_u16(0, 0xABCD)
    mem.write_u8(2, 0xEF)
    assert mem.read_u16(0) == 0xABCD and mem.read_u8(2) == 0xEF


def test_copy_is_overlap_safe() -> None:
    mem = Memory(4096)
    mem.write(0, bytes(range(16)))
    mem.copy(4, 0, 8)
    assert mem.read(0, 12) == bytes([0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7])


def test_watch_fires_for_writes_touching_the_page_only() -> None:
    mem = Memory(4 * 4096)
    hits: list[int] = []
    mem.watch(2, hits.append)
    mem.write(4096, b"x")
    mem.write(2 * 4096 + 100, b"y")
    mem.fill(0, 4 * 4096)
    mem.copy(2 * 4096, 0, 8)
    assert hits == [2, 2, 2]
    mem.unwatch(2, hits.append)
    mem.write(2 * 4096, b"z")
    assert hits == [2, 2, 2] and not mem.watched(2)


def test_every_watcher_of_the_page_hears_a_store_even_if_one_unwatches_another() -> None:
    """The watchers are called in the order they watched; one that unwatches the
    others during the call does not stop them hearing this store, only later ones."""
    mem = Memory(2 * 4096)
    heard: list[str] = []

    def first(pfn: int) -> None:
        heard.append(f"first {pfn}")
        mem.unwatch(1, second)

    def second(pfn: int) -> None:
        heard.append(f"second {pfn}")

    mem.watch(1, first)
    mem.watch(1, second)
    mem.write_u64(4096 + 8, 1)
    mem.write_u32(4096 + 16, 2)
    assert heard == ["first 1", "second 1", "first 1"]


def test_quadword_runs_round_trip_and_truncate_to_64_bits() -> None:
    mem = Memory(8192)
    mem.write_u64s(16, [1, (1 << 64) | 2, -1])
    assert mem.read_u64s(16, 3) == (1, 2, (1 << 64) - 1)
    assert mem.read_u64(32) == (1 << 64) - 1


@pytest.mark.parametrize(
    ("op", "addr"),
    [
        (lambda m, a: m.read_u64s(a, 2), 8192 - 8),
        (lambda m, a: m.write_u64s(a, [0, 0]), 8192 - 8),
        (lambda m, a: m.read_u32(a), -4),
        (lambda m, a: m.write_u32(a, 0), 8190),
        (lambda m, a: m.write_u16(a, 0), 8191),
        (lambda m, a: m.read_u8(a), 8192),
    ],
)
def test_scalar_and_run_accessors_refuse_partial_or_negative_addresses(op, addr) -> None:  # type: ignore[no-untyped-def]
    mem = Memory(8192)
    before = bytes(mem.data)
    with pytest.raises(BusError):
        op(mem, addr)
    assert bytes(mem.data) == before


def test_scalar_writes_straddling_a_page_notify_both_frames() -> None:
    mem = Memory(3 * 4096)
    hits: list[int] = []
    mem.watch(0, hits.append)
    mem.watch(1, hits.append)
    mem.write_u64(4096 - 4, 0)
    mem.write_u32(2 * 4096 - 2, 0)
    mem.write_u64s(4096 - 8, [0, 0])
    assert hits == [0, 1, 1, 0, 1]


def test_quadwords_at_any_alignment_are_their_little_endian_bytes() -> None:
    """Aligned quadwords (a page-table entry) and unaligned ones are the same bytes as
    the byte accessors see; the top quadword is RAM, one past it or below 0 is not."""
    mem = Memory(8192)
    for addr in (0, 8, 13, 4095, 4096, 8192 - 8):
        value = 0x8877_6655_4433_2211 ^ (addr << 8)
        mem.write_u64(addr, value)
        assert mem.read(addr, 8) == value.to_bytes(8, "little")
        assert mem.read_u64(addr) == value
    mem.write_u64(16, -2)
    assert mem.read(16, 8) == b"\xfe" + b"\xff" * 7
    before = bytes(mem.data)
    for addr in (8192, 8192 - 4, -8, -3):
        with pytest.raises(BusError):
            mem.read_u64(addr)
        with pytest.raises(BusError):
            mem.write_u64(addr, 1)
    assert bytes(mem.data) == before


def test_the_quadword_view_reads_what_the_accessors_wrote_and_refuses_stores() -> None:
    """``qwords[addr >> 3]`` is ``read_u64(addr)`` at every aligned address (random
    values written through the byte and quadword writers); the view is read-only and
    ends at the top of RAM; a hole in the middle reads as zeros."""
    rng = random.Random(20)
    mem = Memory(4 * 4096)
    for _ in range(300):
        addr = rng.randrange(0, mem.size - 8)
        if rng.random() < 0.5:
            mem.write_u64(addr, rng.getrandbits(64))
        else:
            mem.write(addr, rng.randbytes(8))
        for aligned in (addr & ~7, (addr + 7) & ~7):
            expect = int.from_bytes(mem.read(aligned, 8), "little")
            assert mem.qwords[aligned >> 3] == mem.read_u64(aligned) == expect
    with pytest.raises(TypeError):
        mem.qwords[0] = 1  # type: ignore[index]
    with pytest.raises(IndexError):
        mem.qwords[mem.size >> 3]
    holed = Memory([(0, 4096), (3 * 4096, 4096)])
    holed.write_u64(3 * 4096 + 8, 0x55)
    assert holed.qwords[(3 * 4096 + 8) >> 3] == 0x55 and holed.qwords[4096 >> 3] == 0
    with pytest.raises(BusError):
        holed.read_u64(4096)


def test_an_aligned_quadword_write_notifies_its_page_only() -> None:
    mem = Memory(3 * 4096)
    hits: list[int] = []
    mem.watch(1, hits.append)
    mem.write_u64(4096 - 8, 1)
    mem.write_u64(4096, 2)
    mem.write_u64(2 * 4096 - 8, 3)
    mem.write_u64(2 * 4096, 4)
    assert hits == [1, 1]


def test_bad_ram_size_rejected() -> None:
    with pytest.raises(ValueError, match="multiple"):
        Memory(1000)


def test_events_run_in_time_then_schedule_order() -> None:
    clock = Clock()
    order: list[str] = []
    clock.schedule(50, lambda: order.append("b"))
    clock.schedule(10, lambda: order.append("a1"))
    clock.schedule(10, lambda: order.append("a2"))
    ev = clock.schedule(20, lambda: order.append("cancelled"))
    clock.cancel(ev)
    clock.advance(30)
    assert order == ["a1", "a2"] and clock.now == 30
    clock.run_all()
    assert order == ["a1", "a2", "b"] and clock.now == 50
    assert clock.pending == 0 and clock.next_event_time() is None


def test_events_scheduled_by_events_run_when_due() -> None:
    clock = Clock()
    order: list[int] = []
    clock.schedule(5, lambda: clock.schedule(0, lambda: order.append(clock.now)))
    clock.advance(5)
    assert order == [5]


def test_time_never_runs_backwards() -> None:
    clock = Clock()
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.schedule(-1, lambda: None)


def test_run_next_steps_to_the_next_event_or_the_deadline() -> None:
    """One busy-wait step: the events of the next instant only, cancelled ones
    skipped; with nothing due before the deadline, time goes to the deadline; past
    the deadline nothing happens and False is returned."""
    clock = Clock()
    order: list[tuple[str, int]] = []
    clock.cancel(clock.schedule(5, lambda: order.append(("cancelled", clock.now))))
    clock.schedule(10, lambda: order.append(("a", clock.now)))
    clock.schedule(10, lambda: order.append(("b", clock.now)))
    clock.schedule(30, lambda: order.append(("c", clock.now)))
    assert clock.run_next(100) and clock.now == 10
    assert order == [("a", 10), ("b", 10)]
    assert clock.run_next(20) and clock.now == 20 and len(order) == 2  # c is after 20
    assert not clock.run_next(20) and clock.now == 20
    assert clock.run_next(1000) and order[-1] == ("c", 30) and clock.now == 30
    assert clock.run_next(1000) and clock.now == 1000  # nothing left: the deadline
