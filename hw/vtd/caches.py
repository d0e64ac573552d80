"""Translation caches: context cache, PASID cache and IOTLB, with page-write tracking.

Entries stay until invalidated (DESIGN §6). Every entry remembers the table pages it
was derived from; :class:`hw.pagewatch.DepTracker` watches those pages in RAM and marks
the entries *suspect* when one is written, so the unit re-walks only entries that may
have gone stale (VT-d spec 6.5 says hardware may keep using them; the model keeps
using them too, and reports when that use differs from the tables).

IOTLB entries are tagged ``(DID, -1)`` for second-stage and pass-through-free legacy
translations and ``(DID, PASID)`` for first-stage translations (spec 6.2.1; QEMU keys
its IOTLB by (gfn, PASID, SID, level) instead). Per tag there is one dict per page
size, keyed by the page number, so the hit path builds no tuple per page.
"""

from __future__ import annotations

from collections.abc import Iterable

from hw.memory import Memory
from hw.pagewatch import Cached, DepTracker
from hw.vtd.walk import CtxInfo, PasidInfo, Stage

SHIFTS = (12, 21, 30)
SL_TAG = -1


class CtxEntry(Cached):
    __slots__ = ("info",)

    def __init__(self, info: CtxInfo) -> None:
        super().__init__(info.pages)
        self.info = info


class PasidEntry(Cached):
    __slots__ = ("info", "rid")

    def __init__(self, rid: int, info: PasidInfo) -> None:
        super().__init__(info.pages)
        self.rid = rid
        self.info = info


class TlbEntry(Cached):
    """One IOTLB entry: ``phys`` is the page frame base, ``shift`` the page size."""

    __slots__ = ("did", "dirty", "perms", "phys", "pte_addr", "shift", "stage", "tag", "vpn")

    def __init__(
        self,
        did: int,
        tag: int,
        vpn: int,
        shift: int,
        phys: int,
        perms: int,
        stage: Stage,
        pte_addr: int,
        pages: Iterable[int],
    ) -> None:
        super().__init__(pages)
        self.did = did
        self.tag = tag
        self.vpn = vpn
        self.shift = shift
        self.phys = phys
        self.perms = perms
        self.stage = stage
        self.pte_addr = pte_addr
        self.dirty = False


class Caches:
    """All translation caches of one unit and the invalidation operations on them."""

    def __init__(self, memory: Memory) -> None:
        self.deps = DepTracker(memory)
        self.ctx: dict[int, CtxEntry] = {}
        self.pasid: dict[tuple[int, int], PasidEntry] = {}
        self.iotlb: dict[tuple[int, int], tuple[dict[int, TlbEntry], ...]] = {}

    # -- fills --------------------------------------------------------------------
    def put_ctx(self, rid: int, info: CtxInfo) -> CtxEntry:
        self._drop(self.ctx.pop(rid, None))
        entry = self.ctx[rid] = CtxEntry(info)
        self.deps.add(entry)
        return entry

    def put_pasid(self, rid: int, pasid: int, info: PasidInfo) -> PasidEntry:
        self._drop(self.pasid.pop((rid, pasid), None))
        entry = self.pasid[rid, pasid] = PasidEntry(rid, info)
        self.deps.add(entry)
        return entry

    def put_tlb(self, entry: TlbEntry) -> None:
        sizes = self.iotlb.get((entry.did, entry.tag))
        if sizes is None:
            sizes = self.iotlb[entry.did, entry.tag] = ({}, {}, {})
        d = sizes[SHIFTS.index(entry.shift)]
        self._drop(d.get(entry.vpn))
        d[entry.vpn] = entry
        self.deps.add(entry)

    def _drop(self, entry: Cached | None) -> None:
        if entry is not None:
            self.deps.drop(entry)

    def all_entries(self) -> list[Cached]:
        out: list[Cached] = [*self.ctx.values(), *self.pasid.values()]
        for sizes in self.iotlb.values():
            for d in sizes:
                out.extend(d.values())
        return out

    @property
    def iotlb_size(self) -> int:
        return sum(len(d) for sizes in self.iotlb.values() for d in sizes)

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
    ) -> int:
        """Drop IOTLB entries of ``did`` (None: all) with ``tag`` (None: any), and when
        ``addr`` is given only those overlapping ``[addr, addr + 2**(12+am))``."""
        n = 0
        for key in list(self.iotlb):
            if did is not None and key[0] != did:
                continue
            if tag is not None and key[1] != tag:
                continue
            sizes = self.iotlb[key]
            for shift, d in zip(SHIFTS, sizes, strict=True):
                n += self._flush_range(d, shift, addr, am)
            if not any(sizes):
                del self.iotlb[key]
        return n

    def _flush_range(self, d: dict[int, TlbEntry], shift: int, addr: int | None, am: int) -> int:
        if addr is None:
            victims = list(d)
        else:
            span = 12 + am
            base = addr & ~((1 << span) - 1)
            first = base >> shift
            last = (base + (1 << span) - 1) >> shift
            if last - first + 1 <= len(d):
                victims = [v for v in range(first, last + 1) if v in d]
            else:
                victims = [v for v in d if first <= v <= last]
        for vpn in victims:
            self._drop(d.pop(vpn))
        return len(victims)
