"""VT-d model hot paths: IOTLB-hit translation of a 2 MiB run in 4 KiB pages, and a
cold 4-level second-stage walk. Each is reported with its ratio to a Python dict
lookup measured in the same run."""

from __future__ import annotations

from benchmarks._harness import BenchResult, best_of
from hw.machine import Machine, build_machine
from hw.vtd import VtdUnit
from hw.vtd import entries as ent
from hw.vtd import registers as vr

RID = 0x0010
BASE = 0xFED9_0000
RUN = 2 << 20
IOVA = 0x4000_0000


def _machine() -> tuple[Machine, VtdUnit]:
    m = build_machine({"ram": "64M", "iommus": [{"kind": "vtd", "name": "dmar0"}]})
    unit = m.iommus["dmar0"]
    assert isinstance(unit, VtdUnit)
    mem = m.memory
    nxt = [1 << 20]

    def page() -> int:
        addr = nxt[0]
        nxt[0] += 4096
        return addr

    root, ctx, pdir, ptab = page(), page(), page(), page()
    mem.write_u64(root, ctx | 1)
    mem.write_u64(ctx + (RID & 0x7F) * 32, ent.SmCtxLo.encode(P=1, PASIDDIRPTR=pdir >> 12))
    mem.write_u64(pdir, ptab | 1)
    l4, l3, l2 = page(), page(), page()
    mem.write_u64(l4 + ((IOVA >> 39) & 0x1FF) * 8, l3 | 3)
    mem.write_u64(l3 + ((IOVA >> 30) & 0x1FF) * 8, l2 | 3)
    l1 = page()
    mem.write_u64(l2 + ((IOVA >> 21) & 0x1FF) * 8, l1 | 3)
    for i in range(512):
        mem.write_u64(l1 + 8 * i, (16 << 20) + 4096 * i | 3)
    qw0 = ent.PasidQw0.encode(P=1, AW=2, PGTT=ent.PGTT_SL, SSPTPTR=l4 >> 12)
    mem.write(ptab, qw0.to_bytes(8, "little") + ent.PasidQw1.encode(DID=1).to_bytes(8, "little"))
    m.mmio_write(BASE + vr.RTADDR_OFF, 8, root | (1 << 10))
    m.mmio_write(BASE + vr.GCMD_OFF, 4, vr.GCMD.SRTP.mask)
    m.clock.advance(1000)
    m.mmio_write(BASE + vr.GCMD_OFF, 4, vr.GCMD.TE.mask)
    m.clock.advance(1000)
    return m, unit


def _dict_lookup_ns() -> float:
    d = {i: i for i in range(4096)}
    keys = list(range(0, 4096, 8)) * 2

    def run() -> None:
        for k in keys:
            d[k]

    return best_of(run, repeat=7) / len(keys) * 1e9


def bench() -> list[BenchResult]:
    _m, unit = _machine()
    dict_ns = _dict_lookup_ns()
    r = unit.translate(RID, None, False, IOVA, RUN, True)
    assert r.fault is None and r.runs == ((16 << 20, RUN),), r
    hit = best_of(lambda: unit.translate(RID, None, False, IOVA, RUN, True), repeat=7)
    per_page = hit / (RUN // 4096) * 1e9

    def cold() -> None:
        unit.caches.flush_tlb()
        unit.translate(RID, None, False, IOVA, 4096, False)

    walks = 200
    walk = best_of(lambda: [cold() for _ in range(walks)], repeat=5) / walks * 1e9
    assert unit.stats.stale_uses == 0
    return [
        BenchResult(
            "iotlb hit, 2 MiB run in 4 KiB pages (per page)",
            per_page,
            "ns",
            per_page / dict_ns,
            f"dict lookup {dict_ns:.1f} ns",
        ),
        BenchResult(
            "cold 4-level second-stage walk (per walk)",
            walk,
            "ns",
            walk / dict_ns,
            f"dict lookup {dict_ns:.1f} ns",
        ),
    ]
