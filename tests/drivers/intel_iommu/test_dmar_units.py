"""DMAR RMRR/ATSR/SATC structures from the machine description: the boot lines, the
RMRR identity mappings and reserved regions, the core's refusal to block an RMRR
device, and firmware bugs reported as Linux reports them."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest

from hw.bus import PciAddr
from hw.machine import Machine, MachineSpec
from iommulab.presets import EDU_BDF, PRESETS
from kernel.boot import Kernel, boot
from kernel.errno import EINVAL
from kernel.iommu.iommu import iommu_device_claim_dma_owner, iommu_get_dma_domain
from kernel.iommu.iommu_map import iommu_iova_to_phys
from kernel.iommu.iommu_resv import iommu_group_show_resv_regions
from tests.drivers.intel_iommu.conftest import pdev

RMRR_BASE, RMRR_END = 0x30_0000, 0x31_FFFF


def _machine(dmar: dict[str, Any]) -> Machine:
    d = copy.deepcopy(PRESETS["default"])
    d["ram"] = "64M"
    d["iommus"][0]["config"] = {"strict_stale": True}
    d["dmar"] = dmar
    return Machine(MachineSpec.from_dict(d))


@pytest.fixture
def booted() -> Iterator[list[Kernel]]:
    kernels: list[Kernel] = []
    yield kernels
    for k in kernels:
        k.activate()
        warns = [w.message for w in k.warnings()]
        k.shutdown()
        assert not warns


def _boot(booted: list[Kernel], dmar: dict[str, Any]) -> tuple[Kernel, Machine]:
    m = _machine(dmar)
    k = boot(m, "", builtins=("drivers.intel_iommu",), entry_points=False)
    booted.append(k)
    return k, m


def test_rmrr_atsr_satc_are_printed_and_the_rmrr_device_is_identity_mapped(
    booted: list[Kernel],
) -> None:
    k, m = _boot(
        booted,
        {
            "rmrr": [{"base": RMRR_BASE, "end": RMRR_END, "devices": [EDU_BDF]}],
            "atsr": [{"all_ports": True}],
            "satc": [{"atc_required": True, "devices": ["0000:00:02.0"]}],
        },
    )
    log = k.dmesg()
    assert "DMAR: RMRR base: 0x00000000300000 end: 0x0000000031ffff" in log
    assert "DMAR: ATSR flags: 0x1" in log
    assert "DMAR: SATC flags: 0x1" in log
    assert "No RMRR found" not in log and "No ATSR found" not in log
    assert "No SATC found" not in log
    edu = pdev(EDU_BDF)
    assert edu.iommu_group is not None
    assert iommu_group_show_resv_regions(edu.iommu_group) == (
        "0x0000000000300000 0x000000000031ffff direct\n0x00000000fee00000 0x00000000feefffff msi\n"
    )
    dom = iommu_get_dma_domain(edu)
    assert dom is not None
    for page in range(RMRR_BASE, RMRR_END + 1, 0x1000):
        assert iommu_iova_to_phys(dom, page) == page
    # the device reads its RMRR memory through the IOMMU at the same address
    m.memory.write(RMRR_BASE + 0x10, b"firmware")
    fn = m.functions[PciAddr.parse(EDU_BDF)]
    data, fault = fn.dma_read(None, False, RMRR_BASE + 0x10, 8)
    assert fault is None and bytes(data) == b"firmware"
    # firmware reserved it: the page allocator never hands it out
    for start, n in k.mm.free.items():
        assert (start + n) << 12 <= RMRR_BASE or start << 12 > RMRR_END
    # the other device has no RMRR
    dsa = pdev("0000:00:02.0")
    assert dsa.iommu_group is not None
    assert "direct" not in iommu_group_show_resv_regions(dsa.iommu_group)


def test_an_rmrr_device_cannot_be_claimed_for_user_dma(booted: list[Kernel]) -> None:
    k, _ = _boot(booted, {"rmrr": [{"base": RMRR_BASE, "end": RMRR_END, "devices": [EDU_BDF]}]})
    edu = pdev(EDU_BDF)
    with pytest.raises(EINVAL):
        iommu_device_claim_dma_owner(edu, object())
    assert (
        "Firmware has requested this device have a 1:1 IOMMU mapping, rejecting configuring "
        "the device without a 1:1 mapping. Contact your platform vendor." in k.dmesg()
    )


def test_without_sub_tables_the_missing_kinds_are_reported(booted: list[Kernel]) -> None:
    k, _ = _boot(booted, {})
    log = k.dmesg()
    assert "DMAR: No RMRR found" in log and "DMAR: No ATSR found" in log
    assert "DMAR: No SATC found" in log


def test_rmrr_in_a_ram_hole_is_a_firmware_bug_but_boot_goes_on(booted: list[Kernel]) -> None:
    k, _ = _boot(
        booted, {"rmrr": [{"base": 0x8000_0000, "end": 0x8000_FFFF, "devices": [EDU_BDF]}]}
    )
    log = k.dmesg()
    assert (
        "DMAR: [Firmware Bug]: No firmware reserved region can cover this RMRR "
        "[0x0000000080000000-0x000000008000ffff], contact BIOS vendor for fixes" in log
    )
    assert (
        "DMAR: [Firmware Bug]: Your BIOS is broken; bad RMRR "
        "[0x0000000080000000-0x000000008000ffff]" in log
    )
    dom = iommu_get_dma_domain(pdev(EDU_BDF))
    assert dom is not None and iommu_iova_to_phys(dom, 0x8000_0000) == 0x8000_0000


def test_unaligned_rmrr_is_reported_without_the_e820_line(booted: list[Kernel]) -> None:
    k, _ = _boot(booted, {"rmrr": [{"base": RMRR_BASE + 0x800, "end": RMRR_END, "devices": []}]})
    log = k.dmesg()
    assert "Your BIOS is broken; bad RMRR [0x0000000000300800-0x000000000031ffff]" in log
    assert "No firmware reserved region" not in log


def test_overlapping_rmrrs_are_merged_and_mapped_once(booted: list[Kernel]) -> None:
    _boot(
        booted,
        {
            "rmrr": [
                {"base": RMRR_BASE, "end": RMRR_END, "devices": [EDU_BDF]},
                {"base": RMRR_BASE + 0x1_0000, "end": RMRR_END + 0x1_0000, "devices": [EDU_BDF]},
            ]
        },
    )
    edu = pdev(EDU_BDF)
    assert edu.iommu_group is not None
    assert iommu_group_show_resv_regions(edu.iommu_group).splitlines()[0] == (
        "0x0000000000300000 0x000000000032ffff direct"
    )
    dom = iommu_get_dma_domain(edu)
    assert dom is not None and iommu_iova_to_phys(dom, RMRR_END + 0x1_0000) == RMRR_END + 0x1_0000


@pytest.mark.parametrize(
    ("dmar", "message"),
    [
        ({"rmrr": [{"base": 0, "devices": []}]}, "machine.dmar.rmrr[0].end"),
        ({"rmrr": [{"base": 0, "end": 1, "devices": ["zz"]}]}, "machine.dmar.rmrr[0].devices"),
        ({"atsr": [{"all_ports": 1}]}, "machine.dmar.atsr[0].all_ports"),
        ({"satc": [{"bogus": True}]}, "machine.dmar.satc[0]: unknown field(s) bogus"),
        ({"rmrr": {}}, "machine.dmar.rmrr: expected a list"),
        ({"rmrr": [1]}, "machine.dmar.rmrr[0]: expected a table"),
        ({"ivrs": []}, "machine.dmar: unknown field(s) ivrs"),
        ([], "machine.dmar: expected a table"),
        ({"satc": [{"devices": "x"}]}, "machine.dmar.satc[0].devices"),
    ],
)
def test_machine_description_errors_name_the_field(dmar: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        _machine(dmar)
