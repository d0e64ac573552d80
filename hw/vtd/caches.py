"""VT-d translation caches: context cache, PASID cache, and the IOTLB and device-TLB
shadows of the shared pipeline (:mod:`hw.translation`), with VT-d's invalidation
granularities.

Entries stay until invalidated (DESIGN §6). Every entry remembers the table entries
(8-byte granules) it was derived from; :class:`hw.pagewatch.SlotTracker` marks an
entry *suspect* when one of *its* granules changes, so the unit re-walks only entries
that may have gone stale (VT-d spec 6.5 says hardware may keep using them; the model
keeps using them too, and reports when that use differs from the tables). The
model's own A/D-bit updates do not mark anything.

IOTLB tags are ``(DID, -1)`` (:data:`SL_TAG`) for second-stage and legacy
translations, ``(DID, PASID)`` for first-stage ones and ``(DID, PASID | NEST_TAG)``
for nested ones (spec 6.2.1: first-stage and nested entries are tagged by DID and
PASID; QEMU keys its IOTLB by (gfn, PASID, SID, level) instead); an entry's source is
the :class:`~hw.vtd.walk.Stage` it was walked from. A nested entry caches the whole
two-stage translation (input address to host page); there is no separate
paging-structure cache for either stage (no stage has one in the model), so the
second-stage translations of first-stage table pointers live only inside the
nested entries' slots.

Which invalidation reaches a nested entry (spec 6.5.2.3/6.5.2.4): a PASID-based
IOTLB invalidation of its DID and PASID (as for first-stage entries), and an IOTLB
invalidation (type 2) of its DID as for second-stage entries, where a
page-selective one drops every nested entry of the DID whatever the address (its
address is a second-stage input, which a nested entry does not keep).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, cast

from hw.pagewatch import SlotCached, SlotTracker
from hw.translation import BLOCK, BLOCK_SHIFT, Block, Pipeline, TagCache, TagTable, TlbEntry
from hw.vtd.walk import CtxInfo, NestLeaf, PasidInfo, Stage

if TYPE_CHECKING:
    from hw.vtd.translate import Sel

__all__ = [
    "BLOCK",
    "BLOCK_SHIFT",
    "NEST_TAG",
    "SL_TAG",
    "Block",
    "Caches",
    "CtxEntry",
    "NestTlbEntry",
    "PasidEntry",
    "TlbEntry",
]

SL_TAG = -1
NEST_TAG = 1 << 20
"""OR-ed into the PASID of a nested entry's tag (PASIDs are 20 bits)."""


NestTlbEntry = NestLeaf
"""An IOTLB entry of a nested translation: the nested walk's leaf, which also holds
the second-stage leaf of its output page (``s2_pte``)."""


class CtxEntry(SlotCached):
    """A cached context entry; ``sel`` is the selection a legacy-mode entry gives
    (decoded on first use, :meth:`hw.vtd.translate.Translation.translate`)."""

    __slots__ = ("info", "sel")

    def __init__(self, info: CtxInfo) -> None:
        super().__init__(info.slots)
        self.info = info
        self.sel: Sel | None = None


class PasidEntry(SlotCached):
    """A cached PASID entry; ``sel`` is the selection it gives (decoded on first use)."""

    __slots__ = ("info", "rid", "sel")

    def __init__(self, rid: int, info: PasidInfo) -> None:
        super().__init__(info.slots)
        self.rid = rid
        self.info = info
        self.sel: Sel | None = None


class Caches:
    """All translation caches of one unit and the invalidation operations on them."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.deps: SlotTracker = pipeline.deps
        self.iotlb: TagCache = pipeline.iotlb
        """(DID, tag) -> entries per page size and block summaries."""
        self.devtlb: set[TlbEntry] = pipeline.devtlb
        """Translations held in devices' ATCs."""
        self.ctx: dict[int, CtxEntry] = {}
        self.pasid: dict[tuple[int, int], PasidEntry] = {}
        self.sels: dict[Hashable, Sel] = {}
        """Request (``rid``, or ``(rid, pasid, priv, exe)``) -> the selection its clean
        cached context (and PASID) entry gave: emptied when an entry of this cache is
        replaced or dropped, and by the tracker when any entry is marked suspect
        (:attr:`SlotTracker.derived`)."""
        self.deps.derived.append(self.sels)

    # -- fills --------------------------------------------------------------------
    def put_ctx(self, rid: int, info: CtxInfo) -> CtxEntry:
        self.sels.clear()
        self._drop(self.ctx.pop(rid, None))
        entry = self.ctx[rid] = CtxEntry(info)
        self.deps.add(entry)
        return entry

    def put_pasid(self, rid: int, pasid: int, info: PasidInfo) -> PasidEntry:
        self.sels.clear()
        self._drop(self.pasid.pop((rid, pasid), None))
        entry = self.pasid[rid, pasid] = PasidEntry(rid, info)
        self.deps.add(entry)
        return entry

    def _drop(self, entry: SlotCached | None) -> None:
        if entry is not None:
            self.sels.clear()
            self.deps.drop(entry)

    def all_entries(self) -> list[SlotCached]:
        return [*self.ctx.values(), *self.pasid.values(), *self.devtlb, *self.iotlb.entries()]

    @property
    def iotlb_size(self) -> int:
        return len(self.iotlb)

    def build_block(self, t: TagTable, bn: int, stage: Stage) -> Block | None:
        return self.iotlb.summarise(t, bn, stage)

    # -- context cache (spec 6.5.2.1) ---------------------------------------------------
    def flush_ctx(self, did: int | None = None, sid: int | None = None, fm: int = 0) -> int:
        """Drop context entries: all, of domain ``did`` (legacy entries carry a DID;
        scalable ones do not and are dropped by any domain-selective request), or of
        source-id ``sid`` with function bits masked per FM (1: bit 2, 2: bits 2:1,
        3: bits 2:0)."""
        mask = {0: 0, 1: 0b100, 2: 0b110, 3: 0b111}[fm]
        victims = [
            rid
            for rid, e in self.ctx.items()
            if (did is None or e.info.scalable or e.info.did == did)
            and (sid is None or (rid & ~mask) == (sid & ~mask))
        ]
        for rid in victims:
            self._drop(self.ctx.pop(rid))
        return len(victims)

    # -- PASID cache (spec 6.5.2.6) -----------------------------------------------------
    def flush_pasid(self, did: int | None = None, pasid: int | None = None) -> int:
        victims = [
            key
            for key, e in self.pasid.items()
            if (did is None or e.info.did == did) and (pasid is None or key[1] == pasid)
        ]
        for key in victims:
            self._drop(self.pasid.pop(key))
        return len(victims)

    # -- IOTLB (spec 6.5.2.3, 6.5.2.4) ---------------------------------------------------
    def flush_tlb(
        self,
        did: int | None = None,
        tag: int | None = None,
        addr: int | None = None,
        am: int = 0,
        nested: bool = False,
    ) -> int:
        """Drop IOTLB entries of ``did`` (None: all) with ``tag`` (None: any), and when
        ``addr`` is given only those overlapping ``[addr, addr + 2**(12+am))``.

        ``nested`` also drops the DID's nested entries: with ``tag`` = SL_TAG (an
        IOTLB invalidation) all of them whatever ``addr``, with ``tag`` = a PASID
        (a PASID-based one) those of that PASID in the same range."""
        if did is None and tag is None and addr is None:
            return self.iotlb.flush_all()
        first, last = 0, -1
        if addr is not None:
            span = 12 + am
            first = addr & ~((1 << span) - 1)
            last = first + (1 << span) - 1
        if did is not None and tag is not None:
            dropped = self.iotlb.flush_key((did, tag), first, last)
            if nested:
                if tag != SL_TAG:  # the PASID's nested twin, same range
                    dropped += self.iotlb.flush_key((did, tag | NEST_TAG), first, last)
                else:  # every nested entry of the DID, whatever the address

                    def nest(key: Hashable) -> bool:
                        k_did, k_tag = cast(tuple[int, int], key)
                        return k_did == did and k_tag >= NEST_TAG

                    dropped += self.iotlb.flush(nest)
            return dropped

        def match(key: Hashable) -> bool:
            k_did, k_tag = cast(tuple[int, int], key)
            return (did is None or k_did == did) and (tag is None or k_tag == tag)

        return self.iotlb.flush(match, first, last)
