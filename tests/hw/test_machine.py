"""Machine description validation, MMIO routing, DMA routing, PCI config space and MSI-X."""

from __future__ import annotations

import re
from typing import Any

import pytest

from hw.bus import DMA_FAULT_BUS, PciAddr
from hw.edu import EDU_BUF_ADDR, EduDevice
from hw.machine import Machine, MachineSpec, build_machine
from hw.pci import PCI_CAP_ID_EXP, PCI_CAP_ID_MSIX, PCI_EXT_CAP_ID_PASID, PciFunction

EDU = PciAddr(0, 0, 3, 0)


def edu_machine(**extra: Any) -> Machine:
    desc: dict[str, Any] = {"ram": "16M", "devices": [{"kind": "edu", "bdf": "00:03.0"}]}
    desc.update(extra)
    return build_machine(desc)


def enable(m: Machine, addr: PciAddr = EDU) -> int:
    m.pci_config_write(addr, 0x04, 2, 0x6)
    fn = m.functions[addr]
    return fn.bar_base(0)


@pytest.mark.parametrize(
    ("desc", "field"),
    [
        ({}, "machine.ram"),
        ({"ram": "12Q"}, "machine.ram"),
        ({"ram": 1000}, "machine.ram"),
        ({"ram": "16M", "color": "red"}, "machine: unknown field(s) color"),
        ({"ram": "16M", "devices": [{"kind": "gpu", "bdf": "00:01.0"}]}, "devices[0].kind"),
        ({"ram": "16M", "devices": [{"kind": "edu", "bdf": "zz"}]}, "devices[0].bdf"),
        ({"ram": "16M", "devices": [{"kind": "edu"}]}, "devices[0].bdf"),
        ({"ram": "16M", "devices": ["edu"]}, "devices[0]: expected a table"),
        (
            {
                "ram": "16M",
                "devices": [{"kind": "edu", "bdf": "0:3.0"}, {"kind": "edu", "bdf": "0:3.0"}],
            },
            "used twice",
        ),
        ({"ram": "16M", "iommus": [{"kind": "amd"}]}, "iommus[0].kind"),
        ({"ram": "16M", "iommus": [{"kind": "vtd", "scope": 7}]}, "iommus[0].scope"),
        ({"ram": "16M", "iommus": [{"kind": "vtd", "scope": ["x"]}]}, "iommus[0].scope"),
        ({"ram": "16M", "iommus": [{"kind": "vtd", "base": "high"}]}, "iommus[0].base"),
        ({"ram": "16M", "iommus": [{"kind": "vtd"}, {"kind": "vtd"}]}, "only one unit"),
        ({"ram": "16M", "name": 5}, "machine.name"),
        ([], "machine: expected a table"),
    ],
)
def test_malformed_description_names_the_field(desc: Any, field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        MachineSpec.from_dict(desc)


def test_sizes_accept_units() -> None:
    assert MachineSpec.from_dict({"ram": "2MiB"}).ram_size == 2 << 20
    assert MachineSpec.from_dict({"ram": "0x10000"}).ram_size == 0x10000


def test_config_space_identifies_the_device() -> None:
    m = edu_machine()
    assert m.pci_config_read(EDU, 0, 4) == 0x11E8_1234
    assert m.pci_config_read(PciAddr(0, 0, 4, 0), 0, 4) == 0xFFFF_FFFF


def test_bar_sizing_protocol_reports_the_size() -> None:
    m = edu_machine()
    base = m.pci_config_read(EDU, 0x10, 4)
    m.pci_config_write(EDU, 0x10, 4, 0xFFFF_FFFF)
    assert m.pci_config_read(EDU, 0x10, 4) == 0xFFF0_0000
    m.pci_config_write(EDU, 0x10, 4, base)


def test_capability_lists_are_walkable() -> None:
    m = edu_machine()
    fn = m.functions[EDU]
    fn.add_pasid_cap(width=20)
    ids = []
    pos = m.pci_config_read(EDU, 0x34, 1)
    while pos:
        ids.append(m.pci_config_read(EDU, pos, 1))
        pos = m.pci_config_read(EDU, pos + 1, 1)
    assert ids == [PCI_CAP_ID_EXP, PCI_CAP_ID_MSIX]
    assert fn.find_ext_cap(PCI_EXT_CAP_ID_PASID) == 0x100
    cap = m.pci_config_read(EDU, 0x104, 2)
    assert (cap >> 8) & 0x1F == 20 and cap & 0x4


def test_read_only_config_bits_ignore_writes() -> None:
    m = edu_machine()
    m.pci_config_write(EDU, 0, 4, 0)
    assert m.pci_config_read(EDU, 0, 2) == 0x1234


def test_mmio_is_routed_to_the_decoding_device_once_memory_is_enabled() -> None:
    m = edu_machine()
    base = m.functions[EDU].bar_base(0)
    assert m.mmio_read(base, 4) == 0xFFFF_FFFF
    assert m.master_aborts[-1].addr == base
    enable(m)
    assert m.mmio_read(base, 4) == 0x0100_00ED
    m.mmio_write(base + 4, 4, 0x0F0F_0000)
    assert m.mmio_read(base + 4, 4) == 0xF0F0_FFFF


def test_a_decoded_address_stops_decoding_when_its_bar_is_disabled() -> None:
    """The machine remembers which region decoded an address; rebuilding the decoder
    (memory decode off, a BAR moved) forgets it."""
    m = edu_machine()
    base = enable(m)
    assert m.mmio_read(base, 4) == 0x0100_00ED
    m.pci_config_write(EDU, 0x04, 2, 0x4)  # bus master only: memory decode off
    assert m.mmio_read(base, 4) == 0xFFFF_FFFF
    assert m.master_aborts[-1].addr == base


def test_many_decoded_addresses_keep_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the number of addresses it remembers, the machine starts over and still
    routes every access."""
    import hw.machine

    monkeypatch.setattr(hw.machine, "_DECODED_MAX", 2)
    m = edu_machine()
    base = enable(m)
    for _ in range(2):
        assert m.mmio_read(base, 4) == 0x0100_00ED
        m.mmio_write(base + 4, 4, 0x0F0F_0000)
        assert m.mmio_read(base + 4, 4) == 0xF0F0_FFFF
    assert not m.master_aborts


def test_mmio_to_unmapped_address_reads_all_ones_and_drops_writes() -> None:
    m = edu_machine()
    assert m.mmio_read(0xDEAD_0000, 8) == (1 << 64) - 1
    m.mmio_write(0xDEAD_0000, 4, 7)
    assert [(a.addr, a.write) for a in m.master_aborts] == [
        (0xDEAD_0000, False),
        (0xDEAD_0000, True),
    ]


def test_device_dma_without_iommu_reaches_ram() -> None:
    m = edu_machine()
    base = enable(m)
    m.memory.write(0x2000, b"payload!")
    for off, val in ((0x80, 0x2000), (0x88, EDU_BUF_ADDR), (0x90, 8), (0x98, 1)):
        m.mmio_write(base + off, 8, val)
    m.clock.advance(10_000)
    edu = m.functions[EDU]
    assert isinstance(edu, EduDevice) and bytes(edu.buffer[:8]) == b"payload!"
    for off, val in ((0x80, EDU_BUF_ADDR), (0x88, 0x3000), (0x90, 8), (0x98, 3)):
        m.mmio_write(base + off, 8, val)
    m.clock.advance(10_000)
    assert m.memory.read(0x3000, 8) == b"payload!"


def test_dma_outside_ram_faults_at_the_first_bad_byte() -> None:
    m = edu_machine()
    res = m.dma_translate(EDU, None, False, m.memory.size - 4, 8, True)
    assert res.runs == ((m.memory.size - 4, 4),)
    assert res.fault is not None and res.fault.reason == DMA_FAULT_BUS
    assert res.fault.addr == m.memory.size
    assert res.length == 4


def test_dma_needs_bus_mastering() -> None:
    m = edu_machine()
    fn = m.functions[EDU]
    data, fault = fn.dma_read(None, False, 0, 16)
    assert data == b"" and fault is not None and "bus master" in fault.detail


def test_msix_is_delivered_when_unmasked_and_held_pending_when_masked() -> None:
    m = edu_machine()
    base = enable(m)
    got: list[tuple[int, int]] = []
    m.set_msi_sink(lambda a, d: got.append((a, d)))
    fn = m.functions[EDU]
    m.mmio_write(base + 0x1000, 4, 0xFEE0_0000)
    m.mmio_write(base + 0x1008, 4, 0x41)
    m.pci_config_write(EDU, fn.msix_cap + 2, 2, 0x8000)
    m.mmio_write(base + 0x60, 4, 1)  # raise while entry still masked
    assert got == [] and m.mmio_read(base + 0x1800, 8) == 1
    m.mmio_write(base + 0x100C, 4, 0)  # unmask: pending message goes out
    assert got == [(0xFEE0_0000, 0x41)]
    m.mmio_write(base + 0x60, 4, 1)
    assert len(got) == 2 and m.mmio_read(base + 0x24, 4) == 1


def test_msi_without_a_sink_is_kept_as_lost() -> None:
    m = edu_machine()
    m.msi(0xFEE0_0000, 0x30)
    assert m.lost_msis == [(0xFEE0_0000, 0x30)]


def test_portal_store_to_a_device_without_portals_is_dropped() -> None:
    m = edu_machine()
    base = enable(m)
    m.movdir64b(base + 0x40, bytes(64))
    assert not m.enqcmds(base + 0x40, bytes(64))
    assert not m.enqcmd(base + 0x40, bytes(64), 5)
    assert not m.enqcmds(base + 0x41, bytes(64))
    assert m.master_aborts[-1].addr == base + 0x41


def test_enqcmd_replaces_pasid_and_clears_privilege() -> None:
    class Portal(PciFunction):
        vendor_id, device_id = 0x8086, 0x0B25

        def __init__(self, addr: PciAddr, config: object = None) -> None:
            super().__init__(addr)
            self.add_bar(2, 0x1000)
            self.got: list[bytes] = []

        def portal_write(self, bar: int, offset: int, data: bytes, enqcmd: bool) -> bool:
            self.got.append(data)
            return True

    m = edu_machine()
    dev = Portal(PciAddr(0, 0, 5, 0))
    dev.machine = m
    m.functions[dev.addr] = dev
    dev.config[0x10 + 8 : 0x10 + 12] = (0xD000_0000).to_bytes(4, "little")
    m.pci_config_write(dev.addr, 4, 2, 0x2)
    desc = (0x8000_0000 | 0x123).to_bytes(4, "little") + bytes(60)
    assert m.enqcmd(0xD000_0000, desc, 0x456)
    assert int.from_bytes(dev.got[-1][:4], "little") == 0x456


def test_edu_factorial_and_liveness() -> None:
    m = edu_machine()
    base = enable(m)
    m.mmio_write(base + 0x08, 4, 5)
    assert m.mmio_read(base + 0x20, 4) & 1
    m.clock.advance(1000)
    assert m.mmio_read(base + 0x08, 4) == 120
    assert m.mmio_read(base + 0x20, 4) & 1 == 0


def test_msix_table_write_past_its_end_is_dropped_and_never_grows_the_table() -> None:
    m = edu_machine()
    base = enable(m)
    fn = m.functions[EDU]
    size = 16 * fn.msix_vectors
    last = base + 0x1000 + size - 4  # the last entry's Vector Control dword
    m.mmio_write(last, 8, 0xFFFF_FFFF_FFFF_FFFF)  # a QWORD reaching 4 bytes past the table
    assert len(fn._msix_entries) == size
    assert m.mmio_read(last, 4) == 1  # still masked, as reset left it


def test_misaligned_msix_table_accesses_are_dropped_or_read_all_ones() -> None:
    m = edu_machine()
    base = enable(m)
    fn = m.functions[EDU]
    m.mmio_write(base + 0x1000, 4, 0xFEE0_0000)
    m.mmio_write(base + 0x1002, 4, 0x1234_5678)  # spans Message Address and its neighbour
    m.mmio_write(base + 0x1008, 2, 0x41)  # a WORD write to Message Data
    assert m.mmio_read(base + 0x1000, 4) == 0xFEE0_0000
    assert m.mmio_read(base + 0x1004, 4) == 0
    assert m.mmio_read(base + 0x1008, 4) == 0
    assert m.mmio_read(base + 0x1002, 4) == 0xFFFF_FFFF
    assert m.mmio_read(base + 0x1004, 8) == 0xFFFF_FFFF_FFFF_FFFF  # QWORD not 8-aligned
    assert len(fn._msix_entries) == 16 * fn.msix_vectors


def test_an_aligned_qword_write_sets_both_msix_address_dwords() -> None:
    m = edu_machine()
    base = enable(m)
    m.mmio_write(base + 0x1000, 8, 0x1_FEE0_1000)
    assert m.mmio_read(base + 0x1000, 4) == 0xFEE0_1000
    assert m.mmio_read(base + 0x1004, 4) == 1
