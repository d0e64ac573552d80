"""The ``server`` preset: RAM above 4 GiB, eight DSAs split across VT-d units by scope."""

from __future__ import annotations

from drivers.idxd.init import idxd_devices
from hw.bus import PciAddr
from hw.machine import FOUR_GIB, Machine
from iommulab.presets import SERVER_CMDLINE, SERVER_DSA_BDFS, preset
from kernel.boot import boot
from kernel.pci import pci_get_devices


def test_server_ram_lies_mostly_above_the_pci_hole() -> None:
    spec = preset("server")
    assert spec.ram_size == 256 << 30
    assert spec.ram_layout[-1][0] == FOUR_GIB
    assert sum(n for b, n in spec.ram_layout if b >= FOUR_GIB) > 250 << 30


def test_each_dsa_is_behind_the_drhd_whose_scope_lists_it() -> None:
    m = Machine(preset("server"))
    owners = [m.iommu_for(PciAddr.parse(b)) for b in SERVER_DSA_BDFS]
    assert [m.iommus[f"dmar{i // 2}"] for i in range(8)] == owners
    assert m.iommu_for(PciAddr.parse("0000:00:03.0")) is m.iommus["dmar4"]
    scoped = [u for u in m.firmware.iommus if not u.include_pci_all]
    assert len(scoped) == 4 and all(len(u.device_scope) == 2 for u in scoped)


def test_server_boots_with_64_kernel_wqs_each_dsa_in_its_units_group() -> None:
    k = boot(Machine(preset("server")), SERVER_CMDLINE, entry_points=False)
    try:
        devs = idxd_devices()
        assert len(devs) == 8
        assert all(d.pasid_enabled for d in devs)
        assert sum(wq.dma_chan is not None for d in devs for wq in d.wqs) == 64
        names = {p.addr: p for p in pci_get_devices()}
        assert set(map(PciAddr.parse, SERVER_DSA_BDFS)) <= set(names)
        assert not k.warnings()
    finally:
        k.shutdown()
