"""The reviewers' objection to "Enable PASID for DMA API users" v3, shown by the model.

v3 gave each DMA domain one PASID (``iommu_domain.pasid``) and patched VT-d's
``iommu_flush_iotlb_psi`` to flush RID2PASID plus that one PASID. Jason Gunthorpe's
review (history §3.1, §3.3): *"a single domain can be attached to multiple pasids,
all need to be flushed. This whole API isn't suitable"*, and *"the domain needs to
hold a list of all the places it needs to flush"*.

The scenario: a first-stage DMA domain (the DSA's default domain) is attached at the
DMA API's PASID and, through the generic ``iommu_attach_device_pasid``, at a second
PASID. The device reads a buffer through both, so the unit caches a translation
tagged (DID, PASID) for each. ``dma_unmap_single`` clears the PTE and syncs the
IOTLB. First-stage IOTLB entries are PASID-tagged, so only PASID-based invalidations
of the right PASIDs remove them:

* seed-v3 flushes RID2PASID and ``domain.pasid``: the second PASID's entry survives,
  and the device's next read through it is served from the stale entry — the model
  emits ``hw_vtd:stale_translation`` (or raises, with ``strict_stale``);
* upstream walks the domain's cache tags, one per attachment: every PASID is
  flushed, both reads fault (0x71, first-stage entry not present), nothing stale.
"""

from __future__ import annotations

import re

import pytest

from drivers.intel_iommu.dmar import dmar_state
from drivers.intel_iommu.domain import iommu_domain_did
from hw.bus import DmaFault
from hw.vtd import StaleTranslationError
from iommulab import checks
from iommulab.pytest_plugin import Expectations, teardown_failure
from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.iommu.dma_iommu import iommu_attach_dma_pasid, iommu_detach_dma_pasid
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from kernel.mm import GFP_KERNEL, kfree, kmalloc, memory_write, virt_to_phys
from kernel.trace import capture
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory, boot_vtd

DATA = b"still cached?" * 4
Read = tuple[bytes, DmaFault | None]


class Scenario:
    """Attach, map, read through both PASIDs, unmap; ``reread`` afterwards."""

    def __init__(self, v: Vtd, seed_v3: bool) -> None:
        self.v, self.seed_v3 = v, seed_v3
        dsa = self.dsa = v.dsa
        dom = iommu_get_domain_for_dev(dsa)
        assert dom is not None
        self.dom = dom
        if seed_v3:
            self.dma_pasid = iommu_attach_dma_pasid(dsa)
        else:
            self.dma_pasid = iommu_alloc_global_pasid(dsa)
            iommu_attach_device_pasid(dom, dsa, self.dma_pasid)
        self.other = iommu_alloc_global_pasid(dsa)
        iommu_attach_device_pasid(dom, dsa, self.other)
        buf = kmalloc(4096, GFP_KERNEL)
        assert buf is not None
        memory_write(buf, DATA)
        self.buf = buf
        self.handle = dma_map_single(dsa, buf, 4096, DMA_TO_DEVICE)
        assert not dma_mapping_error(dsa, self.handle)
        assert v.dma_read(dsa, self.handle, len(DATA), self.other) == (DATA, None)
        assert v.dma_read(dsa, self.handle, len(DATA), self.dma_pasid) == (DATA, None)
        dma_unmap_single(dsa, self.handle, 4096, DMA_TO_DEVICE)

    def reread(self, pasid: int) -> Read:
        return self.v.dma_read(self.dsa, self.handle, len(DATA), pasid)

    def finish(self) -> None:
        iommu_detach_device_pasid(self.dom, self.dsa, self.other)
        iommu_free_global_pasid(self.other)
        if self.seed_v3:
            iommu_detach_dma_pasid(self.dsa)
        else:
            iommu_detach_device_pasid(self.dom, self.dsa, self.dma_pasid)
            iommu_free_global_pasid(self.dma_pasid)
        kfree(self.buf)


def test_seed_v3_leaves_the_second_pasids_iotlb_entry_stale(make_vtd: VtdFactory) -> None:
    """seed-v3: after the unmap the DMA API's PASID faults, but the PASID attached
    through the generic op still translates from the unflushed IOTLB entry."""
    v = make_vtd("iommu.pasid_api=seed-v3", config={"strict_stale": False}, allow_stale=True)
    with capture("hw_vtd:stale_translation") as stale:
        s = Scenario(v, seed_v3=True)
        after_other = s.reread(s.other)
        after_dma = s.reread(s.dma_pasid)
    assert after_other == (DATA, None)
    assert after_dma[1] is not None and after_dma[1].reason == 0x71
    assert v.unit.stats.stale_uses == 1
    assert [(e.fields["pasid"], e.fields["addr"]) for e in stale] == [(s.other, s.handle)]
    s.finish()


def test_seed_v3_stale_use_raises_under_strict_stale(make_vtd: VtdFactory) -> None:
    """The same sequence with the model's ``strict_stale``: the read is an error."""
    v = make_vtd("iommu.pasid_api=seed-v3", allow_stale=True)
    s = Scenario(v, seed_v3=True)
    with pytest.raises(StaleTranslationError, match=f"pasid {s.other} "):
        s.reread(s.other)
    s.finish()


def test_upstream_flushes_every_pasid_the_domain_is_attached_at(make_vtd: VtdFactory) -> None:
    """upstream: the cache tags list both PASIDs; both reads fault, nothing is stale."""
    v = make_vtd()
    with capture("hw_vtd:stale_translation") as stale:
        s = Scenario(v, seed_v3=False)
        after_other = s.reread(s.other)
        after_dma = s.reread(s.dma_pasid)
    for _, fault in (after_other, after_dma):
        assert fault is not None and fault.reason == 0x71
    assert stale == [] and v.unit.stats.stale_uses == 0
    s.finish()


def test_seed_v3_failure_message_names_the_stale_use_and_its_cause() -> None:
    """The message the pytest plugin fails the seed-v3 scenario with, when nothing
    declared the stale use, read alone: the device, the PASID, the IOVA, the domain,
    the stale IOTLB entry and the current one, the dma_unmap_single call chain that
    cleared the PTE, and the PASID-based IOTLB invalidation that was never queued.
    Expected values come from the driver (DID) and the kernel (the buffer's page)."""
    k, m = boot_vtd("iommu.pasid_api=seed-v3", {"strict_stale": False})
    base = checks.baseline(k)
    v = Vtd(k, m)
    s = Scenario(v, seed_v3=True)
    assert s.reread(s.other)[1] is None  # served by the stale entry
    did = iommu_domain_did(s.dom, dmar_state().units[0])
    phys = virt_to_phys(s.buf) & ~0xFFF
    iova = s.handle & ~0xFFF
    s.finish()
    k.shutdown()
    msg = teardown_failure(checks.findings(base), Expectations())

    assert msg.startswith("iommulab: the kernel was not healthy at teardown:")
    assert "device: 00:02.0\n" in msg
    assert f"PASID: {s.other}\n" in msg
    assert f"IOVA: {s.handle:#x}\n" in msg
    assert f"domain: DID {did}\n" in msg
    assert "cache: IOTLB\n" in msg
    assert f"cached entry:  iova {iova:#x} -> {phys:#x} 4KiB level 1 r" in msg
    assert f"current entry: iova {iova:#x}: no translation (fault 0x71 FS_NOT_PRESENT)" in msg
    write = re.search(
        r"made stale by table write at \d+ ns: qword (0x[0-9a-f]+) (0x[0-9a-f]+) -> 0x0+\n", msg
    )
    assert write is not None and int(write[2], 16) & ~0xFFF == phys  # the leaf that mapped it
    chain = re.findall(r"^ +(\S+) \((\S+):\d+\)$", msg[write.end() :], re.M)
    funcs = [f for f, _ in chain]
    assert funcs[0] == "dma_pte_clear_level"  # the store that cleared the PTE
    assert funcs.index("iommu_unmap_fast") < funcs.index("dma_unmap_single")
    assert chain[funcs.index("dma_unmap_single")][1] == "kernel/dma/mapping.py"
    assert (
        "missing invalidation: PASID-based IOTLB invalidation (p_iotlb_inv_dsc, type 0x6): "
        f"G=page-selective-within-PASID DID={did} PASID={s.other} ADDR={iova:#x} AM=0"
    ) in msg
