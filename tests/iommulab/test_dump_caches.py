"""``iommulab dump vtd|smmuv3 --caches``: the entries the units' caches hold, with
their tags, after a device did DMA; a unit or cache that does not exist is an error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iommulab import cli
from tests.iommulab.conftest import ScenarioFile

EDU_DMA = '''
from hw.bus import PciAddr
from kernel.dma.direction import DMA_TO_DEVICE
from kernel.dma.mapping import dma_map_single
from kernel.mm import kzalloc, virt_to_phys
from kernel.pci import pci_enable_device, pci_get_devices, pci_set_master

MACHINE = "{machine}"


def scenario(kernel):
    """The edu device reads a mapped buffer: one IOTLB fill, left cached."""
    edu = next(d for d in pci_get_devices() if d.vendor == 0x1234)
    pci_enable_device(edu)
    pci_set_master(edu)
    buf = kzalloc(4096)
    handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
    fn = kernel.machine.functions[PciAddr.parse(str(edu.addr))]
    data, fault = fn.dma_read(None, False, handle + 0x40, 64)
    assert fault is None
    with open({out!r}, "w") as f:
        f.write(f"{{handle:#x}} {{virt_to_phys(buf):#x}}")
'''


def _dma_then_dump(
    scenario_file: ScenarioFile, tmp_path: Path, machine: str, *args: str
) -> tuple[int, int]:
    """Run the edu DMA scenario on ``machine``, then ``dump ARGS``; the IOVA and the
    buffer's physical address the scenario saw."""
    out = tmp_path / "dma.txt"
    scen = scenario_file(EDU_DMA.format(machine=machine, out=str(out)))
    rc = cli.main(["dump", *args, "--scenario", str(scen)])
    assert rc == 0
    iova, phys = (int(x, 16) for x in out.read_text().split())
    return iova, phys


def test_dump_vtd_caches_lists_the_iotlb_entry_a_dma_created(
    scenario_file: ScenarioFile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    iova, phys = _dma_then_dump(scenario_file, tmp_path, "default", "vtd", "--caches")
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == "dmar0: caches"
    at = lines.index("  IOTLB: 1 entries")
    entry = re.fullmatch(
        r"    did=(\d+) pasid=(\S+) iova (0x[0-9a-f]+) -> (0x[0-9a-f]+) 4KiB level 1 (\S+)",
        lines[at + 1],
    )
    assert entry is not None, lines[at + 1]
    assert (int(entry[3], 16), int(entry[4], 16)) == (iova, phys)
    assert entry[2] == "0"  # the default domain's first-stage tag: RID_PASID
    assert entry[5].startswith("r-")  # DMA_TO_DEVICE: read-only
    # The same DID tags the PASID-cache entry the request selected it through.
    assert f"    sid=00:03.0 pasid=0 did={entry[1]} pgtt=1 first-stage" in text
    assert "    sid=00:03.0 scalable dir=" in text
    assert "  device TLB: 0 entries" in text


def test_dump_vtd_caches_of_one_cache(
    scenario_file: ScenarioFile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _dma_then_dump(
        scenario_file, tmp_path, "default", "vtd", "--caches", "iotlb", "--unit", "dmar0"
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["dmar0: caches", "  IOTLB: 1 entries"] and len(lines) == 3


def test_dump_smmuv3_caches_lists_the_tlb_entry_a_dma_created(
    scenario_file: ScenarioFile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    iova, phys = _dma_then_dump(scenario_file, tmp_path, "smmuv3", "smmuv3", "--caches")
    text = capsys.readouterr().out
    assert text.startswith("smmu0: caches\n  STE cache: 1 entries\n    sid=0x18 config=stage-1")
    tlb = re.search(
        r"  TLB: 1 entries\n    vmid=0 asid=(\d+) iova (0x[0-9a-f]+) -> (0x[0-9a-f]+) 4KiB", text
    )
    assert tlb is not None, text
    assert (int(tlb[2], 16), int(tlb[3], 16)) == (iova, phys)
    assert f"    sid=0x18 ssid=0 asid={tlb[1]} ttb0=" in text


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["vtd", "--caches", "tlb"], "--caches tlb: no such vtd cache (caches: context, pasid, "),
        (["vtd", "--caches", "--unit", "dmar7"], "--unit dmar7: no such vtd unit (units: dmar0)"),
        (["vtd", "--unit", "dmar0"], "--unit selects a unit for --caches; add --caches"),
        (["smmuv3", "--caches"], "no smmuv3 unit on this machine"),
    ],
)
def test_dump_caches_of_what_does_not_exist_is_a_one_line_error(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["dump", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"iommulab: error: {error}") and err.count("\n") == 1
