"""Cache invalidation for a domain's mappings (drivers/iommu/intel/cache.c, ~v6.12), and
the seed-v3 flush path it replaced.

Upstream: every attachment of a domain (device, PASID) adds refcounted cache tags
to ``domain.cache_tags``: an IOTLB tag (unit, DID, PASID) and, with ATS enabled, a
device-TLB tag (device, DID, PASID) (history §5.4). ``cache_tag_flush_range``
walks them: a first-stage domain gets a PASID-based IOTLB invalidation per
tagged PASID, a second-stage domain a page-selective (or domain-selective)
invalidation per DID, device-TLB tags a device-TLB invalidation. Descriptors
are batched (up to ``QI_MAX_BATCHED_DESC_COUNT``) and submitted once per unit.

Seed-v3 (history §2.1): the v3 tree had no cache tags. Its ``iommu_flush_iotlb_psi``
flushed, for a first-stage domain, RID2PASID and the one ``iommu_domain.pasid``
that ``iommu_attach_dma_pasid`` set; ``__iommu_flush_dev_iotlb`` added the device's
``info.pasid``; ``intel_flush_iotlb_all`` only RID2PASID. A domain allocated under
``iommu.pasid_api=seed-v3`` (``domain.seed_v3``) flushes exactly that, which is
what leaves a PASID attached any other way stale (the reviewers' objection).
"""

from __future__ import annotations

from typing import Any

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import (
    QiDesc,
    __iommu_flush_iotlb,
    iommu_flush_write_buffer,
    qi_desc_dev_iotlb,
    qi_desc_dev_iotlb_pasid,
    qi_desc_iotlb,
    qi_desc_piotlb,
    qi_flush_dev_iotlb,
    qi_flush_dev_iotlb_pasid,
    qi_flush_piotlb,
    qi_submit_sync,
)
from drivers.intel_iommu.structs import (
    CACHE_TAG_DEVTLB,
    CACHE_TAG_IOTLB,
    CACHE_TAG_NESTING_DEVTLB,
    CACHE_TAG_NESTING_IOTLB,
    CacheTag,
    DeviceDomainInfo,
    DmarDomain,
    IntelIommu,
    domain_id_iommu,
)
from kernel.device import Device
from kernel.errno import ENOMEM
from kernel.iommu.iommu_h import IOMMU_DOMAIN_NESTED, IOMMU_DOMAIN_SVA
from kernel.mm import GFP_KERNEL, kfree, kzalloc
from kernel.trace import define_tracepoint

_TAG_NAMES = {
    CACHE_TAG_IOTLB: "iotlb",
    CACHE_TAG_DEVTLB: "devtlb",
    CACHE_TAG_NESTING_IOTLB: "nesting_iotlb",
    CACHE_TAG_NESTING_DEVTLB: "nesting_devtlb",
}
_IOTLB_TAGS = (CACHE_TAG_IOTLB, CACHE_TAG_NESTING_IOTLB)


def _decimal(v: dict[str, Any]) -> dict[str, Any]:
    """trace.h prints DID, PASID and the reference count with ``%d``."""
    return {k: str(v[k]) for k in ("domain_id", "pasid", "users") if k in v}


_TAG_FIELDS = ("iommu", "dev", "type", "domain_id", "pasid", "users")
_TAG_FMT = "{iommu}/{dev} type {type} did {domain_id} pasid {pasid} ref {users}"
trace_cache_tag_assign = define_tracepoint(
    "intel_iommu:cache_tag_assign", _TAG_FIELDS, _TAG_FMT, _decimal
)
trace_cache_tag_unassign = define_tracepoint(
    "intel_iommu:cache_tag_unassign", _TAG_FIELDS, _TAG_FMT, _decimal
)
trace_cache_tag_flush_range = define_tracepoint(
    "intel_iommu:cache_tag_flush_range",
    ("iommu", "dev", "pasid", "type", "domain_id", "start", "end", "addr", "pages", "mask"),
    "{iommu} {dev}[{pasid}] type {type} did {domain_id} [{start}-{end}] addr {addr} "
    "pages {pages} mask {mask}",
    _decimal,
)
trace_cache_tag_flush_all = define_tracepoint(
    "intel_iommu:cache_tag_flush_all", _TAG_FIELDS, _TAG_FMT, _decimal
)


def _tag_dev(tag: CacheTag) -> str:
    """``dev_name(tag->dev)``: the device, or for an IOTLB tag the unit itself."""
    return tag.dev.init_name if tag.dev is not None else tag.iommu.name


def _info(dev: Device) -> DeviceDomainInfo:
    info = dev.iommu.priv if dev.iommu is not None else None
    assert isinstance(info, DeviceDomainInfo)
    return info


def _trace_tag(tp_name: str, tag: CacheTag) -> None:
    tp = trace_cache_tag_assign if tp_name == "assign" else trace_cache_tag_unassign
    if tp.enabled:
        tp(
            iommu=tag.iommu.name,
            dev=_tag_dev(tag),
            type=_TAG_NAMES[tag.type],
            domain_id=tag.domain_id,
            pasid=tag.pasid,
            users=tag.users,
        )


# --------------------------------------------------------------------------- tags


def _tag_match(
    tag: CacheTag, did: int, iommu: IntelIommu, dev: Device, pasid: int, type: int
) -> bool:
    """``cache_tage_match``."""
    if tag.type != type or tag.domain_id != did or tag.pasid != pasid:
        return False
    if type in _IOTLB_TAGS:
        return tag.iommu is iommu
    return tag.dev is dev


def cache_tag_assign(domain: DmarDomain, did: int, dev: Device, pasid: int, type: int) -> None:
    """``cache_tag_assign``: a new tag, or one more user of a matching one."""
    info = _info(dev)
    kmem = kzalloc(64, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("cache_tag")
    for tag in domain.cache_tags:
        if _tag_match(tag, did, info.iommu, dev, pasid, type):
            tag.users += 1
            kfree(kmem)
            _trace_tag("assign", tag)
            return
    tag = CacheTag(
        type, info.iommu, did, pasid, None if type in _IOTLB_TAGS else info.dev, kmem=kmem
    )
    domain.cache_tags.append(tag)
    _trace_tag("assign", tag)


def cache_tag_unassign(domain: DmarDomain, did: int, dev: Device, pasid: int, type: int) -> None:
    """``cache_tag_unassign``: one user less; the tag goes with its last user."""
    info = _info(dev)
    for tag in domain.cache_tags:
        if _tag_match(tag, did, info.iommu, dev, pasid, type):
            _trace_tag("unassign", tag)  # before the decrement, as Linux traces it
            tag.users -= 1
            if tag.users == 0:
                domain.cache_tags.remove(tag)
                kfree(tag.kmem)
            return


def domain_get_id_for_dev(domain: DmarDomain, dev: Device) -> int:
    """``domain_get_id_for_dev``: SVA domains share FLPT_DEFAULT_DID."""
    if domain.type == IOMMU_DOMAIN_SVA:
        return ir.FLPT_DEFAULT_DID
    return domain_id_iommu(domain, _info(dev).iommu)


def _assign_pair(
    domain: DmarDomain, did: int, dev: Device, pasid: int, iotlb: int, devtlb: int
) -> None:
    """``__cache_tag_assign_domain`` / ``__cache_tag_assign_parent_domain``: the
    IOTLB tag, and the device-TLB tag with ATS."""
    cache_tag_assign(domain, did, dev, pasid, iotlb)
    if not _info(dev).ats_enabled:
        return
    try:
        cache_tag_assign(domain, did, dev, pasid, devtlb)
    except ENOMEM:
        cache_tag_unassign(domain, did, dev, pasid, iotlb)
        raise


def _unassign_pair(
    domain: DmarDomain, did: int, dev: Device, pasid: int, iotlb: int, devtlb: int
) -> None:
    cache_tag_unassign(domain, did, dev, pasid, iotlb)
    if _info(dev).ats_enabled:
        cache_tag_unassign(domain, did, dev, pasid, devtlb)


def cache_tag_assign_domain(domain: DmarDomain, dev: Device, pasid: int) -> None:
    """``cache_tag_assign_domain``: the IOTLB tag, and the device-TLB tag with ATS;
    a nested domain also puts NESTING tags with its DID on its parent, so that a
    change of the parent's (second-stage) mappings flushes what the nested domain
    cached through them."""
    did = domain_get_id_for_dev(domain, dev)
    _assign_pair(domain, did, dev, pasid, CACHE_TAG_IOTLB, CACHE_TAG_DEVTLB)
    if domain.type != IOMMU_DOMAIN_NESTED:
        return
    assert domain.s2_domain is not None
    try:
        _assign_pair(
            domain.s2_domain, did, dev, pasid, CACHE_TAG_NESTING_IOTLB, CACHE_TAG_NESTING_DEVTLB
        )
    except ENOMEM:
        _unassign_pair(domain, did, dev, pasid, CACHE_TAG_IOTLB, CACHE_TAG_DEVTLB)
        raise


def cache_tag_unassign_domain(domain: DmarDomain, dev: Device, pasid: int) -> None:
    """``cache_tag_unassign_domain`` (and the parent's NESTING tags)."""
    did = domain_get_id_for_dev(domain, dev)
    _unassign_pair(domain, did, dev, pasid, CACHE_TAG_IOTLB, CACHE_TAG_DEVTLB)
    if domain.type == IOMMU_DOMAIN_NESTED:
        assert domain.s2_domain is not None
        _unassign_pair(
            domain.s2_domain, did, dev, pasid, CACHE_TAG_NESTING_IOTLB, CACHE_TAG_NESTING_DEVTLB
        )


# --------------------------------------------------------------------------- flushes


def aligned_nrpages(host_addr: int, size: int) -> int:
    """``aligned_nrpages``: 4 KiB pages covering ``size`` bytes from ``host_addr``."""
    host_addr &= ir.VTD_PAGE_SIZE - 1
    return (host_addr + size + ir.VTD_PAGE_SIZE - 1) >> ir.VTD_PAGE_SHIFT


def calculate_psi_aligned_address(start: int, end: int) -> tuple[int, int, int]:
    """``calculate_psi_aligned_address``: ``(addr, pages, mask)`` of the smallest
    naturally aligned power-of-two range covering ``[start, end]``."""
    # aligned_nrpages(start, end - start + 1), written out
    pages = ((start & (ir.VTD_PAGE_SIZE - 1)) + end - start + ir.VTD_PAGE_SIZE) >> ir.VTD_PAGE_SHIFT
    if pages == 1:  # one page (every 4 KiB unmap): itself, mask 0
        return start & ~(ir.VTD_PAGE_SIZE - 1), 1, 0
    aligned_pages = 1 << (pages - 1).bit_length()
    bitmask = aligned_pages - 1
    mask = aligned_pages.bit_length() - 1
    pfn = start >> ir.VTD_PAGE_SHIFT
    if bitmask & pfn:
        end_pfn = pfn + pages - 1
        shared_bits = ~(pfn ^ end_pfn) & ~bitmask & ((1 << 64) - 1)
        mask = (
            (shared_bits & -shared_bits).bit_length() - 1 if shared_bits else ir.MAX_AGAW_PFN_WIDTH
        )
        aligned_pages = 1 << mask
    return start & ~((ir.VTD_PAGE_SIZE << mask) - 1), aligned_pages, mask


class QiBatch:
    """``struct qi_batch`` (``domain->qi_batch``): descriptors for one unit, submitted
    together. One per domain, made on its first flush (C allocates it when the
    domain gets its first cache tag); empty between flushes."""

    __slots__ = ("descs", "iommu")

    def __init__(self) -> None:
        self.iommu: IntelIommu | None = None
        self.descs: list[QiDesc] = []

    def add(self, iommu: IntelIommu, desc: QiDesc) -> None:
        if self.iommu is not iommu:
            if self.descs:
                self.flush()
            self.iommu = iommu
        self.descs.append(desc)
        if len(self.descs) == ir.QI_MAX_BATCHED_DESC_COUNT:
            self.flush()

    def flush(self) -> None:
        """``qi_batch_flush_descs``: submit and empty the batch (emptied first, so a
        submission that raises leaves nothing behind for the next flush)."""
        descs = self.descs
        if self.iommu is not None and descs:
            self.descs = []
            qi_submit_sync(self.iommu, descs)


def domain_qi_batch(domain: DmarDomain) -> QiBatch:
    """``domain->qi_batch``, made on first use (``domain_qi_batch_alloc``)."""
    batch = domain.qi_batch
    if batch is None:
        batch = domain.qi_batch = QiBatch()
    return batch


def _flush_iotlb(
    domain: DmarDomain,
    tag: CacheTag,
    addr: int,
    pages: int,
    mask: int,
    ih: int,
    batch: QiBatch,
) -> None:
    """``cache_tag_flush_iotlb``."""
    iommu = tag.iommu
    if domain.use_first_level:
        batch.add(iommu, qi_desc_piotlb(tag.domain_id, tag.pasid, addr, pages, ih))
        return
    type = ir.DMA_TLB_PSI_FLUSH
    if not ir.cap_pgsel_inv(iommu.cap) or mask > ir.cap_max_amask_val(iommu.cap) or pages == -1:
        addr = mask = ih = 0
        type = ir.DMA_TLB_DSI_FLUSH
    if ir.ecap_qis(iommu.ecap):
        batch.add(iommu, qi_desc_iotlb(iommu, tag.domain_id, addr, mask, type, ih))
    else:
        __iommu_flush_iotlb(iommu, tag.domain_id, addr | (ih << 6), mask, type)


def _flush_devtlb(tag: CacheTag, addr: int, mask: int, batch: QiBatch) -> None:
    """``cache_tag_flush_devtlb_psi``."""
    assert tag.dev is not None
    info = _info(tag.dev)
    if tag.pasid == 0:
        desc = qi_desc_dev_iotlb(info.sid, info.pfsid, info.ats_qdep, addr, mask)
    else:
        desc = qi_desc_dev_iotlb_pasid(info.sid, info.pfsid, tag.pasid, info.ats_qdep, addr, mask)
    batch.add(tag.iommu, desc)


def cache_tag_flush_range(domain: DmarDomain, start: int, end: int, ih: int) -> None:
    """``cache_tag_flush_range``: invalidate ``[start, end]`` (inclusive) wherever the
    domain's tags say it may be cached."""
    addr, pages, mask = calculate_psi_aligned_address(start, end)
    batch = domain.qi_batch or domain_qi_batch(domain)
    tracing = trace_cache_tag_flush_range.enabled
    for tag in domain.cache_tags:
        if tag.type in _IOTLB_TAGS:
            _flush_iotlb(domain, tag, addr, pages, mask, ih, batch)
        elif tag.type == CACHE_TAG_NESTING_DEVTLB:
            # which nested translations a second-stage change touches is unknown
            _flush_devtlb(tag, 0, ir.MAX_AGAW_PFN_WIDTH, batch)
        else:
            _flush_devtlb(tag, addr, mask, batch)
        if tracing:
            trace_cache_tag_flush_range(
                iommu=tag.iommu.name,
                dev=_tag_dev(tag),
                type=_TAG_NAMES[tag.type],
                domain_id=tag.domain_id,
                pasid=tag.pasid,
                start=start,
                end=end,
                addr=addr,
                pages=pages,
                mask=mask,
            )
    batch.flush()


def cache_tag_flush_all(domain: DmarDomain) -> None:
    """``cache_tag_flush_all``: every mapping of every tag."""
    batch = domain.qi_batch or domain_qi_batch(domain)
    for tag in domain.cache_tags:
        if tag.type in _IOTLB_TAGS:
            _flush_iotlb(domain, tag, 0, -1, 0, 0, batch)
        else:
            assert tag.dev is not None
            info = _info(tag.dev)
            desc = qi_desc_dev_iotlb(info.sid, info.pfsid, info.ats_qdep, 0, ir.MAX_AGAW_PFN_WIDTH)
            batch.add(tag.iommu, desc)
        if trace_cache_tag_flush_all.enabled:
            trace_cache_tag_flush_all(
                iommu=tag.iommu.name,
                dev=_tag_dev(tag),
                type=_TAG_NAMES[tag.type],
                domain_id=tag.domain_id,
                pasid=tag.pasid,
                users=tag.users,
            )
    batch.flush()


def cache_tag_flush_range_np(domain: DmarDomain, start: int, end: int) -> None:
    """``cache_tag_flush_range_np``: after a map. Only caching-mode units with a
    second-stage domain need an IOTLB invalidation; others a write-buffer flush."""
    addr, pages, mask = calculate_psi_aligned_address(start, end)
    batch = domain.qi_batch or domain_qi_batch(domain)
    for tag in domain.cache_tags:
        iommu = tag.iommu
        if not ir.cap_caching_mode(iommu.cap) or domain.use_first_level:
            iommu_flush_write_buffer(iommu)
            continue
        if tag.type in _IOTLB_TAGS:
            _flush_iotlb(domain, tag, addr, pages, mask, 0, batch)
    batch.flush()


# --------------------------------------------------------------------------- seed-v3


def iommu_flush_dev_iotlb_v3(domain: DmarDomain, addr: int, mask: int) -> None:
    """v3 ``iommu_flush_dev_iotlb``: each ATS device's RID, and ``info.pasid``."""
    for info in domain.devices:
        if not info.ats_enabled:
            continue
        qi_flush_dev_iotlb(info.iommu, info.sid, info.pfsid, info.ats_qdep, addr, mask)
        if info.pasid:
            qi_flush_dev_iotlb_pasid(
                info.iommu, info.sid, info.pfsid, info.pasid, info.ats_qdep, addr, mask
            )


def iommu_flush_iotlb_psi_v3(
    iommu: IntelIommu, domain: DmarDomain, pfn: int, pages: int, ih: int, map: bool
) -> None:
    """v3 ``iommu_flush_iotlb_psi`` (patch 1/4 applied): first-stage domains flush
    RID2PASID and ``domain.pasid``; second-stage domains by DID."""
    aligned_pages = 1 << (pages - 1).bit_length()
    mask = aligned_pages.bit_length() - 1
    addr = pfn << ir.VTD_PAGE_SHIFT
    did = domain_id_iommu(domain, iommu)
    if domain.use_first_level:
        qi_flush_piotlb(iommu, did, 0, addr, pages, ih)
        if domain.pasid:
            qi_flush_piotlb(iommu, did, domain.pasid, addr, pages, ih)
    else:
        bitmask = aligned_pages - 1
        if bitmask & pfn:
            end_pfn = pfn + pages - 1
            shared_bits = ~(pfn ^ end_pfn) & ~bitmask & ((1 << 64) - 1)
            mask = (shared_bits & -shared_bits).bit_length() - 1 if shared_bits else 64
        if not ir.cap_pgsel_inv(iommu.cap) or mask > ir.cap_max_amask_val(iommu.cap):
            iommu.flush_iotlb(iommu, did, 0, 0, ir.DMA_TLB_DSI_FLUSH)
        else:
            iommu.flush_iotlb(iommu, did, addr | (ih << 6), mask, ir.DMA_TLB_PSI_FLUSH)
    if not ir.cap_caching_mode(iommu.cap) or not map:
        iommu_flush_dev_iotlb_v3(domain, addr, mask)


def intel_flush_iotlb_all_v3(domain: DmarDomain) -> None:
    """v3 ``intel_flush_iotlb_all``: RID2PASID (first-stage) or the DID, per unit."""
    for dinfo in list(domain.iommu_array.values()):
        iommu = dinfo.iommu
        if domain.use_first_level:
            qi_flush_piotlb(iommu, dinfo.did, 0, 0, -1, 0)
        else:
            iommu.flush_iotlb(iommu, dinfo.did, 0, 0, ir.DMA_TLB_DSI_FLUSH)
        if not ir.cap_caching_mode(iommu.cap):
            iommu_flush_dev_iotlb_v3(domain, 0, ir.MAX_AGAW_PFN_WIDTH)


# --------------------------------------------------------------------------- dispatch


def domain_flush_range(domain: DmarDomain, start: int, end: int, ih: int) -> None:
    """Invalidate ``[start, end]`` the way this domain's API generation does."""
    if domain.seed_v3:
        pages = aligned_nrpages(start, end - start + 1)
        for dinfo in list(domain.iommu_array.values()):
            iommu_flush_iotlb_psi_v3(
                dinfo.iommu, domain, start >> ir.VTD_PAGE_SHIFT, pages, ih, False
            )
    else:
        cache_tag_flush_range(domain, start, end, ih)


def domain_flush_all(domain: DmarDomain) -> None:
    if domain.seed_v3:
        intel_flush_iotlb_all_v3(domain)
    else:
        cache_tag_flush_all(domain)
