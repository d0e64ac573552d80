"""The kernel core's dump targets: iommu-groups, pasid, dma-mappings."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from hw.machine import build_machine
from kernel.boot import Kernel, boot
from kernel.dma import debugfs as dma_debugfs
from kernel.dma.direction import DMA_TO_DEVICE
from kernel.dma.mapping import dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.iommu import debugfs as iommu_debugfs
from kernel.iommu.dma_iommu import iommu_attach_dma_pasid, iommu_detach_dma_pasid
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.pasid import iommu_attach_device_pasid, iommu_detach_device_pasid
from kernel.mm import kfree, kzalloc
from kernel.pci import pci_get_devices
from tests.conftest import TOY
from tests.kernel.conftest import EDU_BDF, PASID_BDF, pdev_at

MockKernel = Callable[[str], Kernel]

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations


def _args(k: Kernel) -> argparse.Namespace:
    return argparse.Namespace(kernel=k, format="text")


def test_core_modules_contribute_their_targets_through_the_hook() -> None:
    names = [t.name for t in iommu_debugfs.iommulab_dump_targets()]
    names += [t.name for t in dma_debugfs.iommulab_dump_targets()]
    assert names == ["iommu-groups", "pasid", "dma-mappings"]


def test_iommu_groups_lists_each_group_type_domain_and_devices(mock_kernel: MockKernel) -> None:
    k = mock_kernel("")
    text = iommu_debugfs.render_iommu_groups(_args(k))
    assert text.startswith("iommu_groups: 2 (default domain DMA, strict)")
    assert "/sys/kernel/iommu_groups/0/type: DMA" in text
    assert f"  devices/{EDU_BDF}  driver=- iommu=mock0" in text
    assert "without an IOMMU group" not in text


def test_iommu_groups_names_devices_left_without_iommu(toy_kernel: Kernel) -> None:
    text = iommu_debugfs.render_iommu_groups(_args(toy_kernel))
    assert text.splitlines()[-2:] == [
        "devices without an IOMMU group (DMA goes to RAM untranslated):",
        "  0000:00:03.0",
    ]


def test_pasid_shows_upstream_attachments_per_device(mock_kernel: MockKernel) -> None:
    k = mock_kernel("")
    dev = pdev_at(PASID_BDF)
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    iommu_attach_device_pasid(dom, dev, 7)
    text = iommu_debugfs.render_pasid(_args(k))
    iommu_detach_device_pasid(dom, dev, 7)
    assert "pasid_api: upstream" in text
    assert f"{PASID_BDF}          256       7  DMA" in text


def test_pasid_shows_the_seed_v3_dma_pasid_and_its_users(mock_kernel: MockKernel) -> None:
    k = mock_kernel("iommu.pasid_api=seed-v3")
    dev = pdev_at(PASID_BDF)
    pasid = iommu_attach_dma_pasid(dev)
    text = iommu_debugfs.render_pasid(_args(k))
    iommu_detach_dma_pasid(dev)
    assert f"global PASIDs allocated: {pasid}" in text
    assert "users=1" in text and f"{pasid:>7}  DMA" in text


def test_pasid_says_when_nothing_is_attached(mock_kernel: MockKernel) -> None:
    assert "(no PASID attached)" in iommu_debugfs.render_pasid(_args(mock_kernel("")))


def test_dma_mappings_lists_live_mappings_with_their_call_site(toy_kernel: Kernel) -> None:
    dev = pci_get_devices()[0]
    buf = kzalloc(256)
    assert buf is not None
    handle = dma_map_single(dev, buf, 256, DMA_TO_DEVICE)
    assert not dma_mapping_error(dev, handle)
    text = dma_debugfs.render_dma_mappings(_args(toy_kernel))
    dma_unmap_single(dev, handle, 256, DMA_TO_DEVICE)
    kfree(buf)
    assert "dma-api/nr_total_entries: 1" in text
    assert f"pci 0000:00:03.0 single idx 0 P=0x{handle:x}" in text
    assert "    mapped at " in text and "test_debugfs_core.py" in text


def test_dma_mappings_lists_the_errors_dma_debug_reported(
    toy_kernel: Kernel, iommulab_expect: Expectations
) -> None:
    iommulab_expect.dma_debug_error("different size")
    dev = pci_get_devices()[0]
    buf = kzalloc(256)
    assert buf is not None
    handle = dma_map_single(dev, buf, 256, DMA_TO_DEVICE)
    dma_mapping_error(dev, handle)
    dma_unmap_single(dev, handle, 128, DMA_TO_DEVICE)
    kfree(buf)
    toy_kernel.warn.warnings.clear()
    text = dma_debugfs.render_dma_mappings(_args(toy_kernel))
    assert "dma-api/error_count: 1" in text
    assert "(no live mappings)" in text
    assert "errors:\n  device driver frees DMA memory with different size" in text


def test_dma_mappings_says_when_debugging_is_off() -> None:
    k = boot(build_machine(TOY), "dma_debug=off", entry_points=False)
    try:
        assert "debugging disabled" in dma_debugfs.render_dma_mappings(_args(k))
    finally:
        k.shutdown()
