"""``translate_page`` (a request inside one 4 KiB page) answers as ``translate_run``
does: the same runs, fault and hit count, the same pages handed to the slow path with
the same entries, and the same cache left behind, over randomized caches (entries of
every size, suspect, from another source, lacking a right, clean, beyond RAM, in a
hole, under a block summary) and randomized requests."""

from __future__ import annotations

import random

import pytest

from hw.bus import DmaFault
from hw.memory import Memory
from hw.pagewatch import SlotTracker
from hw.translation import TagCache, TlbEntry, ram_limits, translate_page, translate_run

TAG = 7
SRC, OTHER = object(), object()
SPAN = 1 << 23
"""Requests fall in the first 8 MiB of the address space."""


class Slow:
    """A slow path that records what it was asked and answers from a fixed table:
    an entry to cache and use, or a fault."""

    def __init__(self, cache: TagCache, answers: dict[int, TlbEntry | DmaFault]) -> None:
        self.cache = cache
        self.answers = answers
        self.calls: list[tuple[int, int, object]] = []

    def __call__(self, e: TlbEntry | None, a: int, end: int) -> TlbEntry | DmaFault:
        self.calls.append((a, end, None if e is None else (e.vpn, e.shift)))
        got = self.answers[a >> 12]
        if isinstance(got, TlbEntry):
            self.cache.put(got)
        return got


def _entry(rng: random.Random, vpn4k: int, ram: int, src: object) -> TlbEntry:
    shift = rng.choice((12, 12, 12, 21, 30))
    phys_top = ram + (8 << 20) if rng.random() < 0.1 else ram
    phys = rng.randrange(0, phys_top) & -(1 << shift)
    e = TlbEntry(
        TAG, (vpn4k << 12) >> shift, shift, phys, rng.choice((1, 3, 3, 7)), src, -1, (), True
    )
    e.dirty = rng.random() < 0.7
    return e


def _build(seed: int, layout: int | list[tuple[int, int]]) -> tuple[TagCache, Slow, random.Random]:
    rng = random.Random(seed)
    mem = Memory(layout)
    ram, ram_run = ram_limits(mem)
    cache = TagCache(SlotTracker(mem), ram, None, ram_run)
    for _ in range(60):
        e = _entry(rng, rng.randrange(SPAN >> 12), mem.size, rng.choice((SRC, SRC, OTHER)))
        e.suspect = rng.random() < 0.1
        cache.put(e)
    answers: dict[int, TlbEntry | DmaFault] = {}
    for vpn in range(SPAN >> 12):
        if rng.random() < 0.15:
            answers[vpn] = DmaFault(vpn << 12, 5, False, "no")
        else:
            e = _entry(rng, vpn, mem.size, SRC)
            e.vpn, e.shift = vpn, 12  # the slow path's answer covers its own page
            answers[vpn] = e
    return cache, Slow(cache, answers), rng


def _state(cache: TagCache) -> object:
    return {
        key: [
            sorted((vpn, e.phys, e.perms, e.dirty, e.suspect) for vpn, e in d.items())
            for d in t[:3]
        ]
        + [sorted(t[3])]
        for key, t in cache.tables.items()
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "layout", [32 << 20, [(0, 4 << 20), (16 << 20, 16 << 20)]], ids=["flat", "hole"]
)
def test_one_page_requests_answer_as_the_run_loop(
    seed: int, layout: int | list[tuple[int, int]]
) -> None:
    c1, s1, rng = _build(seed, layout)
    c2, s2, _ = _build(seed, layout)
    for _ in range(400):
        addr = rng.randrange(SPAN)
        end = rng.randrange(addr + 1, (addr | 0xFFF) + 2)
        need = rng.choice((1, 1, 3, 7))
        dirty_ok = rng.random() < 0.5
        src = SRC if rng.random() < 0.9 else OTHER
        if rng.random() < 0.05:  # a block summary where one can be built
            for c in (c1, c2):
                t = c.tables.get(TAG)
                if t is not None:
                    c.summarise(t, addr >> 21, src)
        runs, fault, hits = translate_run(c1, TAG, src, need, dirty_ok, addr, end, False, s1)
        got = translate_page(c2, TAG, src, need, dirty_ok, addr, end, False, s2)
        assert got == (tuple(runs), fault, hits), (hex(addr), hex(end))
        assert s1.calls == s2.calls
        assert _state(c1) == _state(c2)
