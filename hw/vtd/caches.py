"""Translation caches: context cache, PASID cache and IOTLB, with page-write tracking,
plus the shadows of the translations handed to devices' ATCs (:class:`DevTlbShadow`).

Entries stay until invalidated (DESIGN §6). Every entry remembers the table entries
(8-byte granules) it was derived from; :class:`hw.pagewatch.SlotTracker` watches their
pages in RAM and marks an entry *suspect* when one of *its* granules changes, so the
unit re-walks only entries that may have gone stale (VT-d spec 6.5 says hardware may
keep using them; the model keeps using them too, and reports when that use differs
from the tables). The model's own A/D-bit updates do not mark anything.

IOTLB entries are tagged ``(DID, -1)`` for second-stage and pass-through-free legacy
translations and ``(DID, PASID)`` for first-stage translations (spec 6.2.1; QEMU keys
its IOTLB by (gfn, PASID, SID, level) instead). Per tag there is one dict per page
size, keyed by the page number, so the hit path builds no tuple per page, plus a
dict of :class:`Block` summaries: the merged physical runs of a 2 MiB IOVA block
whose 512 4 KiB entries are all cached and clean, so a long request costs one lookup
per 2 MiB instead of one per page. Summaries are a derived view, not extra state the
spec knows: any change to an entry of the block drops it (fills, invalidations,
re-verification) and any suspect marking anywhere outdates all of them
(:attr:`SlotTracker.version`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, cast

from hw.memory import Memory
from hw.pagewatch import SlotCached, SlotTracker
from hw.vtd.walk import INTR_HI, INTR_LO, CtxInfo, PasidInfo, Stage

SHIFTS = (12, 21, 30)
SL_TAG = -1
BLOCK_SHIFT = 21
BLOCK: Final = 3
"""Index of the block-summary dict in an IOTLB tag's tuple (after the 3 page sizes)."""


class CtxEntry(SlotCached):
    __slots__ = ("info",)

    def __init__(self, info: CtxInfo) -> None:
        super().__init__(info.slots)
        self.info = info


class PasidEntry(SlotCached):
    __slots__ = ("info", "rid")

    def __init__(self, rid: int, info: PasidInfo) -> None:
        super().__init__(info.slots)
        self.rid = rid
        self.info = info


class TlbEntry(SlotCached):
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
        slots: Iterable[int],
    ) -> None:
        super().__init__(slots)
        self.did = did
        self.tag = tag
        self.vpn = vpn
        self.shift = shift
        self.phys = phys
        self.perms = perms
        self.stage = stage
        self.pte_addr = pte_addr
        self.dirty = False


class DevTlbShadow(SlotCached):
    """The unit's record of one translation it handed to a device's ATC (a
    Translation Completion): what it said and the table granules it came from
    (context, PASID and paging entries), so a translated request that uses it after
    those changed without a device-TLB invalidation is reported (DESIGN §6). Not a
    cache the spec knows: the ATC is in the device (:mod:`hw.ats`)."""

    __slots__ = ("pasid", "perms", "phys", "priv", "rid", "shift", "vpn")

    def __init__(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        vpn: int,
        shift: int,
        phys: int,
        perms: int,
        slots: Iterable[int],
    ) -> None:
        super().__init__(slots)
        self.rid = rid
        self.pasid = pasid
        self.priv = priv
        self.vpn = vpn
        self.shift = shift
        self.phys = phys
        self.perms = perms


class Block:
    """Summary of one 2 MiB IOVA block whose 512 4 KiB IOTLB entries of one tag are all
    cached, clean (not suspect) and filled for ``stage``: the AND of their rights,
    whether all are dirty, and the physically merged ``runs`` as
    ``(offset in block, physical address, length)``."""

    __slots__ = ("dirty", "perms", "runs", "stage", "version")

    def __init__(
        self,
        stage: Stage,
        perms: int,
        dirty: bool,
        runs: tuple[tuple[int, int, int], ...],
        version: int,
    ) -> None:
        self.stage = stage
        self.perms = perms
        self.dirty = dirty
        self.runs = runs
        self.version = version


Sizes = tuple[dict[int, TlbEntry], dict[int, TlbEntry], dict[int, TlbEntry], dict[int, Block]]
"""One IOTLB tag: entries per page size (4 KiB, 2 MiB, 1 GiB), then block summaries."""


class Caches:
    """All translation caches of one unit and the invalidation operations on them."""

    def __init__(self, memory: Memory) -> None:
        self.deps = SlotTracker(memory)
        self.ram = memory.size
        self.ctx: dict[int, CtxEntry] = {}
        self.pasid: dict[tuple[int, int], PasidEntry] = {}
        self.iotlb: dict[tuple[int, int], Sizes] = {}
        """(DID, tag) -> (4 KiB entries, 2 MiB entries, 1 GiB entries, block summaries)."""
        self.devtlb: set[DevTlbShadow] = set()
        """Shadows of the translations held in devices' ATCs."""

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
            sizes = self.iotlb[entry.did, entry.tag] = ({}, {}, {}, {})
        i = SHIFTS.index(entry.shift)
        d = sizes[:BLOCK][i]
        self._drop(d.get(entry.vpn))
        d[entry.vpn] = entry
        if i == 0:
            sizes[BLOCK].pop(entry.vpn >> 9, None)
        self.deps.add(entry)

    def put_devtlb(self, shadow: DevTlbShadow) -> None:
        self.devtlb.add(shadow)
        self.deps.add(shadow)

    def drop_devtlb(self, shadow: DevTlbShadow) -> None:
        if shadow in self.devtlb:
            self.devtlb.discard(shadow)
            self.deps.drop(shadow)

    def _drop(self, entry: SlotCached | None) -> None:
        if entry is not None:
            self.deps.drop(entry)

    def all_entries(self) -> list[SlotCached]:
        out: list[SlotCached] = [*self.ctx.values(), *self.pasid.values(), *self.devtlb]
        for sizes in self.iotlb.values():
            for d in sizes[:BLOCK]:
                out.extend(d.values())
        return out

    @property
    def iotlb_size(self) -> int:
        return sum(len(d) for sizes in self.iotlb.values() for d in sizes[:BLOCK])

    # -- block summaries (a derived view of the 4 KiB entries) ------------------------
    def entry_changed(self, entry: TlbEntry) -> None:
        """``entry`` (cached) was re-verified or re-bound: drop its block's summary."""
        if entry.shift == 12:
            self.iotlb[entry.did, entry.tag][BLOCK].pop(entry.vpn >> 9, None)

    def build_block(self, sizes: Sizes, bn: int, stage: Stage) -> Block | None:
        """Summarise 2 MiB block ``bn`` if all its 4 KiB entries are cached, clean and
        filled for ``stage``, and all of it maps RAM outside the interrupt range."""
        d = sizes[0]
        first = bn << 9
        if first not in d or first + 511 not in d:
            return None
        got = list(map(d.get, range(first, first + 512)))
        if None in got:
            return None
        entries = cast(list[TlbEntry], got)
        perms = -1
        dirty = True
        runs: list[tuple[int, int, int]] = []
        start = end = -1
        off = 0
        for e in entries:
            if e.suspect or e.stage is not stage:
                return None
            perms &= e.perms
            dirty = dirty and e.dirty
            phys = e.phys
            if phys == end:
                end += 4096
            else:
                if start >= 0:
                    runs.append((off - (end - start), start, end - start))
                start, end = phys, phys + 4096
            off += 4096
        runs.append((off - (end - start), start, end - start))
        for _, phys, n in runs:
            if phys + n > self.ram or (phys < INTR_HI and phys + n > INTR_LO):
                return None
        blk = Block(stage, perms, dirty, tuple(runs), self.deps.version)
        sizes[BLOCK][bn] = blk
        return blk

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
            blocks = sizes[BLOCK]
            for shift, d in zip(SHIFTS, sizes[:BLOCK], strict=True):
                n += self._flush_range(d, shift, addr, am, blocks)
            if not any(sizes[:BLOCK]):
                del self.iotlb[key]
        return n

    def _flush_range(
        self,
        d: dict[int, TlbEntry],
        shift: int,
        addr: int | None,
        am: int,
        blocks: dict[int, Block],
    ) -> int:
        if addr is None:
            victims = list(d)
            if shift == 12:
                blocks.clear()
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
            if shift == 12:
                blocks.pop(vpn >> 9, None)
        return len(victims)
