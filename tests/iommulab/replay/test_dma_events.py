"""The DMA API events the real trace never fired (sg, sync, resource, pages, sgt) and
the descriptors it never submitted, written as Linux 6.12 prints them."""

# ruff: noqa: E501  (trace lines are kept whole, as Linux prints them)
from __future__ import annotations

from iommulab.replay import check as C
from iommulab.replay.events import QiSubmit
from iommulab.replay.ftrace import parse_lines
from iommulab.replay.qi import decode, type_name

DEV = "0000:00:05.0"


def ev(n: int, body: str) -> str:
    return f"            task-7       [001] .....   {n}.000000: {body}"


def run(*bodies: str) -> list[tuple[str, tuple[int, ...], str]]:
    trace = parse_lines([ev(i, b) for i, b in enumerate(bodies, 1)])
    assert trace.problems == []
    return [(f.check, f.lines, f.message) for f in C.check(trace.events).findings]


SG_MAP = (
    f"dma_map_sg: {DEV} dir=TO_DEVICE dma_addrs={{0xf000,0xe000}} sizes={{4096,512}} "
    "phys_addrs={0x1000,0x5000} attrs="
)
SG_UNMAP = f"dma_unmap_sg: {DEV} dir=TO_DEVICE phys_addrs={{0x1000,0x5000}} attrs="


def test_an_sg_list_mapped_synced_and_unmapped_is_clean() -> None:
    assert (
        run(
            SG_MAP,
            f"dma_sync_sg_for_device: {DEV} dir=TO_DEVICE dma_addrs={{0xf000}} sizes={{4096}}",
            SG_UNMAP,
        )
        == []
    )


def test_an_sg_unmap_with_fewer_entries_and_an_sg_unmapped_twice() -> None:
    short = f"dma_unmap_sg: {DEV} dir=TO_DEVICE phys_addrs={{0x1000}} attrs="
    got = run(SG_MAP, short, short)
    assert [(c, lines) for c, lines, _ in got] == [
        (C.MISMATCH, (1, 2)),
        (C.DOUBLE_UNMAP, (1, 2, 3)),
    ]
    assert "frees DMA sg list with different entry count [map count=2] [unmap count=1]" in got[0][2]


def test_syncs_outside_a_mapping_or_in_the_wrong_direction() -> None:
    got = run(
        f"dma_map_page: {DEV} dir=FROM_DEVICE dma_addr=a000 size=256 phys_addr=3000 attrs=",
        f"dma_sync_single_for_device: {DEV} dir=FROM_DEVICE dma_addr=a080 size=512",
        f"dma_sync_single_for_cpu: {DEV} dir=TO_DEVICE dma_addr=a000 size=16",
        f"dma_sync_single_for_cpu: {DEV} dir=FROM_DEVICE dma_addr=b000 size=16",
        f"dma_map_page: {DEV} dir=TO_DEVICE dma_addr=c000 size=64 phys_addr=4000 attrs=",
        f"dma_sync_single_for_cpu: {DEV} dir=BIDIRECTIONAL dma_addr=c000 size=64",
    )
    assert [(c, lines) for c, lines, _ in got] == [
        (C.SYNC, (1, 2)), (C.SYNC, (1, 3)), (C.SYNC, (4,)), (C.SYNC, (5, 6)), (C.SYNC, (5, 6)),
        (C.LIVE_AT_END, (1,)), (C.LIVE_AT_END, (5,)),
    ]  # fmt: skip
    assert "syncs DMA memory outside allocated range" in got[0][2]
    assert "syncs DMA memory with different direction" in got[1][2]
    assert "tries to sync DMA memory it has not allocated" in got[2][2]
    assert "syncs device read-only DMA memory for cpu" in got[4][2]


def test_resource_pages_and_sgt_allocations_pair_with_their_own_frees() -> None:
    assert run(
        f"dma_map_resource: {DEV} dir=BIDIRECTIONAL dma_addr=c000 size=4096 phys_addr=fee00000 attrs=",
        f"dma_alloc_pages: {DEV} dir=FROM_DEVICE dma_addr=d000 size=8192 virt_addr=(____ptrval____) flags=GFP_KERNEL attrs=",
        f"dma_alloc_sgt: {DEV} dir=FROM_DEVICE dma_addr=20000 size=8192 phys_addrs={{0x7000,0x9000}} flags=GFP_KERNEL attrs=",
        f"dma_alloc_sgt_err: {DEV} dir=FROM_DEVICE dma_addr=0 size=8192 virt_addr=0000000000000000 flags=GFP_KERNEL attrs=",
        f"dma_map_sg_err: {DEV} dir=TO_DEVICE dma_addrs={{0x1000}} err=-12 attrs=",
        f"dma_map_page: {DEV} dir=TO_DEVICE dma_addr=ffffffffffffffff size=4 phys_addr=1 attrs=",
        f"dma_unmap_resource: {DEV} dir=BIDIRECTIONAL dma_addr=c000 size=4096 attrs=",
        f"dma_free_pages: {DEV} dir=FROM_DEVICE dma_addr=d000 size=8192 virt_addr=(____ptrval____) attrs=",
        f"dma_free_sgt: {DEV} dir=FROM_DEVICE dma_addr=20000 size=8192 phys_addrs={{0x7000,0x9000}}",
    ) == []  # fmt: skip


def test_a_free_of_memory_never_allocated_and_with_the_wrong_function() -> None:
    got = run(
        f"dma_free: {DEV} dir=BIDIRECTIONAL dma_addr=9000 size=4096 virt_addr=(____ptrval____) attrs=",
        f"dma_map_page: {DEV} dir=TO_DEVICE dma_addr=a000 size=64 phys_addr=3000 attrs=",
        f"dma_unmap_resource: {DEV} dir=TO_DEVICE dma_addr=a000 size=64 attrs=",
    )  # fmt: skip
    assert [(c, lines) for c, lines, _ in got] == [(C.NOT_MAPPED, (1,)), (C.MISMATCH, (2, 3))]
    assert got[0][2] == (
        "device driver tries to free DMA memory it has not allocated "
        "[device address=0x0000000000009000] [size=4096 bytes]"
    )
    assert "[mapped as single] [unmapped as resource]" in got[1][2]


def test_an_unattributed_iommu_unmap_is_covered_by_a_domain_flush_and_a_global_one() -> None:
    trace = [
        "map: IOMMU: iova=0x0000000000001000 - 0x0000000000002000 paddr=0x0000000000001000 size=4096",
        "unmap: IOMMU: iova=0x0000000000001000 - 0x0000000000002000 size=4096 unmapped_size=4096",
        "cache_tag_flush_all: dmar0/dmar0 type iotlb did 7 pasid 0 ref 1",
        "unmap: IOMMU: iova=0x0000000000003000 - 0x0000000000004000 size=4096 unmapped_size=4096",
        "qi_submit: p_iotlb_inv dmar0: 0x700000076 0x3000 0x0 0x0",
        "unmap: IOMMU: iova=0x0000000000005000 - 0x0000000000006000 size=4096 unmapped_size=4096",
        "qi_submit: iotlb_inv dmar0: 0x12 0x0 0x0 0x0",
    ]  # fmt: skip
    assert run(*trace) == []


def test_other_descriptor_types_decode() -> None:
    def qi(qw0: int, qw1: int = 0) -> QiSubmit:
        return QiSubmit(1, 0, 0, "t", "dmar0", "", qw0, qw1, 0, 0)

    dsi = decode(qi(0x40022))
    assert (dsi.cache, dsi.granularity, dsi.did) == ("iotlb", "domain", 4)
    assert dsi.covers(4, 0, 1 << 40) and not dsi.covers(5, 0, 1)
    psi = decode(qi(0x400F2, 0x10002))
    assert (psi.start, psi.size) == (0x10000, 0x4000) and psi.covers(None, 0x11000, 0x14000)
    assert not psi.covers(4, 0x14000, 0x15000)
    pasid = decode(qi(0x5_0004_0026))
    assert (pasid.cache, pasid.granularity, pasid.pasid) == ("iotlb", "pasid", 5)
    dev = decode(qi(0x0018_0000_0003, 0x5001))  # S=1, bit 12 set, bit 13 clear: 16 KiB
    assert (dev.cache, dev.sid, dev.start, dev.size) == ("devtlb", 0x18, 0x4000, 0x4000)
    pdev = decode(qi(0x1_0018_0008, 0x7000))
    assert (pdev.cache, pdev.pasid, pdev.sid, pdev.size) == ("devtlb", 1, 0x18, 0x1000)
    assert decode(qi(0x2_0000_0025)).cache == "wait"
    resp = decode(qi(0x3_0018_0009))
    assert (resp.cache, resp.pasid, resp.sid) == ("page_resp", 3, 0x18)
    assert decode(qi(0xF)).cache == "unknown" and type_name(qi(0xF)) == "0xf"
    assert type_name(qi(0x9)) == "page_grp_resp"
    assert "did=0x4" in psi.describe()


def test_two_cpus_interleaved_attribute_each_iommu_event_to_its_own_device() -> None:
    """CPU 0 maps for one NIC while CPU 1 maps the same IOVA in the other NIC's domain:
    each iommu:map belongs to the dma:* call that follows it on its own CPU."""
    a, b = "0000:00:03.0", "0000:00:04.0"
    iova = "iova=0x00000000fffff000 - 0x0000000100000000"
    rows = [
        (0, "cache_tag_assign: dmar0/dmar0 type iotlb did 3 pasid 0 ref 1"),
        (0, f"attach_device_to_domain: IOMMU: device={a}"),
        (1, "cache_tag_assign: dmar0/dmar0 type iotlb did 4 pasid 0 ref 1"),
        (1, f"attach_device_to_domain: IOMMU: device={b}"),
        (0, f"map: IOMMU: {iova} paddr=0x0000000000001000 size=4096"),
        (1, f"map: IOMMU: {iova} paddr=0x0000000000002000 size=4096"),
        (1, f"dma_map_page: {b} dir=TO_DEVICE dma_addr=fffff000 size=64 phys_addr=2000 attrs="),
        (0, f"dma_map_page: {a} dir=TO_DEVICE dma_addr=fffff000 size=64 phys_addr=1000 attrs="),
        (1, f"unmap: IOMMU: {iova} size=4096 unmapped_size=4096"),
        (1, "cache_tag_flush_range: dmar0 dmar0[0] type iotlb did 4 [0xfffff000-0xffffffff] addr 0xfffff000 pages 0x1 mask 0x0"),
        (1, f"dma_unmap_page: {b} dir=TO_DEVICE dma_addr=fffff000 size=64 attrs="),
        (0, f"dma_unmap_page: {a} dir=TO_DEVICE dma_addr=fffff000 size=64 attrs="),
    ]  # fmt: skip
    lines = [
        f"            t-{cpu}     [00{cpu}] .....     1.{i:06d}: {body}"
        for i, (cpu, body) in enumerate(rows)
    ]
    res = C.check(parse_lines(lines).events)
    # Each map lands in its own device's domain (did 3, did 4): the same IOVA twice is no
    # overlap, and CPU 1's unmap is covered by its did 4 flush.
    assert res.findings == []
    assert res.stats.iommu_reconciled == 1 and res.stats.dma_reconciled == 2
    assert res.stats.peak_iova_bytes == {"did 3": 4096, "did 4": 4096}


def test_an_unmap_by_the_wrong_device_names_the_owner() -> None:
    got = run(
        f"dma_map_page: {DEV} dir=TO_DEVICE dma_addr=a000 size=64 phys_addr=3000 attrs=",
        "dma_unmap_page: 0000:00:06.0 dir=TO_DEVICE dma_addr=a000 size=64 attrs=",
    )
    assert [(c, lines) for c, lines, _ in got] == [(C.NOT_MAPPED, (1, 2)), (C.LIVE_AT_END, (1,))]
    assert got[0][2].endswith(f"(mapped for {DEV} at line 1)")


def test_fields_in_another_order_or_with_extras_are_still_read() -> None:
    """A later kernel may add or move ``key=value`` fields: read them by name."""
    assert (
        run(
            f"dma_map_page: {DEV} size=64 dir=TO_DEVICE dma_addr=a000 phys_addr=3000 attrs= extra=1",
            f"dma_unmap_page: {DEV} dir=TO_DEVICE attrs=NO_WARN dma_addr=a000 size=64",
        )
        == []
    )
