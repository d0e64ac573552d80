"""Decode the VT-d invalidation descriptors ``intel_iommu:qi_submit`` prints.

``qi_submit`` prints a descriptor's four quadwords raw (``iotlb_inv dmar0: 0x300f2
0xffe59040 0x0 0x0``). :func:`decode` names its type and fields after the VT-d spec's
descriptor formats (facts file A9) and says what it invalidates: the cache (IOTLB,
device-TLB, context, PASID, interrupt entry), the granularity, and the DID, PASID,
source-id and address range where the descriptor has them. The type codes are the
driver's own (``drivers.intel_iommu.iommu_regs``: ``QI_*_TYPE``, as in
``drivers/iommu/intel/iommu.h``).
"""

from __future__ import annotations

from attrs import frozen

from drivers.intel_iommu.iommu_regs import (
    QI_CC_TYPE,
    QI_DEIOTLB_TYPE,
    QI_DESC_TYPE_NAMES,
    QI_DIOTLB_TYPE,
    QI_EIOTLB_TYPE,
    QI_IEC_TYPE,
    QI_IOTLB_TYPE,
    QI_IWD_TYPE,
    QI_PC_TYPE,
)
from iommulab.replay.events import PAGE_SHIFT, QiSubmit

QI_PGRP_RESP_TYPE = 0x9

GLOBAL = "global"
DOMAIN = "domain"
PAGE = "page"
PASID = "pasid"
DEVICE = "device"
INDEX = "index"


@frozen
class Invalidation:
    """What one descriptor invalidates. ``cache`` is ``iotlb``, ``devtlb``, ``context``,
    ``pasid``, ``iec``, ``wait``, ``page_resp`` or ``unknown``; ``start``/``size`` give the
    byte range of page-selective forms."""

    cache: str
    granularity: str
    did: int | None = None
    pasid: int | None = None
    sid: int | None = None
    start: int = 0
    size: int = 0
    fields: tuple[tuple[str, int], ...] = ()

    def covers(self, did: int | None, start: int, end: int) -> bool:
        """Whether an IOTLB-type invalidation covers ``[start, end)`` of domain ``did``
        (``None``: the domain is unknown, any DID matches)."""
        if self.granularity == GLOBAL:
            return True
        if did is not None and self.did is not None and did != self.did:
            return False
        if self.granularity in (DOMAIN, PASID):
            return True
        return self.start <= start and end <= self.start + self.size

    def describe(self) -> str:
        fields = " ".join(f"{k}={v:#x}" for k, v in self.fields)
        return f"{self.cache} {self.granularity} {fields}".strip()


def _devtlb_size(qw1: int) -> tuple[int, int]:
    """Device-TLB address and size: with S=1 the lowest clear bit at or above 12 gives
    the size (facts A9, type 3)."""
    addr = qw1 & ~0xFFF
    if not qw1 & 1:
        return addr, 1 << PAGE_SHIFT
    bit = PAGE_SHIFT
    while bit < 64 and (addr >> bit) & 1:
        bit += 1
    size = 1 << (bit + 1)
    return addr & ~(size - 1), size


def decode(ev: QiSubmit) -> Invalidation:
    """``qi_submit``'s descriptor decoded (type in qw0 bits 3:0 and 11:9)."""
    qw0, qw1 = ev.qw0, ev.qw1
    t = (qw0 & 0xF) | ((qw0 >> 5) & 0x70)
    g = (qw0 >> 4) & 3
    did = (qw0 >> 16) & 0xFFFF
    fields: tuple[tuple[str, int], ...]
    if t == QI_IOTLB_TYPE:
        am = qw1 & 0x3F
        addr = qw1 & ~0xFFF
        gran = {1: GLOBAL, 2: DOMAIN, 3: PAGE}.get(g, f"g{g}")
        fields = (("did", did), ("addr", addr), ("am", am), ("ih", (qw1 >> 6) & 1))
        if gran == GLOBAL:
            return Invalidation("iotlb", GLOBAL, fields=(("g", g),))
        if gran == DOMAIN:
            return Invalidation("iotlb", DOMAIN, did, fields=(("did", did),))
        return Invalidation("iotlb", gran, did, None, None, addr, 1 << (PAGE_SHIFT + am), fields)
    if t == QI_EIOTLB_TYPE:
        pasid = (qw0 >> 32) & 0xFFFFF
        am = qw1 & 0x3F
        addr = qw1 & ~0xFFF
        if g == 3:
            fields = (("did", did), ("pasid", pasid), ("addr", addr), ("am", am))
            size = 1 << (PAGE_SHIFT + am)
            return Invalidation("iotlb", PAGE, did, pasid, None, addr, size, fields)
        return Invalidation("iotlb", PASID, did, pasid, fields=(("did", did), ("pasid", pasid)))
    if t in (QI_DIOTLB_TYPE, QI_DEIOTLB_TYPE):
        start, size = _devtlb_size(qw1)
        gran = DEVICE if qw1 & 1 and size >= 1 << 63 else PAGE
        if t == QI_DIOTLB_TYPE:
            sid = (qw0 >> 32) & 0xFFFF
            fields = (("sid", sid), ("addr", start), ("size", size))
            return Invalidation("devtlb", gran, None, None, sid, start, size, fields)
        sid, pasid = (qw0 >> 16) & 0xFFFF, (qw0 >> 32) & 0xFFFFF
        fields = (("sid", sid), ("pasid", pasid), ("addr", start), ("size", size))
        return Invalidation("devtlb", gran, None, pasid, sid, start, size, fields)
    if t == QI_CC_TYPE:
        gran = {1: GLOBAL, 2: DOMAIN, 3: DEVICE}.get(g, f"g{g}")
        sid = (qw0 >> 32) & 0xFFFF
        return Invalidation("context", gran, did, None, sid, fields=(("did", did), ("sid", sid)))
    if t == QI_PC_TYPE:
        pasid = (qw0 >> 32) & 0xFFFFF
        gran = {0: DOMAIN, 1: PASID, 3: GLOBAL}.get(g, f"g{g}")
        return Invalidation("pasid", gran, did, pasid, fields=(("did", did), ("pasid", pasid)))
    if t == QI_IEC_TYPE:
        gran = INDEX if qw0 & 0x10 else GLOBAL
        idx, im = (qw0 >> 32) & 0xFFFF, (qw0 >> 27) & 0x1F
        return Invalidation("iec", gran, fields=(("iidx", idx), ("im", im)))
    if t == QI_IWD_TYPE:
        return Invalidation("wait", GLOBAL, fields=(("status", qw0 >> 32), ("addr", qw1)))
    if t == QI_PGRP_RESP_TYPE:
        rid, pasid = (qw0 >> 16) & 0xFFFF, (qw0 >> 32) & 0xFFFFF
        rc = (qw0 >> 12) & 0xF
        return Invalidation("page_resp", DEVICE, None, pasid, rid, fields=(("rc", rc),))
    return Invalidation("unknown", f"type {t:#x}", fields=(("qw0", qw0), ("qw1", qw1)))


def type_name(ev: QiSubmit) -> str:
    """The name ``qi_submit`` prints for the descriptor type (``0x..`` when unnamed)."""
    t = ev.qw0 & 0xF
    return QI_DESC_TYPE_NAMES.get(t, "page_grp_resp" if t == QI_PGRP_RESP_TYPE else f"{t:#x}")
