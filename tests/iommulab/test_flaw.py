"""The flaw that motivated the series, shown: under ``kernel-sva`` a buffer the DSA
used is vfree'd, its page given to another owner, its address reused, and the next
descriptor through that address reads the other owner's bytes through a stale
IOTLB entry; the same driver-level sequence is safe under ``seed-v3`` and
``upstream``. SMMUv3 refuses the supervisor bind as 5.15's core did for a driver
without ``sva_bind`` (-ENODEV), and the client falls back to the DMA API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from drivers.idxd.init import idxd_devices
from hw.dsa import registers as hwregs
from hw.machine import Machine
from hw.vtd.unit import VtdUnit
from iommulab import cli
from iommulab.flaw import NEW, SECRET, copy_to, vfree_sequence
from iommulab.presets import preset
from kernel.boot import boot, current_kernel
from kernel.dma.dmaengine import dma_release_channel, dma_request_chan
from kernel.mm import (
    GFP_KERNEL,
    PAGE_OFFSET,
    free_page,
    get_zeroed_page,
    memory_read,
    memory_write,
)
from tests.drivers.idxd.conftest import dsa_hw

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations, KernelChecks


def _boot(checks: KernelChecks, machine: str, api: str) -> None:
    checks.track(boot(Machine(preset(machine)), f"iommu.pasid_api={api}"))


def test_kernel_sva_descriptors_carry_kernel_addresses_and_priv(
    iommulab_checks: KernelChecks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request the DSA makes for a copy (source, destination, completion
    record) is a supervisor request tagged with the system PASID at a kernel
    virtual address: nothing was mapped with the DMA API."""
    _boot(iommulab_checks, "default", "kernel-sva")
    hw = dsa_hw(current_kernel())
    dwq, swq = hw.wqs[0], hw.wqs[1]
    assert (dwq.pasid_en, dwq.priv, swq.pasid_en, swq.priv) == (True, True, True, True)
    assert hw.regs.field("GENCFG", hwregs.GENCFG.user_int_en) == 0
    seen: list[tuple[int | None, bool, int]] = []
    orig = VtdUnit.translate_ex

    def spy(
        self: VtdUnit, rid: int, pasid: int | None, priv: bool, addr: int, *a: object
    ) -> object:
        seen.append((pasid, priv, addr))
        return orig(self, rid, pasid, priv, addr, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(VtdUnit, "translate_ex", spy)
    (idxd,) = idxd_devices()
    chan = dma_request_chan(None, idxd.wqs[0].dma_chan.name)  # type: ignore[union-attr]
    src, dst = get_zeroed_page(GFP_KERNEL), get_zeroed_page(GFP_KERNEL)
    assert src is not None and dst is not None
    memory_write(src, b"kernel virtual")
    assert copy_to(chan, dst, src, 256) and memory_read(dst, 14) == b"kernel virtual"
    dma_release_channel(chan)
    free_page(src)
    free_page(dst)
    assert seen and all(p == idxd.pasid and priv and a >= PAGE_OFFSET for p, priv, a in seen)


def test_kernel_sva_reads_another_owners_page_through_a_stale_iotlb_entry(
    iommulab_checks: KernelChecks, iommulab_expect: Expectations
) -> None:
    iommulab_expect.stale()
    _boot(iommulab_checks, "default", "kernel-sva")
    r = vfree_sequence()
    assert r.kva and r.first_copy_ok and r.same_address and r.frame_reused
    assert r.read == SECRET and r.stale_uses >= 1
    assert r.leaked and r.shown


@pytest.mark.parametrize("api", ["upstream", "seed-v3"])
def test_the_same_sequence_is_safe_through_the_dma_api(
    iommulab_checks: KernelChecks, api: str
) -> None:
    _boot(iommulab_checks, "default", api)
    r = vfree_sequence()
    assert not r.kva and r.first_copy_ok and r.same_address and r.frame_reused
    assert r.read == NEW and r.stale_uses == 0 and not r.shown


def test_smmuv3_refuses_the_supervisor_bind(iommulab_checks: KernelChecks) -> None:
    k = boot(Machine(preset("smmuv3")), "iommu.pasid_api=kernel-sva")
    iommulab_checks.track(k)
    (idxd,) = idxd_devices()
    assert not idxd.pasid_enabled and idxd.sva is None
    assert "iommu sva bind failed: -19" in k.dmesg()
    r = vfree_sequence()
    assert not r.kva and r.read == NEW and r.stale_uses == 0


def test_demo_reports_the_flaw_as_shown(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--pasid-api", "kernel-sva", "--sizes", "4K,64K"]) == 0
    out = capsys.readouterr().out
    assert "system PASID 1 (kernel-sva API)" in out
    assert "sre=1 (supervisor requests: init_mm)" in out
    assert "memcpy     65536 bytes on wq0.1 (shared): ok" in out
    assert "the second copy read the secret" in out
    assert "result: PASS: the flaw was shown" in out


def test_demo_fails_where_the_flaw_cannot_be_shown(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(["demo", "--machine", "smmuv3", "--pasid-api", "kernel-sva", "--sizes", "4K"]) == 1
    )
    assert "result: FAIL: the flaw was not shown" in capsys.readouterr().out
