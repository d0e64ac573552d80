"""VT-d model hot paths, each with its ratio to a baseline measured in the same run:

- IOTLB-hit translation of a 2 MiB run in 4 KiB pages, second stage (RID_PASID) and
  first stage with a PASID, and a 64 MiB first-stage run (per page, vs a dict lookup;
  whole 2 MiB blocks go through block summaries), plus 511 pages of a block that is
  not fully cached (the page-by-page hit path);
- the first warm run after the cold fill (the model's own A/D-bit updates must not
  leave its entries suspect, so it costs what a warm run costs);
- a cold 4-level second-stage walk (per walk, vs a dict lookup): a global IOTLB
  flush, then a one-page request that reads all four levels from RAM (the model keeps
  no paging-structure caches; context and PASID entries stay cached, as in hardware);
- a first-stage + PASID cold fill of 64 MiB on fresh tables (per page): all four
  levels read for the first page of each 2 MiB block, its last-level table read once
  for the rest (:func:`bench_first_stage`);
- a 64 MiB DSA MEMMOVE through the VT-d unit with first-stage PASID tables in 4 KiB
  pages and a warm IOTLB, as a ratio to an in-process bytearray copy (target >= 0.9).

Targets from issue 20: cold second-stage walk <= 100x a dict lookup, first-stage +
PASID cold fill <= 150x per page. The translation rows and their dict-lookup baseline
are process CPU times (:func:`benchmarks._harness.best_cpu_of`): on a host shared
with other work, wall time charges the millisecond loops for other processes' turns
and rarely the microsecond baseline, which skewed every ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from benchmarks._harness import BenchResult, best_cpu_of, best_of, dict_lookup_ns
from hw.machine import Machine, build_machine
from hw.pci import PCI_EXT_CAP_ID_PASID
from hw.uapi.idxd import IDXD_OP_FLAG_CRAV, IDXD_OP_FLAG_RCR, DsaHwDesc
from hw.vtd import VtdUnit
from hw.vtd import entries as ent
from hw.vtd import registers as vr
from tests.hw.vtd.helpers import Pages, PageTable, Tables, enable_te, set_root

RID = 0x0010
BASE = 0xFED9_0000
RUN = 2 << 20
BIG = 64 << 20
IOVA = 0x4000_0000
PASID = 1
FL_IOVA, FL_PA = 0x4000_0000, 0x1000_0000
DST_IOVA, DST_PA = 0x5000_0000, 0x1400_0000
CR_IOVA, CR_PA = 0x6000_0000, 0x0080_0000
PART_IOVA, PART_PA, PART_PAGES = 0x4800_0000, 0x1800_0000, 511
"""A block one page short of full: no block summary, the per-page hit path."""


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


def _fl_pasid(m: Machine, unit: VtdUnit, rid: int, maps: list[tuple[int, int, int]]) -> None:
    """Scalable-mode tables for ``rid``: PASID ``PASID`` -> a 4-level first-stage table
    mapping each ``(iova, phys, size)`` in 4 KiB pages, with A/D clear (so the model
    sets them), built with the test helpers; translation enabled."""
    pages = Pages(m)
    t = Tables(m, pages, scalable=True)
    t.sm_ctx(rid)
    pt = PageTable(m, pages, 4, fl=True)
    mem = m.memory
    for iova, phys, size in maps:
        for off in range(0, size, RUN):
            l1 = pt.entry_addr(iova + off, 1)
            n = min(RUN, size - off) >> 12
            base = phys + off
            mem.write(
                l1, b"".join(((base + (i << 12)) | 7).to_bytes(8, "little") for i in range(n))
            )
    t.pasid_entry(rid, PASID, ent.PGTT_FL, did=1, pt=pt)
    set_root(m, unit, t.root, scalable=True)
    enable_te(m, unit)


def _cpu_timed(fn: Callable[[], object]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _per_page(
    name: str, seconds: float, size: int, dict_ns: float, limit: float | None = None
) -> BenchResult:
    """Per 4 KiB page, as a ratio to a dict lookup; ``limit`` is the issue-20 target."""
    ns = seconds / (size >> 12) * 1e9
    ratio = ns / dict_ns
    if limit is None:
        return BenchResult(name, ns, "ns", ratio, f"dict lookup {dict_ns:.1f} ns")
    return BenchResult(
        name, ns, "ns", ratio, f"dict lookup {dict_ns:.1f} ns", f"<= {limit:g}x", ratio <= limit
    )


COLD_TRIES = 3
"""Fresh machines the cold fill is measured on (the best counts): a cold fill can
only be measured once per machine, and one try on a busy host is often preempted."""


def _fl_machine() -> tuple[VtdUnit, Callable[[int, bool], Callable[[], object]]]:
    m = build_machine({"ram": "512M", "iommus": [{"kind": "vtd", "name": "dmar0"}]})
    unit = m.iommus["dmar0"]
    assert isinstance(unit, VtdUnit)
    _fl_pasid(m, unit, RID, [(FL_IOVA, FL_PA, BIG), (PART_IOVA, PART_PA, PART_PAGES << 12)])

    def run(size: int, write: bool) -> Callable[[], object]:
        return lambda: unit.translate(RID, PASID, False, FL_IOVA, size, write)

    return unit, run


def bench_first_stage(dict_ns: float) -> list[BenchResult]:
    """The cold fill is a 64 MiB write request on tables nothing has walked: every
    page is an IOTLB miss, every leaf gets A and D. The model walks the first page of
    each 2 MiB block from the PASID entry's first-stage root, then reads the rest of
    that block's last-level table in one load (``Translation.fill_ahead``; the
    upper levels are re-read for every block, nothing is cached between requests).
    Best process CPU time of :data:`COLD_TRIES` fresh machines."""
    cold = float("inf")
    for _ in range(COLD_TRIES):
        unit, run = _fl_machine()
        cold = min(cold, _cpu_timed(run(BIG, True)))
    part = PART_PAGES << 12
    first_warm = _cpu_timed(run(BIG, True))
    r = unit.translate(RID, PASID, False, FL_IOVA, BIG, True)
    assert r.fault is None and r.runs == ((FL_PA, BIG),), r.runs[:4]
    hit2 = best_cpu_of(run(RUN, True), repeat=7)
    hit64 = best_cpu_of(run(BIG, True), repeat=5)
    unit.translate(RID, PASID, False, PART_IOVA, part, True)
    paged = best_cpu_of(lambda: unit.translate(RID, PASID, False, PART_IOVA, part, True), repeat=7)
    assert unit.stats.stale_uses == 0
    assert unit.stats.iotlb_misses == (BIG >> 12) + PART_PAGES
    return [
        _per_page("fl+PASID iotlb hit, 2 MiB in 4 KiB pages (per page)", hit2, RUN, dict_ns),
        _per_page("fl+PASID iotlb hit, 64 MiB in 4 KiB pages (per page)", hit64, BIG, dict_ns),
        _per_page("fl+PASID first warm run after cold fill, 64 MiB", first_warm, BIG, dict_ns),
        _per_page("fl+PASID iotlb hit, 511 pages, page by page", paged, part, dict_ns),
        _per_page("fl+PASID cold fill, 64 MiB (per page)", cold, BIG, dict_ns, 150),
    ]


def _dsa_machine() -> tuple[Machine, VtdUnit, Callable[[], None]]:
    m = build_machine(
        {
            "ram": "512M",
            "iommus": [{"kind": "vtd", "name": "dmar0"}],
            "devices": [{"kind": "dsa", "bdf": "00:02.0"}],
        }
    )
    unit = m.iommus["dmar0"]
    assert isinstance(unit, VtdUnit)
    fn = next(iter(m.functions.values()))
    _fl_pasid(
        m,
        unit,
        fn.addr.rid,
        [(FL_IOVA, FL_PA, BIG), (DST_IOVA, DST_PA, BIG), (CR_IOVA, CR_PA, 4096)],
    )
    bdf = fn.addr
    m.pci_config_write(bdf, 4, 2, 6)
    m.pci_config_write(bdf, fn.find_ext_cap(PCI_EXT_CAP_ID_PASID) + 6, 2, 1)
    bar0, bar2 = fn.bar_base(0), fn.bar_base(2)
    offsets = m.mmio_read(bar0 + 0x60, 8)
    wqcfg, grpcfg = ((offsets >> 16) & 0xFFFF) * 0x100, (offsets & 0xFFFF) * 0x100
    m.mmio_write(bar0 + wqcfg, 4, 16)
    # Dedicated WQ, priority 1, PASID enabled with PASID (user, priv = 0).
    m.mmio_write(bar0 + wqcfg + 8, 4, 1 | 1 << 4 | PASID << 8 | 1 << 28)
    m.mmio_write(bar0 + wqcfg + 12, 4, 31 | 10 << 5)
    m.mmio_write(bar0 + grpcfg, 8, 1)
    m.mmio_write(bar0 + grpcfg + 32, 8, 1)
    for cmd in (1 << 20, 6 << 20):
        m.mmio_write(bar0 + 0xA0, 4, cmd)
        m.clock.run_all()
    desc = DsaHwDesc(
        opcode=3,
        flags=IDXD_OP_FLAG_CRAV | IDXD_OP_FLAG_RCR,
        completion_addr=CR_IOVA,
        src_addr=FL_IOVA,
        dst_addr=DST_IOVA,
        xfer_size=BIG,
    ).to_bytes()

    def once() -> None:
        m.memory.write_u8(CR_PA, 0)
        m.movdir64b(bar2, desc)
        m.clock.run_all()
        assert m.memory.read_u8(CR_PA) == 1

    return m, unit, once


def bench_dsa_memmove() -> list[BenchResult]:
    src = bytearray(BIG)
    dst = bytearray(BIG)

    def baseline() -> None:
        dst[:] = src

    m, unit, once = _dsa_machine()
    m.memory.write(FL_PA, bytes(range(256)) * (BIG // 256))
    once()  # cold: fills the IOTLB, sets A/D bits
    once()  # first warm run
    base = best_of(baseline, repeat=5)
    hits = unit.stats.iotlb_hits
    t = best_of(once, repeat=5)
    assert m.memory.read(DST_PA, 4096) == m.memory.read(FL_PA, 4096)
    assert unit.stats.stale_uses == 0
    per_run = (unit.stats.iotlb_hits - hits) / 5
    ratio = base / t
    return [
        BenchResult(
            "DSA memmove 64MiB, VT-d fl+PASID 4K, warm",
            BIG / t / 1e9,
            "GB/s",
            ratio,
            "bytearray copy",
            ">= 0.9",
            ratio >= 0.9,
        ),
        BenchResult("DSA memmove 64MiB: IOTLB hits per run", per_run, "hits"),
    ]


def bench() -> list[BenchResult]:
    _m, unit = _machine()
    dict_ns = dict_lookup_ns()
    r = unit.translate(RID, None, False, IOVA, RUN, True)
    assert r.fault is None and r.runs == ((16 << 20, RUN),), r
    hit = best_cpu_of(lambda: unit.translate(RID, None, False, IOVA, RUN, True), repeat=7)
    per_page = hit / (RUN // 4096) * 1e9

    def cold() -> None:
        unit.caches.flush_tlb()
        unit.translate(RID, None, False, IOVA, 4096, False)

    # A true cold walk: the global flush empties the IOTLB (the model keeps no
    # paging-structure caches); the context and PASID entries stay cached, as they
    # do in hardware across an IOTLB flush. Every walk reads all four levels.
    walks = 200

    def cold_walks() -> None:
        for _ in range(walks):
            cold()

    walk = best_cpu_of(cold_walks, repeat=5) / walks * 1e9
    assert unit.stats.stale_uses == 0
    return [
        BenchResult(
            "iotlb hit, 2 MiB run in 4 KiB pages (per page)",
            per_page,
            "ns",
            per_page / dict_ns,
            f"dict lookup {dict_ns:.1f} ns",
        ),
        *bench_first_stage(dict_ns),
        BenchResult(
            "cold 4-level second-stage walk (per walk)",
            walk,
            "ns",
            walk / dict_ns,
            f"dict lookup {dict_ns:.1f} ns",
            "<= 100x",
            walk / dict_ns <= 100,
        ),
        *bench_dsa_memmove(),
    ]
