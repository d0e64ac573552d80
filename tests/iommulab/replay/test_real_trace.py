"""Replaying the real Linux 6.12 trace, and copies of it with one bug edited in.

The claim: on a clean run of real Linux the checks find nothing and reconcile every
map with its unmap; and for each kind of edit (an unmap removed, a flush removed, an
unmap duplicated, a device fault at a freed IOVA, an unmap's size changed) exactly the
matching finding is made, naming the lines involved. Expected line numbers are found by
searching the edited text, not taken from the checker.
"""

from __future__ import annotations

from iommulab.replay import check as C
from iommulab.replay.ftrace import parse_lines
from tests.iommulab.replay.conftest import line_of, real_lines

ETH0, ETH1 = "0000:00:03.0", "0000:00:04.0"


def findings(lines: list[str]) -> list[tuple[str, str, tuple[int, ...]]]:
    trace = parse_lines(lines)
    assert trace.problems == []
    return [(f.check, f.device, f.lines) for f in C.check(trace.events).findings]


def test_the_real_trace_has_no_finding_and_every_pair_reconciles() -> None:
    trace = parse_lines(real_lines())
    res = C.check(trace.events)
    assert trace.problems == [] and trace.unrelated == 0
    assert res.findings == []
    st = res.stats
    text = "\n".join(real_lines())
    maps = text.count(": dma_map_page: ") + text.count(": dma_alloc: ")
    unmaps = text.count(": dma_unmap_page: ") + text.count(": dma_free: ")
    assert (st.dma_maps, st.dma_unmaps, st.dma_reconciled) == (maps, unmaps, 521)
    assert (st.iommu_maps, st.iommu_unmaps) == (text.count(": map: "), text.count(": unmap: "))
    assert st.iommu_reconciled == st.iommu_unmaps == 521
    assert res.live == []


def test_live_mappings_per_device_at_the_phase_before_the_links_go_down() -> None:
    res = C.check(parse_lines(real_lines()).events)
    at = {m.text: live for m, live in res.stats.at_markers}
    # 256 receive buffers and the two descriptor rings per NIC; eth1 holds one more
    # receive buffer after it received the ARP frames.
    assert at["PHASE eth1 down"] == {ETH0: 257, ETH1: 258}
    assert at["PHASE eth0 down"] == {ETH0: 257, ETH1: 0}
    assert at["PHASE dump"] == {ETH0: 0, ETH1: 0}


def test_an_unmap_removed_leaves_its_mapping_live_at_the_end() -> None:
    lines = real_lines()
    down = line_of(lines, "PHASE eth1 down")
    gone = line_of(lines, "dma_unmap_page:", ETH1, "dma_addr=ffffd8c0", after=down)
    del lines[gone - 1]
    mapped = line_of(lines, "dma_map_page:", ETH1, "dma_addr=ffffd8c0")
    assert findings(lines) == [(C.LIVE_AT_END, ETH1, (mapped,))]


def test_a_flush_removed_is_named_when_the_iova_is_mapped_again() -> None:
    lines = real_lines()
    ping = line_of(lines, "PHASE ping from eth0")
    unmap = line_of(lines, "unmap: IOMMU: iova=0x00000000ffe59000", after=ping)
    assert "cache_tag_flush_range" in lines[unmap] and "iotlb_inv" in lines[unmap + 1]
    del lines[unmap : unmap + 2]
    mapped = line_of(lines, "map: IOMMU: iova=0x00000000ffe59000", after=ping)
    again = line_of(lines, "map: IOMMU: iova=0x00000000ffe59000", after=unmap)
    assert findings(lines) == [(C.NO_INVALIDATION, ETH0, (mapped, unmap, again))]


def test_a_flush_removed_at_the_end_is_named_at_the_end() -> None:
    lines = real_lines()
    last = line_of(lines, "unmap: IOMMU: iova=0x00000000ffffe000", after=3000)
    del lines[last : last + 2]
    mapped = line_of(lines, "map: IOMMU: iova=0x00000000ffffe000")
    assert findings(lines) == [(C.NO_INVALIDATION, ETH0, (mapped, last))]


def test_lazy_mode_lets_the_flush_queue_hold_unmaps_at_the_end() -> None:
    """iommu.strict=0: the same trace end is no finding; a re-map before the flush is."""
    lines = real_lines()
    last = line_of(lines, "unmap: IOMMU: iova=0x00000000ffffe000", after=3000)
    del lines[last : last + 2]
    assert C.check(parse_lines(lines).events, lazy=True).findings == []
    lines = real_lines()
    ping = line_of(lines, "PHASE ping from eth0")
    unmap = line_of(lines, "unmap: IOMMU: iova=0x00000000ffe59000", after=ping)
    del lines[unmap : unmap + 2]
    found = C.check(parse_lines(lines).events, lazy=True).findings
    assert [f.check for f in found] == [C.NO_INVALIDATION]


def test_an_unmap_duplicated_is_a_double_unmap() -> None:
    lines = real_lines()
    down = line_of(lines, "PHASE eth1 down")
    first = line_of(lines, "dma_unmap_page:", ETH1, "dma_addr=ffffc140", after=down)
    lines.insert(first, lines[first - 1])
    mapped = line_of(lines, "dma_map_page:", ETH1, "dma_addr=ffffc140")
    assert findings(lines) == [(C.DOUBLE_UNMAP, ETH1, (mapped, first, first + 1))]


def test_a_device_fault_at_a_freed_iova_is_a_use_after_unmap() -> None:
    lines = real_lines()
    down = line_of(lines, "PHASE eth1 down")
    unmap = line_of(lines, "unmap: IOMMU: iova=0x00000000ffffd000", after=down)
    freed = line_of(lines, "dma_unmap_page:", ETH1, "dma_addr=ffffd8c0", after=down)
    fault = (
        "              ip-234     [000] .....    15.916010: io_page_fault: "
        f"IOMMU:e1000 {ETH1} iova=0x00000000ffffd8c0 flags=0x0002"
    )
    lines.insert(freed, fault)
    mapped = line_of(lines, "map: IOMMU: iova=0x00000000ffffd000", after=569)
    assert findings(lines) == [(C.FAULT_UNMAPPED, ETH1, (mapped, unmap, freed + 1))]


def test_a_device_fault_at_an_iova_never_mapped() -> None:
    lines = real_lines()
    fault = (
        "              ip-234     [000] .....    16.000000: io_page_fault: "
        f"IOMMU:e1000 {ETH1} iova=0x0000000012345000 flags=0x0002"
    )
    lines.insert(len(lines) - 1, fault)
    assert findings(lines) == [(C.FAULT_NEVER_MAPPED, ETH1, (len(lines) - 1,))]


def test_an_unmap_with_another_size_is_a_size_mismatch() -> None:
    lines = real_lines()
    down = line_of(lines, "PHASE eth1 down")
    at = line_of(lines, "dma_unmap_page:", ETH1, "dma_addr=ffffd8c0", after=down)
    lines[at - 1] = lines[at - 1].replace("size=1522", "size=2048")
    mapped = line_of(lines, "dma_map_page:", ETH1, "dma_addr=ffffd8c0")
    res = C.check(parse_lines(lines).events)
    assert [(f.check, f.lines) for f in res.findings] == [(C.MISMATCH, (mapped, at))]
    assert res.findings[0].message == (
        "device driver frees DMA memory with different size "
        "[device address=0x00000000ffffd8c0] [map size=1522 bytes] [unmap size=2048 bytes]"
    )


def test_an_iommu_unmap_that_unmapped_less_than_asked() -> None:
    lines = real_lines()
    down = line_of(lines, "PHASE eth1 down")
    at = line_of(lines, "unmap: IOMMU: iova=0x00000000ffffd000", after=down)
    lines[at - 1] = lines[at - 1].replace("unmapped_size=4096", "unmapped_size=0")
    mapped = line_of(lines, "map: IOMMU: iova=0x00000000ffffd000", after=569)
    assert findings(lines) == [(C.UNMAPPED_SIZE, ETH1, (mapped, at))]


def test_an_unmap_in_the_wrong_direction() -> None:
    lines = real_lines()
    down = line_of(lines, "PHASE eth1 down")
    at = line_of(lines, "dma_unmap_page:", ETH1, "dma_addr=ffffd8c0", after=down)
    lines[at - 1] = lines[at - 1].replace("FROM_DEVICE", "TO_DEVICE")
    mapped = line_of(lines, "dma_map_page:", ETH1, "dma_addr=ffffd8c0")
    assert findings(lines) == [(C.MISMATCH, ETH1, (mapped, at))]


def test_an_iommu_map_over_a_live_mapping_is_an_overlap() -> None:
    lines = real_lines()
    at = line_of(lines, "map: IOMMU: iova=0x00000000ffffc000")
    lines.insert(at, lines[at - 1])  # the same IOVA handed out twice, for the same buffer
    first = line_of(lines, "map: IOMMU: iova=0x00000000ffffd000")
    assert (C.OVERLAP, ETH0, (at, at + 1)) in findings(lines)
    assert first < at
