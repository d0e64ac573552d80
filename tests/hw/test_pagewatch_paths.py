"""hw.pagewatch.SlotTracker with table paths, against an independent reference.

The tracker registers an entry read from four table entries under a shared
:class:`~hw.pagewatch.TablePath` (its three upper granules) plus its leaf granule;
every other entry granule by granule. The reference here is the plain model of what
that must amount to: a dict from granule to the entries registered at it, the pages
watched (from a granule's first registration until the first write to the page
while nothing depends on it), which entries a write marks (those of the granules
whose bytes changed, each once, with the write as a cause), and when the version
moves. Random 4-level walks over a few table pages (so walks share upper entries,
and reach one upper entry through different ones), shorter and longer walks, IOTLB
fills and replacements, runs, flushes (global, by range), drops, rebases, table
writes (changing, rewriting a value unchanged, several granules at once) and the
model's own A/D writes are applied to both and compared after every step."""

from __future__ import annotations

import random

import pytest

from hw.memory import Memory
from hw.pagewatch import MAX_CAUSES, SlotCached, causes
from hw.translation import Pipeline, PipelineStats, TlbEntry

PAGES = (3, 4, 5, 9)
"""Table page frames the random walks read (a few, so walks share entries)."""
TAG = ("did", 1)
SRC = object()


class Reference:
    """What the tracker must hold, kept the simple way."""

    def __init__(self, mem: Memory) -> None:
        self.mem = mem
        self.deps: dict[int, set[SlotCached]] = {}
        self.watched: set[int] = set()
        self.version = 0
        self.suspect: dict[int, bool] = {}
        self.causes: dict[int, list[int]] = {}

    def add(self, e: SlotCached, slots: list[int] | tuple[int, ...]) -> None:
        for g in slots:
            self.deps.setdefault(g, set()).add(e)
            self.watched.add(g >> 9)

    def drop(self, e: SlotCached, slots: list[int] | tuple[int, ...]) -> None:
        for g in slots:
            self.deps.get(g, set()).discard(e)

    def write(self, addr: int, data: bytes) -> None:
        """A write through :class:`Memory` of ``data`` at ``addr`` (within a page)."""
        pfn = addr >> 12
        before = self.mem.read(addr & ~7, ((addr + len(data) + 7) & ~7) - (addr & ~7))
        if pfn not in self.watched:
            return
        live = any(s for g, s in self.deps.items() if g >> 9 == pfn)
        if not live:
            self.watched.discard(pfn)
            return
        after = bytearray(before)
        off = addr & 7
        after[off : off + len(data)] = data
        marked = False
        for i in range(len(before) - 8, -8, -8):  # one write's granules, highest first
            if before[i : i + 8] != after[i : i + 8]:
                g = ((addr & ~7) + i) >> 3
                for e in self.deps.get(g, ()):
                    marked = True
                    k = id(e)
                    if self.suspect[k]:
                        if len(self.causes[k]) < MAX_CAUSES:
                            self.causes[k].append(g << 3)
                    else:
                        self.suspect[k] = True
                        self.causes[k] = [g << 3]
        if marked:
            self.version += 1


class Check:
    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.mem = Memory(1 << 20)
        self.p = Pipeline(self.mem, PipelineStats(), strict=False)
        self.tr = self.p.deps
        self.ref = Reference(self.mem)
        self.cached: dict[int, TlbEntry] = {}
        """vpn -> the entry the IOTLB holds for it (reference of the cache)."""
        self.other: list[SlotCached] = []
        """Entries registered with the tracker directly (not in the IOTLB)."""
        self.slots: dict[int, list[int] | tuple[int, ...]] = {}
        self.all: list[SlotCached] = []

    def granule(self) -> int:
        return (self.rnd.choice(PAGES) << 9) + self.rnd.randrange(6)

    def walk(self) -> list[int] | tuple[int, ...]:
        n = self.rnd.choice((4, 4, 4, 4, 3, 5, 1))
        slots = [self.granule() for _ in range(n)]
        return tuple(slots) if self.rnd.random() < 0.2 else slots

    def note(self, e: SlotCached, slots: list[int] | tuple[int, ...]) -> None:
        self.slots[id(e)] = slots
        self.ref.suspect.setdefault(id(e), False)
        self.ref.causes.setdefault(id(e), [])
        self.all.append(e)

    def fill(self) -> None:
        vpn = self.rnd.randrange(40)
        slots = self.walk()
        e = TlbEntry(TAG, vpn, 12, vpn << 12, 3, SRC, slots=slots)
        self.note(e, slots)
        old = self.cached.pop(vpn, None)
        if old is not None:
            self.ref.drop(old, self.slots[id(old)])
        self.p.iotlb.put(e)
        self.cached[vpn] = e
        self.ref.add(e, slots)

    def run(self) -> None:
        shared = [self.granule() for _ in range(self.rnd.choice((3, 3, 2)))]
        first = self.rnd.randrange(40)
        vpns = [v for v in range(first, first + self.rnd.randint(1, 5)) if v not in self.cached]
        own = [(self.rnd.choice(PAGES) << 9) + 8 + i for i in range(len(vpns))]
        d4 = self.p.iotlb.tables.setdefault(TAG, ({}, {}, {}, {}))[0]
        added: list[TlbEntry] = []
        for v, g in zip(vpns, own, strict=True):
            slots = (*shared, g)
            e = TlbEntry(TAG, v, 12, v << 12, 3, SRC, slots=slots)
            self.note(e, slots)
            d4[v] = e
            self.cached[v] = e
            self.ref.add(e, slots)
            added.append(e)
        if added:
            self.tr.add_run(added, shared, own)

    def add_other(self) -> None:
        slots = self.walk()
        e = SlotCached(frozenset(slots) if self.rnd.random() < 0.3 else slots)
        self.note(e, list(e.slots))
        self.tr.add(e)
        self.other.append(e)
        self.ref.add(e, self.slots[id(e)])

    def drop_other(self) -> None:
        if self.other:
            e = self.other.pop(self.rnd.randrange(len(self.other)))
            self.tr.drop(e)
            self.ref.drop(e, self.slots[id(e)])

    def flush(self) -> None:
        if self.rnd.random() < 0.5:
            self.p.iotlb.flush_all()
            victims = list(self.cached)
        else:
            lo = self.rnd.randrange(40)
            hi = lo + self.rnd.randrange(8)
            self.p.iotlb.flush(None, lo << 12, (hi << 12) | 0xFFF)
            victims = [v for v in self.cached if lo <= v <= hi]
        for v in victims:
            e = self.cached.pop(v)
            self.ref.drop(e, self.slots[id(e)])

    def rebase(self) -> None:
        live = [*self.cached.values(), *self.other]
        if not live:
            return
        e = self.rnd.choice(live)
        slots = self.walk()
        self.ref.drop(e, self.slots[id(e)])
        self.tr.rebase(e, slots)
        self.slots[id(e)] = slots
        self.ref.suspect[id(e)] = False
        self.ref.add(e, slots)

    def write(self) -> None:
        g = self.granule()
        addr = g << 3
        old = self.mem.read_u64(addr)
        how = self.rnd.random()
        if how < 0.2:  # the value unchanged
            data = old.to_bytes(8, "little")
        elif how < 0.4:  # several granules at once, some bytes unchanged
            addr = (addr & ~0x3F) + self.rnd.randrange(8)
            size = self.rnd.randint(1, 40)
            cur = self.mem.read(addr, size)
            data = bytes(b ^ (self.rnd.random() < 0.3) for b in cur)
        else:
            data = (old ^ (1 << self.rnd.randrange(64))).to_bytes(8, "little")
        self.ref.write(addr, data)
        self.mem.write(addr, data)

    def own_write(self) -> None:
        addr = self.granule() << 3
        bits = 1 << self.rnd.choice((5, 6))
        if self.mem.read_u64(addr) & bits != bits:
            pfn = addr >> 12
            if pfn in self.ref.watched and not any(
                s for g, s in self.ref.deps.items() if g >> 9 == pfn
            ):
                self.ref.watched.discard(pfn)
        self.tr.own_write(addr, bits)

    def compare(self) -> None:
        tr, ref = self.tr, self.ref
        expect = {g: s for g, s in ref.deps.items() if s}
        assert tr.dependants() == expect
        assert {pfn for pfn in range(16) if self.mem.watched(pfn)} == ref.watched
        assert set(tr.snaps) == ref.watched
        assert tr.live == {
            pfn: sum(1 for g in expect if g >> 9 == pfn) for pfn in sorted(ref.watched)
        }
        assert tr.version == ref.version
        for e in self.all:
            assert e.suspect == ref.suspect[id(e)]
            assert [w.addr for w in causes(e)] == ref.causes[id(e)]
        # Bounded: every index holds watched pages' granules only.
        assert {g >> 9 for g in tr.deps} <= ref.watched
        assert {g >> 9 for g in tr.ups} <= ref.watched
        assert set(tr.page_paths) <= ref.watched
        for g3, p in tr.paths.items():
            assert p.g3 == g3 and all(p in tr.ups[g] for g in (p.g1, p.g2, p.g3))


@pytest.mark.parametrize("seed", range(40))
def test_tracker_registers_and_marks_what_a_per_granule_reference_does(seed: int) -> None:
    c = Check(seed)
    ops = (
        [c.fill] * 6
        + [c.run, c.add_other, c.drop_other, c.flush, c.rebase, c.own_write]
        + [c.write] * 5
    )
    for _ in range(150):
        c.rnd.choice(ops)()
        c.compare()
    # Everything dropped, every page written: nothing is watched or indexed any more.
    for e in list(c.other):
        c.tr.drop(e)
    c.p.iotlb.flush_all()
    for pfn in PAGES:
        c.mem.write_u64(pfn << 12, c.mem.read_u64(pfn << 12) ^ 1)
    tr = c.tr
    assert tr.deps == {} and tr.paths == {} and tr.ups == {} and tr.page_paths == {}
    assert tr.snaps == {} and not any(c.mem.watched(pfn) for pfn in PAGES)


def test_one_upper_entry_reached_through_others_is_registered_on_its_own() -> None:
    """Two walks to one last upper entry through different top entries: the second
    cannot share the first's path, and a write to its own top entry marks it only."""
    mem = Memory(1 << 20)
    p = Pipeline(mem, PipelineStats(), strict=False)
    a = TlbEntry(TAG, 1, 12, 0x1000, 3, SRC, slots=[3 << 9, 4 << 9, 5 << 9, 9 << 9])
    b = TlbEntry(TAG, 2, 12, 0x2000, 3, SRC, slots=[3 << 9 | 1, 4 << 9, 5 << 9, 9 << 9 | 1])
    p.iotlb.put(a)
    p.iotlb.put(b)
    assert a.path is not None and b.path is None
    mem.write_u64(3 << 12 | 8, 1)
    assert b.suspect and not a.suspect
    mem.write_u64(5 << 12, 1)  # the shared last upper entry
    assert a.suspect
