"""The two-step IOVA API (``dma_iova_try_alloc`` ... ``dma_iova_destroy``):
``struct dma_iova_state`` in include/linux/dma-mapping.h, the implementation in
drivers/iommu/dma-iommu.c.

**Newer than the 6.12 baseline**: merged for Linux 6.16 and still changing
upstream; it is here as a selectable newer interface beside the 6.12 streaming
API (a driver chooses it by calling it), as ``iommu.pt=generic`` is for page
tables.

A driver allocates one IOVA range for a whole transfer (``dma_iova_try_alloc``),
links physical ranges into it back to back (``dma_iova_link``, no IOTLB sync per
call), syncs once (``dma_iova_sync``), and later unlinks (``dma_iova_unlink``) and
frees (``dma_iova_free``) or does both at once (``dma_iova_destroy``). When
``dma_iova_try_alloc`` returns False — no IOMMU, an identity domain — the state is
zeroed, ``dma_use_iova`` is False, and the driver uses the streaming API instead.

DMA-API debug tracks each link as an "iova" entry (so leaks show when the driver
unbinds) and checks unlinks against them. Departures from upstream, each named:
upstream debug.c has no hooks for this interface, so the report texts for it are
this model's; linking past the allocated size is refused with -EINVAL and reported
(upstream maps past its allocation unchecked); calling link/sync/unlink on a state
that does not use an IOVA returns -EINVAL with a WARN (upstream dereferences a
NULL domain); an untrusted device (one that bounces through swiotlb) gets False
from ``dma_iova_try_alloc`` and uses the streaming API, which bounces, instead
of upstream's ``iommu_dma_iova_link_swiotlb``.
"""

from __future__ import annotations

from attrs import define

from kernel.bug import WARN_ON, WARN_ON_ONCE
from kernel.device import Device
from kernel.dma import debug
from kernel.dma.debug import dma_debug_state
from kernel.errno import EINVAL, EIO, KernelError
from kernel.iommu.dma_iommu import (
    IommuDmaCookie,
    dev_use_swiotlb,
    dma_info_to_prot,
    iommu_dma_alloc_iova,
    iommu_dma_free_iova,
)
from kernel.iommu.iommu import iommu_get_dma_domain
from kernel.iommu.iommu_h import IOMMU_DOMAIN_DMA_FQ, IommuIotlbGather, iommu_iotlb_sync
from kernel.iommu.iommu_map import iommu_map_nosync, iommu_sync_map, iommu_unmap_fast
from kernel.iommu.iova import IovaDomain, iova_align, iova_offset
from kernel.mm import GFP_ATOMIC

DMA_IOVA_USE_SWIOTLB = 1 << 63
_PROT = {d: dma_info_to_prot(d, True, 0) for d in (0, 1, 2)}
"""The coherent, attribute-free protections of each direction, computed once."""
_SIZE_MASK = DMA_IOVA_USE_SWIOTLB - 1
"""``dma_iova_size``'s mask, for the per-link check."""


@define(eq=False)
class DmaIovaState:
    """``struct dma_iova_state``: the range's DMA address (with the first link's
    offset into its granule) and its size (``__size``; top bit reserved for
    dma-iommu's swiotlb flag)."""

    addr: int = 0
    size_: int = 0


def dma_iova_size(state: DmaIovaState) -> int:
    """``dma_iova_size``."""
    return state.size_ & ~DMA_IOVA_USE_SWIOTLB


def dma_use_iova(state: DmaIovaState) -> bool:
    """``dma_use_iova``: True after a successful :func:`dma_iova_try_alloc`."""
    return state.size_ != 0


def _iovad(dev: Device) -> IovaDomain | None:
    if not dev.dma_iommu:
        return None
    domain = iommu_get_dma_domain(dev)
    cookie = domain.iova_cookie if domain is not None else None
    return cookie.iovad if isinstance(cookie, IommuDmaCookie) else None


def dma_iova_try_alloc(dev: Device, state: DmaIovaState, phys: int, size: int) -> bool:
    """``dma_iova_try_alloc``: reserve IOVA space for ``size`` bytes whose first
    byte sits at ``phys``'s offset into its granule. False (state zeroed) when the
    device does not translate through dma-iommu, for a size of 0 or one using the
    reserved top bit, or when no IOVA space is left."""
    state.addr = state.size_ = 0
    iovad = _iovad(dev)
    if iovad is None or dev_use_swiotlb(dev):
        return False
    domain = iommu_get_dma_domain(dev)
    assert domain is not None
    if WARN_ON_ONCE(not size, "dma_iova_try_alloc of size 0"):
        return False
    if WARN_ON_ONCE(bool(size & DMA_IOVA_USE_SWIOTLB), "dma_iova_try_alloc: size too large"):
        return False
    iova_off = iova_offset(iovad, phys)
    addr = iommu_dma_alloc_iova(domain, iova_align(iovad, size + iova_off), dev.dma_mask, dev)
    if not addr:
        return False
    state.addr = addr + iova_off
    state.size_ = size
    return True


def dma_iova_free(dev: Device, state: DmaIovaState) -> None:
    """``dma_iova_free``: give the range back (nothing may be linked in it)."""
    iovad = _iovad(dev)
    if WARN_ON(iovad is None or not dma_use_iova(state), "dma_iova_free without an IOVA"):
        return
    assert iovad is not None
    domain = iommu_get_dma_domain(dev)
    assert domain is not None
    pad = iova_offset(iovad, state.addr)
    iommu_dma_free_iova(
        domain, state.addr - pad, iova_align(iovad, dma_iova_size(state) + pad), None
    )
    state.addr = state.size_ = 0


def dma_iova_link(
    dev: Device,
    state: DmaIovaState,
    phys: int,
    offset: int,
    size: int,
    dir: int,
    attrs: int = 0,
) -> int:
    """``dma_iova_link`` (and ``__dma_iova_link``): map ``size`` bytes at ``phys`` at
    ``offset`` into the range with ``iommu_map_nosync``, without an IOTLB sync. 0,
    or -EIO when a link other than the first is not granule-aligned, -EINVAL past
    the allocated size, -ENOMEM when page-table memory runs out (nothing of this
    link left mapped).

    Called once per page, so the good path is upstream's work and no more: the
    domain and its cookie read once, the granule padding, the map. Upstream's
    per-link ``dev_use_swiotlb`` test is not needed here (untrusted devices never
    get an IOVA range from :func:`dma_iova_try_alloc`), nor its cache maintenance
    (DMA is coherent on x86)."""
    domain = iommu_get_dma_domain(dev)
    cookie = domain.iova_cookie if domain is not None else None
    iovad = cookie.iovad if isinstance(cookie, IommuDmaCookie) else None
    total = state.size_ & _SIZE_MASK
    if iovad is None or not total:
        WARN_ON_ONCE(True, "dma_iova_link without an IOVA")
        return -EINVAL.errno
    assert domain is not None  # it has the cookie
    mask = iovad.granule - 1
    pad = phys & mask
    if pad and offset > 0:
        WARN_ON_ONCE(True, "dma_iova_link: unaligned link")
        return -EIO.errno
    if size <= 0 or offset + size > total:
        debug.debug_dma_iova_overflow(dev, state.addr, total, offset, size)
        return -EINVAL.errno
    prot = _PROT.get(dir, 0) if not attrs else dma_info_to_prot(dir, True, attrs)
    try:
        iommu_map_nosync(
            domain,
            state.addr + offset - pad,
            phys - pad,
            (size + pad + mask) & ~mask,
            prot,
            GFP_ATOMIC,
        )
    except KernelError as e:
        return -e.errno
    if not dma_debug_state().disabled:
        debug.debug_dma_iova_link(dev, state.addr + offset, phys, size, dir, attrs)
    return 0


def dma_iova_sync(dev: Device, state: DmaIovaState, offset: int, size: int) -> int:
    """``dma_iova_sync``: ``iotlb_sync_map`` over the linked range; 0 or -errno."""
    iovad = _iovad(dev)
    if WARN_ON_ONCE(iovad is None or not dma_use_iova(state), "dma_iova_sync without an IOVA"):
        return -EINVAL.errno
    assert iovad is not None
    domain = iommu_get_dma_domain(dev)
    assert domain is not None
    addr = state.addr + offset
    pad = iova_offset(iovad, addr)
    try:
        iommu_sync_map(domain, addr - pad, iova_align(iovad, size + pad))
    except KernelError as e:
        return -e.errno
    return 0


def __iommu_dma_iova_unlink(
    dev: Device,
    state: DmaIovaState,
    offset: int,
    size: int,
    dir: int,
    attrs: int,
    free_iova: bool,
) -> None:
    """``__iommu_dma_iova_unlink``: clear the PTEs and sync the IOTLB (or, when the
    IOVA is freed on a flush-queue domain, queue it behind the next flush)."""
    iovad = _iovad(dev)
    if WARN_ON_ONCE(iovad is None or not dma_use_iova(state), "dma_iova_unlink without an IOVA"):
        return
    assert iovad is not None
    domain = iommu_get_dma_domain(dev)
    assert domain is not None
    cookie = domain.iova_cookie
    assert isinstance(cookie, IommuDmaCookie)
    addr = state.addr + offset
    debug.debug_dma_iova_unlink(dev, addr, size, dir)
    pad = iova_offset(iovad, addr)
    gather = IommuIotlbGather()
    gather.queued = free_iova and cookie.fq is not None and domain.type == IOMMU_DOMAIN_DMA_FQ
    size = iova_align(iovad, size + pad)
    addr -= pad
    unmapped = iommu_unmap_fast(domain, addr, size, gather)
    WARN_ON(unmapped != size, f"dma_iova_unlink: unmapped {unmapped:#x} of {size:#x}")
    if not gather.queued:
        iommu_iotlb_sync(domain, gather)
    if free_iova:
        iommu_dma_free_iova(domain, addr, size, gather)
        state.addr = state.size_ = 0


def dma_iova_unlink(
    dev: Device, state: DmaIovaState, offset: int, size: int, dir: int, attrs: int = 0
) -> None:
    """``dma_iova_unlink``: unmap part of the range, keep the IOVA allocated."""
    __iommu_dma_iova_unlink(dev, state, offset, size, dir, attrs, False)


def dma_iova_destroy(
    dev: Device, state: DmaIovaState, mapped_len: int, dir: int, attrs: int = 0
) -> None:
    """``dma_iova_destroy``: unlink the first ``mapped_len`` bytes and free the
    range in one go (just free it when nothing was linked)."""
    if mapped_len:
        __iommu_dma_iova_unlink(dev, state, 0, mapped_len, dir, attrs, True)
    else:
        dma_iova_free(dev, state)
