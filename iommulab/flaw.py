"""The flaw that motivated "Enable PASID for DMA API users", as one driver-level
sequence that runs under every PASID API generation (``iommulab demo --pasid-api
kernel-sva``, docs/why-the-series-exists.md, tests/iommulab/test_flaw.py).

A kernel client of the DSA copies out of a ``vmalloc`` buffer, ``vfree``s it, and
the kernel hands the freed page to someone else (here: a page holding a secret).
The next ``vmalloc`` gets the same virtual range backed by another page; the client
copies out of it again. Under ``kernel-sva`` the descriptors carry kernel virtual
addresses that VT-d translates through ``init_mm``'s page tables; ``vfree``
flushed only the CPU's TLB, so the second copy reads through the IOTLB entry cached
by the first one — into the secret. The VT-d model reports that use as stale.
Under ``upstream`` and ``seed-v3`` the client maps each buffer with the DMA API
(``dma_map_page`` of ``vmalloc_to_page``); the unmap flushed the IOTLB, so the
second copy reads the new buffer.
"""

from __future__ import annotations

from attrs import define

from drivers.idxd.init import idxd_devices
from kernel.context import current
from kernel.dma.direction import DMA_FROM_DEVICE, DMA_TO_DEVICE
from kernel.dma.dmaengine import (
    DMA_COMPLETE,
    DMA_PREP_INTERRUPT,
    DmaChan,
    DmaengineResult,
    dma_release_channel,
    dma_request_chan,
    dma_sync_wait,
    dmaengine_prep_dma_memcpy,
    dmaengine_submit,
)
from kernel.dma.mapping import (
    dma_map_page,
    dma_map_single,
    dma_mapping_error,
    dma_unmap_page,
    dma_unmap_single,
)
from kernel.errno import ENODEV, ENOMEM
from kernel.iommu.iommu import iommu_state
from kernel.mm import (
    GFP_KERNEL,
    PAGE_SIZE,
    free_page,
    get_zeroed_page,
    is_vmalloc_addr,
    memory_read,
    memory_write,
    offset_in_page,
    vfree,
    virt_to_phys,
    vmalloc,
    vmalloc_to_page,
)

SIZE = 256
OLD = b"old buffer data " * (SIZE // 16)
NEW = b"the new owner's " * (SIZE // 16)
SECRET = b"SECRET-KEY-0042 " * (SIZE // 16)


@define
class FlawResult:
    """What the sequence saw."""

    api: str
    kva: bool
    """Descriptors carried kernel virtual addresses (a supervisor SVA bond)."""
    first_copy_ok: bool
    same_address: bool
    """The second vmalloc got the freed buffer's virtual address."""
    frame_reused: bool
    """The secret landed in the freed buffer's physical page."""
    read: bytes
    """What the second copy delivered."""
    stale_uses: int
    """Stale translations the IOMMU model used during the second copy."""

    @property
    def leaked(self) -> bool:
        """The device read another owner's memory through a stale translation."""
        return self.read == SECRET

    @property
    def shown(self) -> bool:
        """The flaw happened and the model caught it."""
        return self.leaked and self.stale_uses > 0


def _stale(dev_units: list[object]) -> int:
    return sum(int(getattr(getattr(u, "stats", None), "stale_uses", 0)) for u in dev_units)


def kernel_sva_bound(chan: DmaChan) -> bool:
    """Whether the channel's device holds a supervisor SVA bond (``kernel-sva`` and
    the IOMMU accepted the bind): its descriptors then carry kernel virtual
    addresses. A device whose bind was refused (SMMUv3) uses the DMA API."""
    dev = chan.device.dev
    return any(d.pdev is dev and d.sva is not None for d in idxd_devices())


def copy_to(chan: DmaChan, dst: int, src: int, size: int) -> bool:
    """One dmaengine memcpy of ``size`` bytes from ``src`` (vmalloc or direct map)
    to ``dst`` (direct map) as a client does it: kernel virtual addresses with a
    supervisor SVA bond, DMA API mappings otherwise. True when the descriptor
    completed without error."""
    dev = chan.device.dev
    sva = kernel_sva_bound(chan)
    if sva:
        s, d = src, dst
    else:
        if is_vmalloc_addr(src):
            page, off = vmalloc_to_page(src), offset_in_page(src)
            s = dma_map_page(dev, page, off, size, DMA_TO_DEVICE)
        else:
            s = dma_map_single(dev, src, size, DMA_TO_DEVICE)
        d = dma_map_single(dev, dst, size, DMA_FROM_DEVICE)
    ok = False
    if sva or (not dma_mapping_error(dev, s) and not dma_mapping_error(dev, d)):
        tx = dmaengine_prep_dma_memcpy(chan, d, s, size, DMA_PREP_INTERRUPT)
        results: list[DmaengineResult] = []
        if tx is not None:
            tx.callback_result = lambda _p, r: results.append(r)
            cookie = dmaengine_submit(tx)
            if cookie > 0 and dma_sync_wait(chan, cookie) == DMA_COMPLETE:
                ok = bool(results) and results[0].result == 0
    if not sva:
        if not dma_mapping_error(dev, s):
            dma_unmap_page(dev, s, size, DMA_TO_DEVICE)
        if not dma_mapping_error(dev, d):
            dma_unmap_single(dev, d, size, DMA_FROM_DEVICE)
    return ok


def _page() -> int:
    addr = get_zeroed_page(GFP_KERNEL)
    if addr is None:
        raise ENOMEM("flaw: no page")
    return addr


def vfree_sequence(units: list[object] | None = None) -> FlawResult:
    """Run the sequence on the first idxd channel; ``units`` are the IOMMU models
    whose stale-use counters to read (every unit of the machine by default)."""
    if units is None:
        units = list(getattr(current.kernel.machine, "iommus", {}).values())
    chans = [wq.dma_chan for d in idxd_devices() for wq in d.wqs if wq.dma_chan is not None]
    if not chans:
        raise ENODEV("flaw: no idxd dmaengine channel")
    chan = dma_request_chan(None, chans[0].name)
    held: list[int] = []
    bufs: list[int] = []
    try:
        dst1, dst2 = _page(), _page()
        held += [dst1, dst2]
        buf = vmalloc(PAGE_SIZE)
        if buf is None:
            raise ENOMEM("flaw: vmalloc")
        bufs.append(buf)
        memory_write(buf, OLD)
        first_ok = copy_to(chan, dst1, buf, SIZE) and memory_read(dst1, SIZE) == OLD
        old_frame = virt_to_phys(buf)
        vfree(bufs.pop())
        secret = _page()  # someone else's page: the allocator hands out the freed frame
        held.append(secret)
        memory_write(secret, SECRET)
        buf2 = vmalloc(PAGE_SIZE)
        if buf2 is None:
            raise ENOMEM("flaw: vmalloc")
        bufs.append(buf2)
        memory_write(buf2, NEW)
        before = _stale(units)
        copy_to(chan, dst2, buf2, SIZE)
        return FlawResult(
            api=iommu_state().pasid_api,
            kva=kernel_sva_bound(chan),
            first_copy_ok=first_ok,
            same_address=buf2 == buf,
            frame_reused=virt_to_phys(secret) == old_frame,
            read=memory_read(dst2, SIZE),
            stale_uses=_stale(units) - before,
        )
    finally:
        for b in bufs:
            vfree(b)
        for p in held:
            free_page(p)
        dma_release_channel(chan)


def describe(r: FlawResult) -> list[str]:
    """The report lines for ``r``."""
    what = (
        "the secret (another owner's page, through a stale IOTLB entry)"
        if r.leaked
        else "the new buffer's bytes"
        if r.read == NEW
        else "something else"
    )
    how = "kernel virtual addresses" if r.kva else "DMA API mappings"
    return [
        f"vfree sequence ({r.api}, {how}): copy from a vmalloc buffer "
        f"{'ok' if r.first_copy_ok else 'FAILED'}; vfree; its page given to another owner"
        f" ({'same frame' if r.frame_reused else 'another frame'}); vmalloc again at "
        f"{'the same' if r.same_address else 'another'} address; copy again",
        f"  the second copy read {what}; stale translations used: {r.stale_uses}",
    ]


__all__ = ["FlawResult", "copy_to", "describe", "kernel_sva_bound", "vfree_sequence"]
