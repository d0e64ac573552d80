"""DSA MEMMOVE throughput through the model, as a ratio to a bytearray copy."""

from __future__ import annotations

from benchmarks._harness import BenchResult, best_of
from hw.bus import DmaResult
from hw.machine import build_machine
from hw.uapi.idxd import IDXD_OP_FLAG_CRAV, IDXD_OP_FLAG_RCR, DsaHwDesc

SIZE = 64 << 20
SRC, DST, CR = 0x1000_0000, 0x1400_0000, 0x1000


class IdentityPerPage:
    """Translator stub: identity mapping, one run per 4 KiB page (prices translation)."""

    def translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult:
        end = addr + size
        first = (addr | 0xFFF) + 1
        if first >= end:
            return DmaResult(((addr, size),))
        last = end & ~0xFFF
        runs = [(addr, first - addr)]
        runs += [(a, 0x1000) for a in range(first, last, 0x1000)]
        if end > last:
            runs.append((last, end - last))
        return DmaResult(tuple(runs))


def _machine(stub: bool) -> tuple[object, object]:
    m = build_machine({"ram": "512M", "devices": [{"kind": "dsa", "bdf": "00:02.0"}]})
    fn = next(iter(m.functions.values()))
    bdf = fn.addr
    m.pci_config_write(bdf, 4, 2, 6)
    if stub:
        # No public hook installs a bare translator; seed the machine's lookup cache.
        m._iommu_for[bdf] = IdentityPerPage()  # type: ignore[assignment]
    bar0 = fn.bar_base(0)
    bar2 = fn.bar_base(2)
    wqcfg = ((m.mmio_read(bar0 + 0x60, 8) >> 16) & 0xFFFF) * 0x100
    grpcfg = (m.mmio_read(bar0 + 0x60, 8) & 0xFFFF) * 0x100
    m.mmio_write(bar0 + wqcfg, 4, 16)
    m.mmio_write(bar0 + wqcfg + 8, 4, 1 | 1 << 4)
    m.mmio_write(bar0 + wqcfg + 12, 4, 31 | 10 << 5)
    m.mmio_write(bar0 + grpcfg, 8, 1)
    m.mmio_write(bar0 + grpcfg + 32, 8, 1)
    for cmd in (1 << 20, 6 << 20):
        m.mmio_write(bar0 + 0xA0, 4, cmd)
        m.clock.run_all()
    d = DsaHwDesc(
        opcode=3,
        flags=IDXD_OP_FLAG_CRAV | IDXD_OP_FLAG_RCR,
        completion_addr=CR,
        src_addr=SRC,
        dst_addr=DST,
        xfer_size=SIZE,
    ).to_bytes()

    def once() -> None:
        m.memory.write_u8(CR, 0)
        m.movdir64b(bar2, d)
        m.clock.run_all()
        assert m.memory.read_u8(CR) == 1

    return m, once


def bench() -> list[BenchResult]:
    src = bytearray(SIZE)
    dst = bytearray(SIZE)

    def baseline() -> None:
        dst[:] = src

    base = best_of(baseline, repeat=5)
    out = []
    # The >= 0.5 target (issue 6) is for the plain model and, "once VT-d is wired",
    # for 4 KiB pages through VT-d with a warm IOTLB: that row is in bench_vtd. The
    # identity stub hands the engine one run per page on purpose; it prices the
    # engine's run coalescing and carries no target.
    for name, stub, target in (
        ("memmove 64MiB, no IOMMU", False, True),
        ("memmove 64MiB, one run per 4K page (coalescing cost)", True, False),
    ):
        _, once = _machine(stub)
        t = best_of(once, repeat=5)  # type: ignore[arg-type]
        ratio = base / t
        out.append(
            BenchResult(
                name,
                SIZE / t / 1e9,
                "GB/s",
                ratio,
                "bytearray copy",
                ">= 0.5" if target else "",
                ratio >= 0.5 if target else None,
            )
        )
    return out
