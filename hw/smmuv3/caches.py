"""SMMUv3 caches: STE by StreamID, CD by (StreamID, SubstreamID), TLB by (VMID, ASID).

Entries stay until invalidated (DESIGN §6, IHI 0070 §16.2): the model keeps using a
cached entry after its source changed, as hardware may, and the unit reports that
use when it differs from a fresh walk. Each entry depends on the RAM pages it was
built from through :class:`hw.pagewatch.DepTracker`, and knows the command that
would have removed it, so a stale use names the missing CFGI/TLBI.

Tags follow facts A11: the SubstreamID is *not* a TLB tag. A TLB entry is tagged by
(VMID, ASID) when the leaf has nG=1, and by (VMID, :data:`GLOBAL`) when nG=0 (it then
matches every ASID). Per tag there is one dict per page size, keyed by page number.
Only valid structures are cached (faults are not), and L1STD/L1CD descriptors are
part of the STE/CD entry built through them rather than cached on their own.
"""

from __future__ import annotations

from collections.abc import Iterable

from hw.memory import Memory
from hw.pagewatch import Cached, DepTracker
from hw.smmuv3.walk import CdInfo, StreamInfo

SHIFTS = (12, 21, 30)
GLOBAL = -1


class SteEntry(Cached):
    __slots__ = ("info",)

    def __init__(self, info: StreamInfo) -> None:
        super().__init__(info.pages)
        self.info = info


class CdEntry(Cached):
    __slots__ = ("info",)

    def __init__(self, info: CdInfo) -> None:
        super().__init__(info.pages)
        self.info = info


class TlbEntry(Cached):
    """One TLB entry: ``phys`` is the frame base, ``shift`` the page size, ``root`` the
    table root it was walked from (to spot one ASID used with two sets of tables)."""

    __slots__ = ("asid", "perms", "phys", "root", "shift", "vmid", "vpn")

    def __init__(
        self,
        vmid: int,
        asid: int,
        vpn: int,
        shift: int,
        phys: int,
        perms: int,
        root: int,
        pages: Iterable[int],
    ) -> None:
        super().__init__(pages)
        self.vmid = vmid
        self.asid = asid
        self.vpn = vpn
        self.shift = shift
        self.phys = phys
        self.perms = perms
        self.root = root


TlbSizes = tuple[dict[int, TlbEntry], dict[int, TlbEntry], dict[int, TlbEntry]]


class Caches:
    """All caches of one SMMU and the invalidation operations on them (IHI 0070 §4.3,
    §4.4)."""

    def __init__(self, memory: Memory) -> None:
        self.deps = DepTracker(memory)
        self.ste: dict[int, SteEntry] = {}
        self.cd: dict[tuple[int, int], CdEntry] = {}
        self.tlb: dict[tuple[int, int], TlbSizes] = {}

    # -- fills ----------------------------------------------------------------------------
    def put_ste(self, sid: int, info: StreamInfo) -> SteEntry:
        self._drop(self.ste.pop(sid, None))
        entry = self.ste[sid] = SteEntry(info)
        self.deps.add(entry)
        return entry

    def put_cd(self, sid: int, index: int, info: CdInfo) -> CdEntry:
        self._drop(self.cd.pop((sid, index), None))
        entry = self.cd[sid, index] = CdEntry(info)
        self.deps.add(entry)
        return entry

    def put_tlb(self, entry: TlbEntry) -> None:
        sizes = self.tlb.get((entry.vmid, entry.asid))
        if sizes is None:
            sizes = self.tlb[entry.vmid, entry.asid] = ({}, {}, {})
        d = sizes[SHIFTS.index(entry.shift)]
        self._drop(d.get(entry.vpn))
        d[entry.vpn] = entry
        self.deps.add(entry)

    def _drop(self, entry: Cached | None) -> None:
        if entry is not None:
            self.deps.drop(entry)

    @property
    def tlb_size(self) -> int:
        return sum(len(d) for sizes in self.tlb.values() for d in sizes)

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
            self._drop(entry)
            return int(entry is not None)
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
    ) -> int:
        """Drop TLB entries of ``vmid`` (None: any) and ``asid`` (None: any ASID), and
        with ``addr`` only those overlapping ``[addr, addr + pages * 4 KiB)``. Global
        (nG=0) entries match any ASID unless ``global_too`` is False (TLBI_NH_ASID)."""
        n = 0
        for key in list(self.tlb):
            kv, ka = key
            if vmid is not None and kv != vmid:
                continue
            if ka == GLOBAL:
                if not global_too:
                    continue
            elif asid is not None and ka != asid:
                continue
            sizes = self.tlb[key]
            for shift, d in zip(SHIFTS, sizes, strict=True):
                n += self._flush_range(d, shift, addr, pages)
            if not any(sizes):
                del self.tlb[key]
        return n

    def _flush_range(self, d: dict[int, TlbEntry], shift: int, addr: int | None, n: int) -> int:
        if addr is None:
            victims = list(d)
        else:
            first = addr >> shift
            last = (addr + (n << 12) - 1) >> shift
            if last - first + 1 <= len(d):
                victims = [v for v in range(first, last + 1) if v in d]
            else:
                victims = [v for v in d if first <= v <= last]
        for vpn in victims:
            self._drop(d.pop(vpn))
        return len(victims)
