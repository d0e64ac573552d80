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
- The ATC is a :class:`hw.translation.TagCache` tagged by PASID and its entries are
  :class:`hw.translation.TlbEntry` objects the agent made (source: the Priv bit), so
  a device access runs through the same hit path as an IOMMU's IOTLB
  (:func:`hw.translation.translate_run`), 2 MiB block summaries included. The agent
  registers the entries it hands out with its dependency tracker: an entry whose
  source tables changed is *suspect*, which the device cannot see; it still uses
  the entry, and the agent checks every suspect entry an access used (DESIGN §6).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from attrs import define, frozen

from hw.bus import DMA_FAULT_BUS, DmaFault, DmaResult
from hw.translation import (
    Block,
    RamRun,
    TagCache,
    TlbEntry,
    Versioned,
    ram_limits,
    translate_run,
)

if TYPE_CHECKING:
    from hw.pagewatch import SlotTracker
    from hw.pci import PciFunction

ATS_R = 1
"""Translation Completion R bit: reads allowed."""
ATS_W = 2
"""Translation Completion W bit: writes allowed."""

PasidKey = int | None
AtcBlock = Block
"""A 2 MiB block summary of an ATC (source: the Priv bit of its entries)."""


class AtcEntry(TlbEntry):
    """One translation: ``vpn`` = untranslated address >> ``shift``, ``phys`` the
    translated page base, ``perms`` ATS_R/ATS_W, ``priv`` the Priv bit requested
    (the entry's source), ``pasid`` its tag; ``slots`` are the table granules the
    agent built it from (empty for an agent that tracks none)."""

    __slots__ = ()

    def __init__(
        self,
        pasid: PasidKey,
        priv: bool,
        vpn: int,
        shift: int,
        phys: int,
        perms: int,
        slots: Collection[int] = (),
    ) -> None:
        super().__init__(pasid, vpn, shift, phys, perms, bool(priv), slots=slots)

    @property
    def pasid(self) -> PasidKey:
        return self.tag  # type: ignore[return-value]

    @property
    def priv(self) -> bool:
        return self.src is True

    def __repr__(self) -> str:
        return (
            f"AtcEntry(pasid={self.pasid}, priv={self.priv}, addr={self.addr:#x}, "
            f"size={1 << self.shift:#x}, phys={self.phys:#x}, perms={self.perms})"
        )


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

    @property
    def ats_tracker(self) -> SlotTracker | None:
        """The tracker the agent registers its ATC entries with (None: it tracks none)."""
        ...

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
        addr: int,
        suspects: Sequence[AtcEntry],
    ) -> DmaFault | None:
        """Translated requests of one access starting at ``addr``: the root complex
        checks the requester may send them (a fault blocks them all); ``suspects`` are
        the entries used whose source tables changed since they were handed out."""
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


class _Unversioned:
    version = 0


class AddressTranslationCache(TagCache):
    """The ATC of one function: per PASID key (None = requests without PASID), one dict
    per page size keyed by page number, and the 2 MiB block summaries."""

    def __init__(
        self,
        on_drop: Callable[[Iterable[AtcEntry]], None] | None = None,
        deps: Versioned | None = None,
        ram: int = 1 << 64,
        ram_run: RamRun | None = None,
    ) -> None:
        super().__init__(deps if deps is not None else _Unversioned(), ram, None, ram_run)
        self.stats = AtcStats()
        self.on_drop = on_drop

    def dropped(self, entries: list[TlbEntry]) -> None:
        if self.on_drop is not None:
            self.on_drop(entries)  # type: ignore[arg-type]

    def insert(self, entry: AtcEntry) -> None:
        self.put(entry)

    def build_block(self, pasid: PasidKey, bn: int) -> AtcBlock | None:
        """Summarise 2 MiB block ``bn`` if its 512 4 KiB entries are all cached with
        one Priv bit."""
        t = self.tables.get(pasid)
        first = None if t is None else t[0].get(bn << 9)
        if t is None or first is None:
            return None
        return self.summarise(t, bn, first.src)

    def invalidate(self, pasid: PasidKey, addr: int, size: int, all_pasids: bool = False) -> int:
        """An Invalidation Request (PCIe 10.3.8) for ``[addr, addr + size)``: without
        PASID (``pasid`` None) every entry in the range goes; with a PASID only that
        PASID's, or with ``all_pasids`` (Global Invalidate) every PASID-tagged one.
        Returns the number of entries dropped."""
        self.stats.invalidations += 1
        if pasid is None:
            n = self.flush(None, addr, addr + size - 1)
        elif all_pasids:
            n = self.flush(lambda k: k is not None, addr, addr + size - 1)
        else:
            n = self.flush(lambda k: k == pasid, addr, addr + size - 1)
        self.stats.dropped += n
        return n

    def clear(self) -> int:
        """Drop everything (ATS disabled, function reset)."""
        return self.flush(None)


class AtsPort:
    """The ATS side of one function: its ATC, and DMA through Translation Requests and
    Translated requests. Created by :class:`hw.pci.PciFunction` when ATS is enabled
    and the IOMMU in front of it is an :class:`AtsAgent`."""

    def __init__(self, fn: PciFunction, agent: AtsAgent) -> None:
        self.fn = fn
        self.agent = agent
        self.rid = fn.addr.rid
        m = fn.machine
        ram, ram_run = ram_limits(m.memory) if m is not None else (0, None)
        self.atc = AddressTranslationCache(agent.ats_release, agent.ats_tracker, ram, ram_run)

    def close(self) -> None:
        self.atc.clear()
        self.agent.ats_bind(self.rid, None)

    def translate(
        self, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult:
        """A DMA access as translated requests: ATC hits, Translation Requests on
        misses (and when a write needs W the cached entry lacks, or the Priv bit
        differs), then one check by the root complex for all the translated requests
        of the access. The result is cut at the end of RAM."""
        if size <= 0:
            return DmaResult(())
        priv = pasid is not None and bool(priv)
        slow = _AtcSlowPath(self, pasid, priv, write)
        runs, fault, hits = translate_run(
            self.atc, pasid, priv, slow.need, True, addr, addr + size, write, slow
        )
        self.atc.stats.hits += hits + slow.hits
        if hits or slow.used:
            blocked = self.agent.ats_translated(self.rid, pasid, priv, write, addr, slow.suspects)
            if blocked is not None:
                return DmaResult((), blocked)
        return DmaResult(tuple(runs), fault)


class _AtcSlowPath:
    """Pages the ATC hit path could not answer: a suspect entry is used (and handed
    to the agent's check), an entry for the other Priv value or without the right
    asks again, and a miss sends a Translation Request for the rest of the access
    (once: a page it did not answer ends the access)."""

    __slots__ = ("hits", "need", "pasid", "port", "priv", "refused", "suspects", "used", "write")

    def __init__(self, port: AtsPort, pasid: PasidKey, priv: bool, write: bool) -> None:
        self.port = port
        self.pasid = pasid
        self.priv = priv
        self.write = write
        self.need = ATS_W if write else ATS_R
        self.hits = 0
        self.used = False
        self.refused: DmaFault | None = None
        self.suspects: list[AtcEntry] = []

    def _usable(self, e: TlbEntry | None) -> bool:
        return e is not None and e.src is self.priv and e.perms & self.need == self.need

    def __call__(self, e: TlbEntry | None, a: int, end: int) -> TlbEntry | DmaFault:
        if e is not None and self._usable(e):
            self.hits += 1
        else:
            refused = self.refused
            if refused is not None and a >= refused.addr:
                return refused  # this access already asked: no second request
            port = self.port
            atc = port.atc
            atc.stats.translation_requests += 1
            res = port.agent.ats_translate(port.rid, self.pasid, self.priv, a, end - a, self.write)
            for ne in res.entries:
                atc.insert(ne)
            self.refused = res.fault
            e = atc.lookup(self.pasid, a)
            if e is None or not self._usable(e):
                return res.fault or DmaFault(a, DMA_FAULT_BUS, self.write, "ATS: no translation")
        self.used = True
        if e.suspect:
            self.suspects.append(e)  # type: ignore[arg-type]
        return e
