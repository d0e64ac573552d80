"""hw.pagewatch.SlotTracker (the VT-d caches' dependency tracker): per-granule marking,
own A/D writes, watch bookkeeping and the version counter."""

from __future__ import annotations

from hw.memory import Memory
from hw.pagewatch import SlotCached, SlotTracker

PAGE = 0x3000


def setup() -> tuple[Memory, SlotTracker, SlotCached, SlotCached]:
    mem = Memory(1 << 20)
    tr = SlotTracker(mem)
    a = SlotCached([PAGE >> 3, (PAGE >> 3) + 1])  # bytes 0..15 of the page
    b = SlotCached([(PAGE + 0x800) >> 3])
    tr.add(a)
    tr.add(b)
    return mem, tr, a, b


def test_write_marks_only_entries_of_changed_granules() -> None:
    mem, tr, a, b = setup()
    mem.write_u64(PAGE + 8, 5)
    assert a.suspect and not b.suspect and tr.version == 1


def test_write_of_unchanged_bytes_or_other_granules_marks_nothing() -> None:
    mem, tr, a, b = setup()
    mem.write_u64(PAGE + 0x10, 7)
    mem.write_u64(PAGE, 0)
    mem.fill(PAGE, 4096)  # page changes back at 0x10 only
    assert not a.suspect and not b.suspect and tr.version == 0


def test_one_write_over_several_granules_marks_all_their_entries() -> None:
    mem, tr, a, b = setup()
    mem.fill(PAGE, 4096, 0xFF)
    assert a.suspect and b.suspect and tr.version == 1


def test_own_write_sets_bits_without_marking() -> None:
    mem, tr, a, _b = setup()
    tr.own_write(PAGE, 1 << 5)
    assert mem.read_u64(PAGE) == 1 << 5 and not a.suspect and tr.version == 0
    writes: list[int] = []
    mem.watch(PAGE >> 12, writes.append)
    tr.own_write(PAGE, 1 << 5)  # already set: no write at all
    assert writes == []
    mem.write_u64(PAGE, 1 << 5 | 1)  # a later software change is still seen
    assert a.suspect


def test_drop_unwatches_the_page_at_its_next_write_after_the_last_dependant() -> None:
    mem, tr, a, b = setup()
    tr.drop(a)
    tr.drop(b)
    assert mem.watched(PAGE >> 12) and not any(tr.deps.values())  # kept until written
    tr.add(a)  # a refill before any write reuses the snapshot
    mem.write_u64(PAGE, 9)
    assert a.suspect
    tr.drop(a)
    mem.write_u64(PAGE, 10)
    assert not mem.watched(PAGE >> 12) and tr.snaps == {} and tr.live == {} and tr.deps == {}
    tr.drop(a)  # dropping twice is harmless
    stray = SlotCached([(PAGE + 0x800) >> 3])
    tr.add(b)
    tr.drop(SlotCached([PAGE >> 3]))  # watched page, granule nobody depends on
    tr.drop(stray)  # granule watched for another entry
    assert mem.watched(PAGE >> 12) and not b.suspect


def test_rebase_and_mark_all() -> None:
    mem, tr, a, b = setup()
    mem.write_u64(PAGE, 1)
    tr.rebase(a, [(PAGE + 0x100) >> 3])
    assert not a.suspect
    mem.write_u64(PAGE, 2)
    assert not a.suspect
    tr.mark_all([a, b])
    assert a.suspect and b.suspect and tr.version == 2


def test_own_write_many_sets_bits_across_a_page_without_marking() -> None:
    mem, tr, a, b = setup()
    mem.write_u64(PAGE + 0x808, 1 << 5)  # already set there: left as it is
    a.suspect = b.suspect = False
    tr.version = 0
    tr.own_write_many({PAGE: 1 << 5, PAGE + 0x800: 1 << 6, PAGE + 0x808: 1 << 5})
    assert mem.read_u64(PAGE) == 1 << 5 and mem.read_u64(PAGE + 0x800) == 1 << 6
    assert mem.read_u64(PAGE + 0x808) == 1 << 5
    assert not a.suspect and not b.suspect and tr.version == 0
    writes: list[int] = []
    mem.watch(PAGE >> 12, writes.append)
    tr.own_write_many({PAGE: 1 << 5})  # nothing to change: no write
    assert writes == []
    mem.write_u64(PAGE + 0x800, 7)  # a later software change is still seen
    assert b.suspect and not a.suspect


def _registered(tr: SlotTracker, names: dict[int, str]) -> tuple[object, ...]:
    deps = {g: sorted(names[id(e)] for e in s) for g, s in tr.deps.items() if s}
    return deps, dict(tr.live), sorted(tr.snaps)


def test_add_run_registers_what_add_of_each_entry_registers() -> None:
    """Shared granules new, shared granules already depended on, own granules new
    and own granules emptied by a drop: the result is that of one ``add`` each."""
    shared = [PAGE >> 3, (0x5000 >> 3) + 7]
    own = [(0x7000 >> 3) + i for i in range(3)]
    for pre in (False, True):
        trackers = []
        for by_run in (False, True):
            mem = Memory(1 << 20)
            tr = SlotTracker(mem)
            old = SlotCached([shared[0], own[1]])
            if pre:
                tr.add(old)
                tr.drop(old)  # own[1] and shared[0] now have empty sets
                tr.add(SlotCached([shared[1]]))
            run = [SlotCached([*shared, g]) for g in own]
            if by_run:
                tr.add_run(run, shared, own)
            else:
                for e in run:
                    tr.add(e)
            names = {id(e): f"e{i}" for i, e in enumerate(run)}
            names.update(
                {id(e): "other" for s in tr.deps.values() for e in s if id(e) not in names}
            )
            trackers.append(_registered(tr, names))
            mem.write_u64(0x7000 + 8, 1)  # own granule of run[1] only
            assert [e.suspect for e in run] == [False, True, False]
            mem.write_u64(0x5000 + 7 * 8, 1)  # a shared granule: all of them
            assert all(e.suspect for e in run)
        assert trackers[0] == trackers[1]
