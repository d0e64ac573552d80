"""RAM at server sizes: ranges with the PCI hole below 4 GiB, hole accesses as bus
errors, and machine descriptions refused (naming the field) before anything is built."""

from __future__ import annotations

import resource
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.bus import DMA_FAULT_BUS, PciAddr
from hw.machine import FOUR_GIB, MMIO_WINDOW_BASE, Machine, MachineSpec, build_machine
from hw.memory import PAGE_SIZE, BusError, Memory

G = 1 << 30
M = 1 << 20
EDU = PciAddr(0, 0, 3, 0)


def test_a_size_above_tolud_is_split_around_the_pci_hole() -> None:
    spec = MachineSpec.from_dict({"ram": "64G"})
    assert spec.ram_size == 64 * G
    assert spec.ram_layout == ((0, 3 * G), (FOUR_GIB, 61 * G))


def test_tolud_moves_the_top_of_low_ram() -> None:
    spec = MachineSpec.from_dict({"ram": "8G", "tolud": "2G"})
    assert spec.ram_layout == ((0, 2 * G), (FOUR_GIB, 6 * G))


def test_explicit_ranges_are_kept_and_adjacent_ones_merged() -> None:
    spec = MachineSpec.from_dict(
        {
            "ram": [
                {"base": 0, "size": "1G"},
                {"base": "1G", "size": "1G"},
                {"base": "4G", "size": "2G"},
            ]
        }
    )
    assert spec.ram_layout == ((0, 2 * G), (FOUR_GIB, 2 * G))
    assert spec.ram_size == 4 * G


def test_small_machines_keep_one_range_from_zero() -> None:
    spec = MachineSpec.from_dict({"ram": "256M"})
    assert spec.ram_layout == ((0, 256 * M),)
    assert not Machine(spec).memory.holes


def test_a_machine_with_hundreds_of_gib_builds_without_paying_for_them() -> None:
    m = build_machine({"ram": "384G"})
    assert m.memory.total == 384 * G
    assert m.memory.size == FOUR_GIB + 381 * G
    top = m.memory.size - 8
    m.memory.write_u64(top, 0x1122_3344_5566_7788)
    assert m.memory.read_u64(top) == 0x1122_3344_5566_7788
    assert m.firmware.e820_ram == ((0, 3 * G), (FOUR_GIB, 381 * G))
    assert m.firmware.ram_size == 384 * G


@pytest.mark.parametrize(
    ("desc", "message"),
    [
        ({"ram": "1G", "tolud": "3584M"}, r"machine\.tolud: .* BAR window"),
        ({"ram": "1G", "tolud": 1000}, r"machine\.tolud: .* multiple of 4 KiB"),
        ({"ram": 4097}, r"machine\.ram: .* multiple of 4 KiB"),
        ({"ram": [{"base": 0, "size": 4097}]}, r"machine\.ram\[0\]\.size"),
        ({"ram": [{"base": 100, "size": "1M"}]}, r"machine\.ram\[0\]\.base"),
        ({"ram": [{"base": 0}]}, r"machine\.ram\[0\]\.size: missing"),
        ({"ram": [{"size": "1M", "color": 1}]}, r"machine\.ram\[0\]: unknown field"),
        ({"ram": []}, r"machine\.ram: an empty list"),
        ({"ram": [{"size": "2G"}], "tolud": "1G"}, r"machine\.tolud: only with ram"),
        (
            {"ram": [{"base": "4G", "size": "1G"}, {"base": "1G", "size": "1M"}]},
            r"machine\.ram\[1\]\.base: .* overlaps or precedes machine\.ram\[0\]",
        ),
        (
            {"ram": [{"base": 0, "size": "3200M"}]},
            r"machine\.ram\[0\]: RAM .* overlaps the device BAR window",
        ),
        (
            {"ram": [{"base": 0, "size": "1G"}, {"base": 0xFED0_0000, "size": "64K"}]},
            r"machine\.ram\[1\]: RAM .* overlaps the PCI hole",
        ),
        (
            {"ram": [{"base": 0xFEDA_0000, "size": "16K"}]},
            r"machine\.ram\[0\]: RAM .* overlaps the IOMMU register window",
        ),
        (
            {"ram": [{"base": 0xFEE0_0000, "size": "4K"}]},
            r"machine\.ram\[0\]: RAM .* overlaps the interrupt window 0xfee00000",
        ),
        (
            {"ram": "1G", "iommus": [{"kind": "vtd", "base": 0x1000_0000}]},
            r"machine\.iommus\[0\]\.base: registers at 0x10000000 overlap RAM",
        ),
        (
            {"ram": "8G", "iommus": [{"kind": "vtd", "base": 0x1_4000_0000}]},
            r"machine\.iommus\[0\]\.base: .* overlap RAM \[0x100000000",
        ),
        ({"ram": "65536G"}, r"machine\.ram: top of RAM .* beyond what this host can address"),
    ],
)
def test_bad_ram_descriptions_are_refused_naming_the_field(
    desc: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MachineSpec.from_dict(desc)


def test_the_address_space_limit_of_the_process_bounds_the_description() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (64 * G, hard))
    try:
        with pytest.raises(ValueError, match=r"machine\.ram: .*RLIMIT_AS"):
            MachineSpec.from_dict({"ram": "64G"})
        assert MachineSpec.from_dict({"ram": "32G"}).ram_size == 32 * G
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize(
    "access",
    [
        lambda m, a: m.read_u8(a),
        lambda m, a: m.read_u16(a),
        lambda m, a: m.read_u32(a),
        lambda m, a: m.read_u64(a),
        lambda m, a: m.read_u64s(a, 2),
        lambda m, a: m.write_u8(a, 1),
        lambda m, a: m.write_u16(a, 1),
        lambda m, a: m.write_u32(a, 1),
        lambda m, a: m.write_u64(a, 1),
        lambda m, a: m.write_u64s(a, [1, 2]),
        lambda m, a: m.read(a, 16),
        lambda m, a: m.slice(a, 16),
        lambda m, a: m.write(a, b"x" * 16),
        lambda m, a: m.fill(a, 16, 0xAA),
        lambda m, a: m.copy(a, 0, 16),
        lambda m, a: m.copy(0, a, 16),
    ],
)
@pytest.mark.parametrize("where", [3 * G, FOUR_GIB - 1, 3 * G + 12345])
def test_every_accessor_refuses_the_hole(access: Any, where: int) -> None:
    mem = Memory([(0, 3 * G), (FOUR_GIB, G)])
    with pytest.raises(BusError):
        access(mem, where)


@pytest.mark.parametrize("size", [2, 4, 8])
def test_a_scalar_straddling_the_top_of_low_ram_is_refused_untouched(size: int) -> None:
    mem = Memory([(0, 3 * G), (FOUR_GIB, G)])
    write = {2: mem.write_u16, 4: mem.write_u32, 8: mem.write_u64}[size]
    with pytest.raises(BusError):
        write(3 * G - 1, (1 << (8 * size)) - 1)
    assert mem.read_u8(3 * G - 1) == 0


def test_ram_on_both_sides_of_the_hole_is_ordinary_ram() -> None:
    mem = Memory([(0, 3 * G), (FOUR_GIB, G)])
    for addr in (3 * G - 8, FOUR_GIB, FOUR_GIB + G - 8):
        mem.write_u64(addr, addr)
        assert mem.read_u64(addr) == addr
    mem.copy(FOUR_GIB + 64, 3 * G - 8, 8)
    assert mem.read_u64(FOUR_GIB + 64) == 3 * G - 8
    assert mem.total == 4 * G and mem.holes


def _reference_is_ram(ranges: list[tuple[int, int]], addr: int, size: int) -> bool:
    """An independent answer: every byte's page lies in some range."""
    if addr < 0:
        return False
    last = addr + max(size, 1) - 1
    return any(b <= addr and last < b + n for b, n in ranges)


@st.composite
def _layouts(draw: st.DrawFn) -> list[tuple[int, int]]:
    count = draw(st.integers(1, 4))
    base = draw(st.integers(0, 3)) * PAGE_SIZE
    out = []
    for _ in range(count):
        size = draw(st.integers(1, 3)) * PAGE_SIZE
        out.append((base, size))
        base += size + draw(st.integers(1, 3)) * PAGE_SIZE
    return out


@settings(max_examples=150, deadline=None)
@given(layout=_layouts(), addr=st.integers(-16, 40 * PAGE_SIZE), size=st.sampled_from([1, 2, 4, 8]))
def test_hole_checks_agree_with_an_interval_reference(
    layout: list[tuple[int, int]], addr: int, size: int
) -> None:
    mem = Memory(layout)
    expect = _reference_is_ram(layout, addr, size)
    reader = {1: mem.read_u8, 2: mem.read_u16, 4: mem.read_u32, 8: mem.read_u64}[size]
    try:
        reader(addr)
        got = True
    except BusError:
        got = False
    assert got == expect
    assert mem.contains(addr, size) == expect


def test_ram_ranges_that_overlap_are_refused() -> None:
    with pytest.raises(ValueError, match="overlaps or precedes"):
        Memory([(0, 2 * PAGE_SIZE), (PAGE_SIZE, PAGE_SIZE)])
    with pytest.raises(ValueError, match="multiples"):
        Memory([(0, 100)])
    with pytest.raises(ValueError, match="no RAM ranges"):
        Memory([])


def test_device_dma_into_the_hole_is_a_bus_fault_at_its_first_byte() -> None:
    m = build_machine({"ram": "4G", "devices": [{"kind": "edu", "bdf": "00:03.0"}]})
    res = m.dma_translate(EDU, None, False, 3 * G - 8, 16, True)
    assert res.runs == ((3 * G - 8, 8),)
    assert res.fault is not None and res.fault.reason == DMA_FAULT_BUS
    assert res.fault.addr == 3 * G
    res = m.dma_translate(EDU, None, False, FOUR_GIB, 16, False)
    assert res.runs == ((FOUR_GIB, 16),) and res.fault is None
    res = m.dma_translate(EDU, None, False, MMIO_WINDOW_BASE + 64, 8, False)
    assert res.runs == () and res.fault is not None and res.fault.addr == MMIO_WINDOW_BASE + 64


def test_a_translated_access_into_the_hole_is_cut_at_the_hole() -> None:
    """Whatever the IOMMU returns (here a unit with translation still off passes the
    address through), the memory controller refuses the hole."""
    m = build_machine(
        {
            "ram": "4G",
            "iommus": [{"kind": "vtd", "name": "dmar0", "scope": "all"}],
            "devices": [{"kind": "edu", "bdf": "00:03.0"}],
        }
    )
    res = m.dma_translate(EDU, None, False, 3 * G - 8, 16, True)
    assert res.runs == ((3 * G - 8, 8),)
    assert res.fault is not None and res.fault.reason == DMA_FAULT_BUS
    assert res.fault.addr == 3 * G
    assert m.dma_translate(EDU, None, False, FOUR_GIB, 16, False).runs == ((FOUR_GIB, 16),)
