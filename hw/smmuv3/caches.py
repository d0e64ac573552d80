"""SMMUv3 caches: STE by StreamID, CD by (StreamID, SubstreamID), TLB by (VMID, ASID).

Entries stay until invalidated (DESIGN §6, IHI 0070 §16.2): the model keeps using a
cached entry after its source changed, as hardware may, and the unit reports that
use when it differs from a fresh walk. Each entry depends on the RAM pages it was
built from (8-byte granules, :class:`hw.pagewatch.SlotTracker`); the unit names the
command that would have removed a stale one (CFGI/TLBI). The TLB is the shared
pipeline's :class:`hw.translation.TagCache`; an entry's source is the TTBx root it
was walked from.

Tags follow facts A11: the SubstreamID is *not* a TLB tag. A TLB entry is tagged by
(VMID, ASID) when the leaf has nG=1, and by (VMID, :data:`GLOBAL`) when nG=0 (it then
matches every ASID). A stage-2-only entry (STE.Config 0b110) is tagged (VMID,
:data:`S2_ONLY`) and its address is the IPA; only TLBI_S2_IPA, TLBI_S12_VMALL and
TLBI_NSNH_ALL remove it. A nested entry is tagged like a stage-1 one and holds the
combined translation, so TLBI_S2_IPA leaves it (the architecture requires stage-1
invalidation of the VMID after a stage-2 change: TLBI_NH_ALL or TLBI_S12_VMALL).
Only valid structures are cached (faults are not), and L1STD/L1CD descriptors are
part of the STE/CD entry built through them rather than cached on their own.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, cast

from hw.pagewatch import SlotCached
from hw.smmuv3.walk import CdInfo, StreamInfo, need_bits
from hw.translation import Pipeline, TagCache

if TYPE_CHECKING:
    from hw.smmuv3.slow_path import TlbSlowPath

GLOBAL = -1
S2_ONLY = -2


class SteEntry(SlotCached):
    __slots__ = ("info", "sels")

    def __init__(self, info: StreamInfo) -> None:
        super().__init__(info.slots)
        self.info = info
        self.sels: dict[int | None, Sel] = {}
        """The selections made through this entry, by SubstreamID (None: without
        one): valid while this entry is clean and cached, and their CD entry too
        (:meth:`Caches.put_cd` and :meth:`Caches.flush_cd` forget those of a CD
        entry that goes)."""


class CdEntry(SlotCached):
    __slots__ = ("info",)

    def __init__(self, info: CdInfo) -> None:
        super().__init__(info.slots)
        self.info = info


class Sel:
    """What a request selected before its pages (IHI 0070 §5.2 Config, S1CDMax,
    S1DSS): the STE, the CD (None: stage 2 alone), the TLB tags and the TTBx roots.
    Derived from the cached STE and CD entries alone, so it is kept on the STE entry
    (:attr:`SteEntry.sels`) and a request whose entries are clean builds nothing
    before the pipeline (the unit's ``translate``)."""

    __slots__ = ("cd", "cde", "gtag", "needs", "root0", "root1", "slows", "ste", "tag")

    def __init__(self, ste: StreamInfo, cd: CdInfo | None, cde: CdEntry | None) -> None:
        self.ste = ste
        self.cd = cd
        self.cde = cde
        """The CD entry ``cd`` came from: a suspect one sends requests the general way."""
        vmid = ste.vmid
        self.gtag: tuple[int, int] | None = None
        """The tag of global (nG=0) entries; None for stage 2 alone."""
        if cd is None:
            self.root0 = self.root1 = ste.s2.ttb if ste.s2 is not None else 0
            self.tag = (vmid, S2_ONLY)
        else:
            self.root0, self.root1 = cd.ttb0, cd.ttb1
            self.tag = (vmid, cd.asid)
            self.gtag = (vmid, GLOBAL)
        pan = cd.pan if cd is not None else False
        self.needs = tuple(need_bits(bool(i & 1), bool(i & 2), pan) for i in range(4))
        """:func:`need_bits`, indexed ``write | priv << 1``."""
        self.slows: tuple[list[TlbSlowPath | None], list[TlbSlowPath | None]] = (
            [None, None],
            [None, None],
        )
        """The slow path of each request kind, indexed ``[priv][write]``, made at
        first use."""


class Caches:
    """All caches of one SMMU and the invalidation operations on them (IHI 0070 §4.3,
    §4.4)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.deps = pipeline.deps
        self.ste: dict[int, SteEntry] = {}
        self.cd: dict[tuple[int, int], CdEntry] = {}
        self.tlb: TagCache = pipeline.iotlb
        """(VMID, ASID or GLOBAL) -> entries per page size and block summaries."""
        self.s2_only = False
        """A stage-2-only selection was made (:class:`Sel`, set by the unit): before
        that no TLB entry is tagged :data:`S2_ONLY`, so flushing every stage-1 entry
        is flushing the whole TLB."""

    # -- fills ----------------------------------------------------------------------------
    def put_ste(self, sid: int, info: StreamInfo) -> SteEntry:
        self._drop(self.ste.pop(sid, None))
        entry = self.ste[sid] = SteEntry(info)
        self.deps.add(entry)
        return entry

    def put_cd(self, sid: int, index: int, info: CdInfo) -> CdEntry:
        old = self.cd.pop((sid, index), None)
        if old is not None:
            self._unselect(sid, old)
            self._drop(old)
        entry = self.cd[sid, index] = CdEntry(info)
        self.deps.add(entry)
        return entry

    def _unselect(self, sid: int, old: CdEntry | None) -> None:
        """CD entry ``old`` of ``sid`` goes (None: every one): forget the selections
        made through it."""
        se = self.ste.get(sid)
        if se is not None and se.sels:
            if old is None:
                se.sels.clear()
            else:
                for ssid in [k for k, sel in se.sels.items() if sel.cde is old]:
                    del se.sels[ssid]

    def _drop(self, entry: SlotCached | None) -> None:
        if entry is not None:
            self.deps.drop(entry)

    @property
    def tlb_size(self) -> int:
        return len(self.tlb)

    # -- configuration invalidation (IHI 0070 §4.3) ---------------------------------------
    def flush_ste(self, first: int, count: int) -> int:
        """CFGI_STE / CFGI_STE_RANGE / CFGI_ALL: STEs of ``[first, first + count)`` and
        every CD cached through them (§4.3.1: CFGI_STE also invalidates the CDs)."""
        last = first + count
        n = 0
        for sid in [s for s in self.ste if first <= s < last]:
            self._drop(self.ste.pop(sid))
            n += 1
        for key in [k for k in self.cd if first <= k[0] < last]:
            self._drop(self.cd.pop(key))
            n += 1
        return n

    def flush_cd(self, sid: int, index: int | None) -> int:
        """CFGI_CD (one index) / CFGI_CD_ALL (``index`` None) for one StreamID."""
        if index is not None:
            entry = self.cd.pop((sid, index), None)
            if entry is not None:
                self._unselect(sid, entry)
                self._drop(entry)
            return int(entry is not None)
        self._unselect(sid, None)
        victims = [k for k in self.cd if k[0] == sid]
        for key in victims:
            self._drop(self.cd.pop(key))
        return len(victims)

    # -- TLB invalidation (IHI 0070 §4.4) ----------------------------------------------------
    def flush_tlb(
        self,
        vmid: int | None = None,
        asid: int | None = None,
        addr: int | None = None,
        pages: int = 1,
        global_too: bool = True,
        s1: bool = True,
        s2: bool = False,
    ) -> int:
        """Drop TLB entries of ``vmid`` (None: any) and ``asid`` (None: any ASID), and
        with ``addr`` only those overlapping ``[addr, addr + pages * 4 KiB)``. Global
        (nG=0) entries match any ASID unless ``global_too`` is False (TLBI_NH_ASID).
        ``s1``/``s2``: whether stage-1 (and nested) entries / stage-2-only entries go."""
        if addr is None and vmid is None and asid is None and global_too and s1:
            if s2 or not self.s2_only:  # every entry goes: the whole cache
                return self.tlb.flush_all()
            for key in self.tlb.tables:
                if key[1] == S2_ONLY:  # type: ignore[index]
                    break
            else:  # no stage-2-only entry stays either: the whole cache
                return self.tlb.flush_all()
        return self._flush_matching(vmid, asid, addr, pages, global_too, s1, s2)

    def _flush_matching(
        self,
        vmid: int | None,
        asid: int | None,
        addr: int | None,
        pages: int,
        global_too: bool,
        s1: bool,
        s2: bool,
    ) -> int:
        """:meth:`flush_tlb` through a tag filter (apart, so that the whole-cache case
        builds no closure cells)."""

        def match(key: Hashable) -> bool:
            kv, ka = cast(tuple[int, int], key)
            if vmid is not None and kv != vmid:
                return False
            if ka == S2_ONLY:
                return s2
            if not s1:
                return False
            if ka == GLOBAL:
                return global_too
            return asid is None or ka == asid

        if addr is None:
            return self.tlb.flush(match)
        return self.tlb.flush(match, addr, addr + (pages << 12) - 1)
