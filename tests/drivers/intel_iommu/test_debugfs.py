"""``iommulab dump vtd``: the dmar_translation_struct text view and the DOT graph."""

from __future__ import annotations

import argparse

import pytest

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.debugfs import dmar_translation_dot, dmar_translation_struct, render
from iommulab import cli
from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.pasid import iommu_attach_device_pasid, iommu_detach_device_pasid
from kernel.mm import GFP_KERNEL, kfree, kmalloc
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory

HEADER = "B.D.F\tRoot_entry\t\t\t\tContext_entry\t\t\t\tPASID\tPASID_table_entry"


def _rows(text: str) -> list[list[str]]:
    return [ln.split("\t") for ln in text.splitlines() if ln[:2].isdigit() and ":" in ln[:3]]


def test_text_lists_every_present_pasid_entry(vtd: Vtd) -> None:
    dom = iommu_get_domain_for_dev(vtd.dsa)
    assert dom is not None
    iommu_attach_device_pasid(dom, vtd.dsa, 70)
    text = dmar_translation_struct()
    assert text.startswith("IOMMU dmar0: Root Table Address: 0x")
    assert HEADER in text
    rows = _rows(text)
    assert [(r[0], r[3].strip()) for r in rows] == [
        ("00:02.0", "0"),
        ("00:02.0", "70"),
        ("00:03.0", "0"),
    ]
    assert rows[1][4].count(":") == 2
    iommu_detach_device_pasid(dom, vtd.dsa, 70)


def test_device_and_pasid_filters_add_the_page_table(vtd: Vtd) -> None:
    edu = vtd.edu
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
    assert not dma_mapping_error(edu, handle)
    text = dmar_translation_struct("0000:00:03.0", 0)
    assert [r[0] for r in _rows(text)] == ["00:03.0"]
    assert "Device 00:03.0 PASID 0 @0x" in text
    assert "IOVA_PFN\t\tPML5E\t\t\tPML4E\t\t\tPDPE\t\t\tPDE\t\t\tPTE" in text
    assert f"0x{handle >> 12:013x} |\t0x{0:016x}" in text
    assert _rows(dmar_translation_struct("00:03.0", 5)) == []
    dma_unmap_single(edu, handle, 4096, DMA_TO_DEVICE)
    kfree(buf)


def test_legacy_mode_rows_have_no_pasid(make_vtd: VtdFactory) -> None:
    make_vtd("intel_iommu=sm_off")
    text = dmar_translation_struct("00:03.0")
    (row,) = _rows(text)
    zero = "0x" + "0" * 16
    assert row[3].strip() == "-1" and row[4] == f"{zero}:{zero}:{zero}"
    assert "Device 00:03.0 RID @0x" in text


def test_pass_through_entries_have_no_page_table(make_vtd: VtdFactory) -> None:
    make_vtd("iommu.passthrough=1")
    assert "Device 00:03.0 PASID 0: pass-through" in dmar_translation_struct("00:03.0")
    assert "-> passthrough;" in dmar_translation_dot("00:03.0")


def test_unit_without_translation_says_so(vtd: Vtd) -> None:
    vtd.machine.mmio_write(0xFED9_0000 + ir.DMAR_GCMD_REG, 4, ir.DMA_GCMD_QIE)
    vtd.machine.clock.advance(1000)
    assert dmar_translation_struct().strip() == "DMA Remapping is not enabled on dmar0"
    vtd.machine.mmio_write(0xFED9_0000 + ir.DMAR_GCMD_REG, 4, ir.DMA_GCMD_QIE | ir.DMA_GCMD_TE)
    vtd.machine.clock.advance(1000)


def test_dot_draws_a_table_shared_by_rid_and_pasid_once(vtd: Vtd) -> None:
    dsa = vtd.dsa
    dom = iommu_get_domain_for_dev(dsa)
    assert dom is not None
    iommu_attach_device_pasid(dom, dsa, 3)
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    handle = dma_map_single(dsa, buf, 4096, DMA_TO_DEVICE)
    assert not dma_mapping_error(dsa, handle)
    dot = render(argparse.Namespace(format="dot", device="00:02.0", pasid=None))
    assert dot.startswith("digraph vtd {") and dot.rstrip().endswith("}")
    assert 'dmar0_root -> ctx_dmar0_00_10 [label="bus 00"];' in dot
    top = dot.split("pasid_dmar0_00_10_0 -> ")[1].split(";")[0]
    assert f"pasid_dmar0_00_10_3 -> {top};" in dot
    assert dot.count(f'  {top} [label="L4 table') == 1
    assert "(4K)" in dot
    dma_unmap_single(dsa, handle, 4096, DMA_TO_DEVICE)
    iommu_detach_device_pasid(dom, dsa, 3)
    kfree(buf)


def test_render_defaults_to_text(vtd: Vtd) -> None:
    assert render(argparse.Namespace()).startswith("IOMMU dmar0")


def test_bad_device_is_an_input_error(vtd: Vtd) -> None:
    with pytest.raises(ValueError, match="expected"):
        dmar_translation_struct("nonsense")


def test_cli_dump_uses_the_driver_view(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dump", "vtd", "--device", "00:03.0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("IOMMU dmar0: Root Table Address")
    assert "Device 00:03.0 PASID 0 @0x" in captured.out
    assert captured.err == ""
