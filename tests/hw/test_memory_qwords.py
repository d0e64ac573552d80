"""``Memory.qwords``: the quadword view page-table walks load entries through agrees
with ``read_u64`` (and with the bytes themselves) everywhere, and refuses what
``read_u64`` refuses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.memory import PAGE_SIZE, BusError, CheckedQwords, Memory

SIZE = 64 * PAGE_SIZE
HOLED = ((0, 16 * PAGE_SIZE), (32 * PAGE_SIZE, 32 * PAGE_SIZE))
"""RAM with a hole of 16 pages in the middle."""


@settings(max_examples=200, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.integers(0, SIZE // 8 - 1), st.integers(0, (1 << 64) - 1)), max_size=40
    ),
    probes=st.lists(st.integers(0, SIZE // 8 - 1), min_size=1, max_size=40),
)
def test_qwords_load_what_the_bytes_hold(writes: list[tuple[int, int]], probes: list[int]) -> None:
    mem = Memory(SIZE)
    for index, value in writes:
        mem.write(index * 8, value.to_bytes(8, "little"))
    q = mem.qwords
    for index in probes + [i for i, _ in writes]:
        expected = int.from_bytes(mem.read(index * 8, 8), "little")
        assert q[index] == expected == mem.read_u64(index * 8)


def test_plain_ram_view_is_the_mapping_and_stops_at_the_top() -> None:
    mem = Memory(SIZE)
    mem.write_u64(SIZE - 8, 0x1122_3344_5566_7788)
    assert mem.qwords[SIZE // 8 - 1] == 0x1122_3344_5566_7788
    with pytest.raises(IndexError):
        mem.qwords[SIZE // 8]


@settings(max_examples=100, deadline=None)
@given(index=st.integers(0, SIZE // 8 - 1), value=st.integers(0, (1 << 64) - 1))
def test_ram_with_holes_loads_checked(index: int, value: int) -> None:
    mem = Memory(HOLED)
    assert isinstance(mem.qwords, CheckedQwords)
    addr = index * 8
    if mem.contains(addr, 8):
        mem.write_u64(addr, value)
        assert mem.qwords[index] == value == mem.read_u64(addr)
    else:
        with pytest.raises(BusError):
            mem.qwords[index]
    with pytest.raises(BusError):
        mem.qwords[SIZE // 8]
