"""The system PASID against the mock IOMMU vendor, in both PASID API generations:
how it is attached, what WQCFG/GENCFG/MSIX_PERM and the descriptors carry, the
shared WQ with ENQCMDS, and the driver bugs the stack must catch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from drivers.idxd.init import idxd_devices
from drivers.idxd.sysfs import idxd_disable
from hw.dsa import registers as hwregs
from kernel.boot import Kernel, current_kernel
from kernel.dma.direction import DMA_FROM_DEVICE
from kernel.dma.dmaengine import (
    DMA_COMPLETE,
    DMA_TRANS_WRITE_FAILED,
    dma_release_channel,
    dma_request_chan,
    dmaengine_prep_dma_memcpy,
    dmaengine_submit,
)
from kernel.dma.mapping import dma_unmap_single
from kernel.idr import ida_is_empty
from kernel.io import enqcmds, ioremap
from kernel.iommu.iommu import iommu_get_domain_for_dev, iommu_state
from kernel.pci import pci_resource_start
from kernel.trace import capture
from kernel.uapi.idxd import (
    DSA_COMP_PAGE_FAULT_NOBOF,
    DSA_COMP_STATUS_WRITE,
    DSA_OPCODE_NOOP,
    DsaHwDesc,
)
from tests.drivers.idxd.client import MemcpyClient
from tests.drivers.idxd.conftest import Boot, dsa0, dsa_hw, mock_spec, take_warnings

APIS = ["upstream", "seed-v3"]

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations


def boot_api(make_kernel: Boot, api: str, extra: str = "") -> Kernel:
    return make_kernel(mock_spec(), f"iommu.pasid_api={api} {extra}")


def chans() -> tuple[MemcpyClient, MemcpyClient]:
    idxd = dsa0()
    d, s = idxd.wqs[0].dma_chan, idxd.wqs[1].dma_chan
    assert d is not None and s is not None
    return (
        MemcpyClient(dma_request_chan(None, d.name)),
        MemcpyClient(dma_request_chan(None, s.name)),
    )


@pytest.mark.parametrize("api", APIS)
def test_system_pasid_points_at_the_default_domain(make_kernel: Boot, api: str) -> None:
    boot_api(make_kernel, api)
    idxd = dsa0()
    dom = iommu_get_domain_for_dev(idxd.pdev)
    assert idxd.pasid_enabled and idxd.pasid >= 1
    if api == "upstream":
        assert idxd.pdev.iommu_group.pasid_array[idxd.pasid] is dom
    else:
        assert dom is not None and dom.pasid == idxd.pasid


@pytest.mark.parametrize("api", APIS)
def test_wqcfg_carries_pasid_per_wq_type(make_kernel: Boot, api: str) -> None:
    k = boot_api(make_kernel, api)
    hw, idxd = dsa_hw(k), dsa0()
    dwq, swq = hw.wqs[0], hw.wqs[1]
    assert (dwq.pasid_en, dwq.pasid, dwq.dedicated) == (True, idxd.pasid, True)
    assert (swq.pasid_en, swq.pasid, swq.dedicated) == (True, 0, False)
    assert not dwq.priv and not swq.priv
    assert hw.regs.field("GENCFG", hwregs.GENCFG.user_int_en) == 1
    perm = hw.regs["MSIX_PERM1"]
    assert hwregs.MSIX_PERM.pasid_en.get(perm) == 1
    assert hwregs.MSIX_PERM.pasid.get(perm) == idxd.pasid


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("size", [4096, 1 << 20])
def test_memcpy_on_dedicated_and_shared_wq(make_kernel: Boot, api: str, size: int) -> None:
    boot_api(make_kernel, api)
    for client in chans():
        assert client.memcpy(size) == (DMA_COMPLETE, True)


@pytest.mark.parametrize("api", APIS)
def test_descriptors_carry_the_system_pasid(make_kernel: Boot, api: str) -> None:
    boot_api(make_kernel, api)
    d, s = chans()
    with capture("idxd:submit") as events:
        d.memcpy(4096)
        s.memcpy(4096)
    pasid = dsa0().pasid
    assert [(e.fields["pasid"], e.fields["priv"], e.fields["insn"]) for e in events] == [
        (pasid, 0, "movdir64b"),
        (pasid, 0, "enqcmds"),
    ]


def test_kernel_priv_restores_privileged_2022_kernel_wqs(make_kernel: Boot) -> None:
    k = boot_api(make_kernel, "seed-v3", "idxd.kernel_priv=1")
    hw = dsa_hw(k)
    assert hw.wqs[0].priv and hw.wqs[1].priv
    assert hw.regs.field("GENCFG", hwregs.GENCFG.user_int_en) == 0


@pytest.mark.parametrize("api", APIS)
def test_remove_detaches_and_frees_the_pasid(make_kernel: Boot, api: str) -> None:
    k = boot_api(make_kernel, api)
    pdev, hw = dsa0().pdev, dsa_hw(k)
    dom = iommu_get_domain_for_dev(pdev)
    st = iommu_state()
    k.shutdown()
    assert ida_is_empty(st.global_pasid_ida)
    assert dom is not None and dom.pasid == 0 and not dom.pasid_users
    assert hw.regs.field("GENCFG", hwregs.GENCFG.user_int_en) == 0
    assert "system PASID 1 detached" in k.dmesg()


def test_sva_off_means_no_pasid_and_no_shared_wq(make_kernel: Boot) -> None:
    boot_api(make_kernel, "upstream", "idxd.sva=0")
    idxd = dsa0()
    assert not idxd.pasid_enabled
    assert [w.state for w in idxd.wqs[:2]] == ["enabled", "disabled"]


def test_no_pasid_capability_on_the_iommu_falls_back_to_rid_dma(make_kernel: Boot) -> None:
    k = make_kernel(mock_spec(pasid_width=0), "")
    assert "No in-kernel DMA with PASID" in k.dmesg()
    d = MemcpyClient(dma_request_chan(None, "memcpy"))
    assert d.memcpy(4096) == (DMA_COMPLETE, True)


def test_enqcmds_retry_exhaustion_returns_eagain(make_kernel: Boot) -> None:
    boot_api(make_kernel, "upstream")
    _, s = chans()
    idxd = dsa0()
    wq = idxd.wqs[1]
    portal = ioremap(pci_resource_start(idxd.pdev, 2) + 1 * 0x4000 + 0x1000, 0x1000)
    noop = DsaHwDesc(opcode=DSA_OPCODE_NOOP, pasid=idxd.pasid).to_bytes()
    while enqcmds(portal, noop) == 0:  # another submitter fills the shared WQ
        pass
    src = s.alloc(4096, 1)
    tx = dmaengine_prep_dma_memcpy(s.chan, src - 0, src, 4096, 1)
    assert tx is not None
    assert dmaengine_submit(tx) == -11
    assert wq.enqcmds_retried == wq.enqcmds_retries
    assert wq.in_flight == 0
    s.free(src, 4096)


def test_buffer_unmapped_early_completes_with_a_page_fault(make_kernel: Boot) -> None:
    boot_api(make_kernel, "upstream")
    d, _ = chans()
    c = d.start(1 << 20)
    dma_unmap_single(d.dev, c.dst_dma, c.size, DMA_FROM_DEVICE)  # driver bug: too early
    d.wait(c)
    assert c.result is not None and c.result.result == DMA_TRANS_WRITE_FAILED
    assert c.desc is not None and c.desc.completion is not None
    assert c.desc.completion.status == DSA_COMP_PAGE_FAULT_NOBOF | DSA_COMP_STATUS_WRITE
    assert c.result.residue == c.size - c.desc.completion.bytes_completed
    assert (
        "memcpy failed: status 0x83 (DSA_COMP_PAGE_FAULT_NOBOF (write))" in current_kernel().dmesg()
    )
    from kernel.dma.direction import DMA_TO_DEVICE

    dma_unmap_single(d.dev, c.src_dma, c.size, DMA_TO_DEVICE)
    d.free(c.src, c.size)
    d.free(c.dst, c.size)


def test_forgotten_unmap_is_reported_by_dma_debug_at_unbind(
    make_kernel: Boot, iommulab_expect: Expectations
) -> None:
    iommulab_expect.dma_debug_error("pending DMA allocations")
    iommulab_expect.leak()  # the buffer the forgotten mapping still covers
    k = boot_api(make_kernel, "upstream")
    d, _ = chans()
    c = d.start(4096)
    d.wait(c)  # ... and never dma_unmap_single()
    dma_release_channel(d.chan)
    idxd_disable(dsa0())
    k.shutdown()
    warned = take_warnings(k)
    assert "device driver has pending DMA allocations while released from device" in warned[0]
    assert "[count=2]" in warned[0]
    assert idxd_devices() == []
