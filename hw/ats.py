"""PCIe Address Translation Services, device side: the ATC and the function's ATS port.

PCIe Base spec chapter 10 (ATS). A function whose ATS capability is enabled (ATS
Control bit 15) sends *Translation Requests* to the translation agent (the IOMMU),
keeps the *Translation Completions* in its Address Translation Cache (ATC) and then
issues *Translated* requests (AT = translated), which the root complex lets through
to memory without translating them again. The agent sends *Invalidation Requests*
that drop ATC entries; the function answers each with an Invalidation Completion.

This module is generic: any :class:`hw.pci.PciFunction` gets an :class:`AtsPort`
when its ATS capability is enabled and the IOMMU in front of it implements
:class:`AtsAgent` (the VT-d model does; a model without ``ats_translate`` keeps the
function on untranslated requests). What is modelled and where it differs:

- The ATC is keyed by (PASID or None, page) with the page size the completion gave
  (4 KiB, 2 MiB, 1 GiB); an entry carries the Priv bit it was requested with and
  the R/W rights of the completion. Entries stay until invalidated (no capacity
  limit, no replacement) so that every use of a stale one is visible.
- Invalidation follows PCIe 10.3.8 as Linux ``arm_smmu_atc_inv_to_cmd`` documents
  it: a request *without* PASID drops every entry in the range, with or without
  PASID; a request with PASID drops that PASID's entries, or with Global Invalidate
  every PASID-tagged entry in the range (QEMU ``vtd_process_device_piotlb_desc``).
- The Smallest Translation Unit field (ATS Control 4:0) is ignored: completions
  are never smaller than 4 KiB anyway. The invalidate queue depth is not enforced.
- Each entry holds an opaque ``shadow`` the agent attached (its record of which
  table entries the translation came from) so the agent can report a translated
  request that used an entry no longer matching the tables (DESIGN §6). Whole
  2 MiB blocks of 4 KiB entries are summarised as merged physical runs (a derived
  view, dropped whenever one of its entries changes) so a long request costs one
  lookup per 2 MiB, as the VT-d IOTLB does (``hw.vtd.caches.Block``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from attrs import define, frozen

from hw.bus import DMA_FAULT_BUS, DmaFault, DmaResult

if TYPE_CHECKING:
    from hw.pci import PciFunction

ATS_R = 1
"""Translation Completion R bit: reads allowed."""
ATS_W = 2
"""Translation Completion W bit: writes allowed."""

SHIFTS = (12, 21, 30)
BLOCK_SHIFT = 21
PasidKey = int | None


class Shadow(Protocol):
    """What an agent attaches to an entry: at least a flag that says the table entries
    the translation came from may have changed (``hw.pagewatch.SlotCached`` is one)."""

    suspect: bool


class AtcEntry:
    """One translation: ``vpn`` = untranslated address >> ``shift``, ``phys`` the
    translated page base, ``perms`` ATS_R/ATS_W, ``priv`` the Priv bit requested,
    ``shadow`` the agent's private record (None if it keeps none)."""

    __slots__ = ("pasid", "perms", "phys", "priv", "shadow", "shift", "vpn")

    def __init__(
        self,
        pasid: PasidKey,
        priv: bool,
        vpn: int,
        shift: int,
        phys: int,
        perms: int,
        shadow: Shadow | None = None,
    ) -> None:
        self.pasid = pasid
        self.priv = priv
        self.vpn = vpn
        self.shift = shift
        self.phys = phys
        self.perms = perms
        self.shadow = shadow

    @property
    def addr(self) -> int:
        return self.vpn << self.shift

    def __repr__(self) -> str:
        return (
            f"AtcEntry(pasid={self.pasid}, priv={self.priv}, addr={self.addr:#x}, "
            f"size={1 << self.shift:#x}, phys={self.phys:#x}, perms={self.perms})"
        )


class AtcBlock:
    """A 2 MiB block whose 512 4 KiB entries of one PASID are all cached with the same
    Priv bit: the AND of their rights and the merged ``runs`` as ``(offset in block,
    physical address, length)``. ``stamp`` belongs to the agent (it records when it
    last found none of the block's shadows suspect)."""

    __slots__ = ("entries", "perms", "priv", "runs", "stamp")

    def __init__(
        self,
        entries: tuple[AtcEntry, ...],
        priv: bool,
        perms: int,
        runs: tuple[tuple[int, int, int], ...],
    ) -> None:
        self.entries = entries
        self.priv = priv
        self.perms = perms
        self.runs = runs
        self.stamp = -1


@frozen
class AtsResult:
    """Translation Completion(s) for one request: the entries translated in order from
    the requested address, and why translation stopped early (None if it did not).
    A fault with no entry before it means the first page has no usable translation
    (R=W=0 or an error completion)."""

    entries: tuple[AtcEntry, ...]
    fault: DmaFault | None = None


class AtsAgent(Protocol):
    """The optional IOMMU-model side of ATS (``hw.vtd.VtdUnit`` implements it)."""

    def ats_translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> AtsResult:
        """A Translation Request for ``[addr, addr + size)`` (``write``: NW=0)."""
        ...

    def ats_translated(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        write: bool,
        entries: Sequence[AtcEntry],
        blocks: Sequence[AtcBlock],
    ) -> DmaFault | None:
        """Translated requests that used ``entries`` and ``blocks``: the root complex
        checks the requester may send them; a fault blocks them all."""
        ...

    def ats_bind(self, rid: int, atc: AddressTranslationCache | None) -> None:
        """Where Invalidation Requests for ``rid`` go (None: ATS turned off)."""
        ...

    def ats_release(self, entries: Iterable[AtcEntry]) -> None:
        """The function dropped ``entries`` (invalidation, replacement, ATS off)."""
        ...


@define(slots=True)
class AtcStats:
    hits: int = 0
    """Pages of translated requests served from the ATC."""
    translation_requests: int = 0
    """Translation Requests sent (ATC misses)."""
    invalidations: int = 0
    """Invalidation Requests received."""
    dropped: int = 0
    """Entries dropped by invalidation."""


_Tables = tuple[dict[int, AtcEntry], dict[int, AtcEntry], dict[int, AtcEntry], dict[int, AtcBlock]]


class AddressTranslationCache:
    """The ATC of one function: per PASID key (None = requests without PASID), one dict
    per page size keyed by page number, and the 2 MiB block summaries."""

    def __init__(self, on_drop: Callable[[Iterable[AtcEntry]], None] | None = None) -> None:
        self.tables: dict[PasidKey, _Tables] = {}
        self.stats = AtcStats()
        self.on_drop = on_drop

    def __len__(self) -> int:
        return sum(len(d) for t in self.tables.values() for d in t[:3])

    def entries(self) -> list[AtcEntry]:
        return [e for t in self.tables.values() for d in t[:3] for e in d.values()]

    def lookup(self, pasid: PasidKey, addr: int) -> AtcEntry | None:
        t = self.tables.get(pasid)
        if t is None:
            return None
        return t[0].get(addr >> 12) or t[1].get(addr >> 21) or t[2].get(addr >> 30)

    def insert(self, entry: AtcEntry) -> None:
        t = self.tables.get(entry.pasid)
        if t is None:
            t = self.tables[entry.pasid] = ({}, {}, {}, {})
        d = t[:3][SHIFTS.index(entry.shift)]
        old = d.get(entry.vpn)
        d[entry.vpn] = entry
        t[3].pop((entry.vpn << entry.shift) >> BLOCK_SHIFT, None)
        if old is not None and self.on_drop is not None:
            self.on_drop((old,))

    def build_block(self, pasid: PasidKey, bn: int) -> AtcBlock | None:
        """Summarise 2 MiB block ``bn`` if its 512 4 KiB entries are all cached with
        one Priv bit."""
        t = self.tables.get(pasid)
        if t is None:
            return None
        d = t[0]
        first = bn << 9
        if first not in d or first + 511 not in d:
            return None
        got = [d.get(v) for v in range(first, first + 512)]
        entries: list[AtcEntry] = []
        for e in got:
            if e is None:
                return None
            entries.append(e)
        priv = entries[0].priv
        perms = ATS_R | ATS_W
        runs: list[tuple[int, int, int]] = []
        start = end = -1
        off = 0
        for e in entries:
            if e.priv != priv:
                return None
            perms &= e.perms
            if e.phys == end:
                end += 4096
            else:
                if start >= 0:
                    runs.append((off - (end - start), start, end - start))
                start, end = e.phys, e.phys + 4096
            off += 4096
        runs.append((off - (end - start), start, end - start))
        blk = AtcBlock(tuple(entries), priv, perms, tuple(runs))
        t[3][bn] = blk
        return blk

    def invalidate(self, pasid: PasidKey, addr: int, size: int, all_pasids: bool = False) -> int:
        """An Invalidation Request (PCIe 10.3.8) for ``[addr, addr + size)``: without
        PASID (``pasid`` None) every entry in the range goes; with a PASID only that
        PASID's, or with ``all_pasids`` (Global Invalidate) every PASID-tagged one.
        Returns the number of entries dropped."""
        self.stats.invalidations += 1
        if pasid is None:
            keys = list(self.tables)
        elif all_pasids:
            keys = [k for k in self.tables if k is not None]
        else:
            keys = [pasid] if pasid in self.tables else []
        end = addr + size
        dropped: list[AtcEntry] = []
        for key in keys:
            t = self.tables[key]
            for shift, d in zip(SHIFTS, t[:3], strict=True):
                first = addr >> shift
                last = (end - 1) >> shift
                if last - first + 1 <= len(d):
                    victims = [v for v in range(first, last + 1) if v in d]
                else:
                    victims = [v for v in d if first <= v <= last]
                for vpn in victims:
                    dropped.append(d.pop(vpn))
            blocks = t[3]
            if blocks:
                b0, b1 = addr >> BLOCK_SHIFT, (end - 1) >> BLOCK_SHIFT
                if b1 - b0 + 1 <= len(blocks):
                    for bn in range(b0, b1 + 1):
                        blocks.pop(bn, None)
                else:
                    for bn in [b for b in blocks if b0 <= b <= b1]:
                        del blocks[bn]
            if not any(t[:3]):
                del self.tables[key]
        self.stats.dropped += len(dropped)
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)
        return len(dropped)

    def clear(self) -> int:
        """Drop everything (ATS disabled, function reset)."""
        dropped = self.entries()
        self.tables.clear()
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)
        return len(dropped)


class AtsPort:
    """The ATS side of one function: its ATC, and DMA through Translation Requests and
    Translated requests. Created by :class:`hw.pci.PciFunction` when ATS is enabled
    and the IOMMU in front of it is an :class:`AtsAgent`."""

    def __init__(self, fn: PciFunction, agent: AtsAgent) -> None:
        self.fn = fn
        self.agent = agent
        self.rid = fn.addr.rid
        self.atc = AddressTranslationCache(agent.ats_release)

    def close(self) -> None:
        self.atc.clear()
        self.agent.ats_bind(self.rid, None)

    def translate(
        self, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult:
        """A DMA access as translated requests: ATC hits, Translation Requests on
        misses (and when a write needs W the cached entry lacks), then one check by
        the root complex for all the translated requests of the access."""
        if size <= 0:
            return DmaResult(())
        if pasid is None:
            priv = False
        atc = self.atc
        stats = atc.stats
        need = ATS_W if write else ATS_R
        t = atc.tables.get(pasid)
        runs: list[tuple[int, int]] = []
        run_start = run_end = -1
        used: list[AtcEntry] = []
        blocks: list[AtcBlock] = []
        a, end = addr, addr + size
        hits = 0
        fault: DmaFault | None = None
        refused: DmaFault | None = None
        while a < end:
            if t is not None:
                blk = t[3].get(a >> BLOCK_SHIFT)
                if blk is not None and blk.priv == priv and blk.perms & need == need:
                    base = (a >> BLOCK_SHIFT) << BLOCK_SHIFT
                    lim = base + (1 << BLOCK_SHIFT)
                    if lim > end:
                        lim = end
                    lo, hi = a - base, lim - base
                    for off, phys, n in blk.runs:
                        if off + n <= lo:
                            continue
                        if off >= hi:
                            break
                        s = lo if lo > off else off
                        k = (off + n if off + n < hi else hi) - s
                        phys += s - off
                        if phys == run_end:
                            run_end += k
                        else:
                            if run_start >= 0:
                                runs.append((run_start, run_end - run_start))
                            run_start, run_end = phys, phys + k
                    hits += ((lim - 1) >> 12) - (a >> 12) + 1
                    blocks.append(blk)
                    a = lim
                    continue
                e = t[0].get(a >> 12) or t[1].get(a >> 21) or t[2].get(a >> 30)
            else:
                e = None
            if e is None or e.priv != priv or e.perms & need != need:
                if refused is not None and a >= refused.addr:
                    fault = refused  # this access already asked: no second request
                    break
                stats.translation_requests += 1
                res = self.agent.ats_translate(self.rid, pasid, priv, a, end - a, write)
                for ne in res.entries:
                    atc.insert(ne)
                refused = res.fault
                e = atc.lookup(pasid, a)
                t = atc.tables.get(pasid)
                if e is None or e.priv != priv or e.perms & need != need:
                    fault = res.fault or DmaFault(a, DMA_FAULT_BUS, write, "ATS: no translation")
                    break
            else:
                hits += 1
            used.append(e)
            shift = e.shift
            chunk = (((a >> shift) + 1) << shift) - a
            if a + chunk > end:
                chunk = end - a
            phys = e.phys | (a & ((1 << shift) - 1))
            if phys == run_end:
                run_end += chunk
            else:
                if run_start >= 0:
                    runs.append((run_start, run_end - run_start))
                run_start, run_end = phys, phys + chunk
            if shift == 12 and not (a + chunk) & ((1 << BLOCK_SHIFT) - 1):
                atc.build_block(pasid, a >> BLOCK_SHIFT)
            a += chunk
        if run_start >= 0:
            runs.append((run_start, run_end - run_start))
        stats.hits += hits
        if used or blocks:
            blocked = self.agent.ats_translated(self.rid, pasid, priv, write, used, blocks)
            if blocked is not None:
                return DmaResult((), blocked)
        return self._in_ram(addr, runs, fault, write)

    def _in_ram(
        self, addr: int, runs: list[tuple[int, int]], fault: DmaFault | None, write: bool
    ) -> DmaResult:
        """Translated requests reach RAM directly: cut at the first byte outside it."""
        m = self.fn.machine
        mem = m.memory if m is not None else None
        top = mem.size if mem is not None and not mem.holes else -1
        done = 0
        for i, (pa, n) in enumerate(runs):
            if pa + n <= top:
                done += n
                continue
            good = mem.ram_run(pa, n) if mem is not None else 0
            if good < n:
                kept = runs[:i] + ([(pa, good)] if good else [])
                bus = DmaFault(addr + done + good, DMA_FAULT_BUS, write, "outside RAM")
                return DmaResult(tuple(kept), bus)
            done += n
        return DmaResult(tuple(runs), fault)
