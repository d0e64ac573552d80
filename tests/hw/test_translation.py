"""hw.translation: the shared hit path driven by a minimal vendor (a slow path that
maps page ``v`` to frame ``v + OFFSET``), independent of VT-d and SMMUv3."""

from __future__ import annotations

from hw.bus import DMA_FAULT_BUS, DmaFault
from hw.memory import Memory
from hw.translation import NEVER, Pipeline, PipelineStats, TlbEntry, translate_run

OFFSET = 0x100  # pages
RAM = 8 << 20
TAG = ("space", 1)
SRC = object()
MB2 = 2 << 20


class Vendor:
    """Fills 4 KiB entries (rights 3) on a miss; records what reached it."""

    def __init__(self, pipeline: Pipeline, src: object = SRC) -> None:
        self.pipeline = pipeline
        self.src = src
        self.calls: list[tuple[int, bool]] = []
        self.refuse_at = -1

    def __call__(self, e: TlbEntry | None, a: int, end: int) -> TlbEntry | DmaFault:
        self.calls.append((a, e is not None))
        if a == self.refuse_at:
            return DmaFault(a, 0x42, False, "no")
        if e is None:
            vpn = a >> 12
            e = TlbEntry(TAG, vpn, 12, (vpn + OFFSET) << 12, 3, self.src, slots=(vpn,))
            self.pipeline.iotlb.put(e)
        return e


def setup() -> tuple[Pipeline, Vendor]:
    p = Pipeline(Memory(RAM), PipelineStats(), strict=False)
    return p, Vendor(p)


Result = tuple[list[tuple[int, int]], DmaFault | None, int]


def run(p: Pipeline, v: Vendor, addr: int, size: int, need: int = 1, src: object = SRC) -> Result:
    return translate_run(p.iotlb, TAG, src, need, True, addr, addr + size, False, v)


def test_misses_fill_through_the_slow_path_and_runs_merge() -> None:
    p, v = setup()
    runs, fault, hits = run(p, v, 0x1800, 0x3000)
    assert runs == [(((1 + OFFSET) << 12) + 0x800, 0x3000)] and fault is None
    assert hits == 0 and v.calls == [(a, False) for a in (0x1800, 0x2000, 0x3000, 0x4000)]
    v.calls.clear()
    assert run(p, v, 0x1800, 0x3000) == (runs, None, 4) and v.calls == []


def test_a_whole_block_is_summarised_then_served_in_one_lookup() -> None:
    p, v = setup()
    run(p, v, MB2, MB2)
    t = p.iotlb.tables[TAG]
    assert 1 in t[3] and t[3][1].runs == ((0, (512 + OFFSET) << 12, MB2),)
    v.calls.clear()
    runs, _fault, hits = run(p, v, MB2 + 0x1000, 0x2000)
    assert runs == [(((513 + OFFSET) << 12), 0x2000)] and hits == 2 and v.calls == []
    e = t[0][512 + 7]
    e.suspect = True  # a suspect entry outdates nothing by itself but is never a hit
    p.deps.version += 1  # as the tracker does when it marks one
    run(p, v, MB2, MB2)
    assert v.calls == [(MB2 + 7 * 4096, True)]


def test_other_source_missing_right_or_never_go_to_the_slow_path() -> None:
    p, v = setup()
    run(p, v, 0, 0x1000)
    v.calls.clear()
    run(p, v, 0, 0x1000, need=4)
    run(p, v, 0, 0x1000, src=object())
    run(p, v, 0, 0x1000, src=NEVER)
    assert v.calls == [(0, True)] * 3


def test_the_slow_path_ends_the_request_with_its_fault() -> None:
    p, v = setup()
    v.refuse_at = 0x2000
    runs, fault, _ = run(p, v, 0x1000, 0x3000)
    assert runs == [((1 + OFFSET) << 12, 0x1000)] and fault is not None and fault.reason == 0x42


def test_translations_beyond_ram_are_cut_with_a_bus_fault() -> None:
    p, v = setup()
    last = (RAM >> 12) - OFFSET - 1  # the last page that maps inside RAM
    runs, fault, _ = run(p, v, last << 12, 0x2000)
    assert runs == [(RAM - 0x1000, 0x1000)]
    assert fault is not None and fault.reason == DMA_FAULT_BUS and fault.addr == (last + 1) << 12


def test_collecting_entries_uses_no_summaries() -> None:
    p, v = setup()
    run(p, v, MB2, MB2)
    out: list[TlbEntry] = []
    _runs, _, hits = translate_run(p.iotlb, TAG, SRC, 1, True, MB2, MB2 + 0x3000, False, v, out)
    assert [e.vpn for e in out] == [512, 513, 514] and hits == 3


def test_flush_by_range_drops_overlapping_entries_and_summaries() -> None:
    p, v = setup()
    run(p, v, MB2, MB2)
    assert p.iotlb.flush(lambda k: k == TAG, MB2 + 0x1000, MB2 + 0x1FFF) == 1
    assert p.iotlb.tables[TAG][3] == {} and len(p.iotlb) == 511
    assert p.iotlb.flush(lambda k: k != TAG) == 0
    assert p.iotlb.flush(None) == 511 and not p.iotlb.tables
