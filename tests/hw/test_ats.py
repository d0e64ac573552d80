"""hw.ats: the ATC's keying and invalidation rules, block summaries, and the ATS port of
a PCI function driven by a scripted translation agent (no IOMMU model involved)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hw.ats import ATS_R, ATS_W, AddressTranslationCache, AtcEntry, AtsResult
from hw.bus import DmaFault, PciAddr
from hw.dsa.device import DsaDevice
from hw.machine import build_machine
from hw.pagewatch import SlotTracker
from hw.pci import PCI_EXT_CAP_ID_ATS

RW = ATS_R | ATS_W


def e(pasid: int | None, addr: int, phys: int, shift: int = 12, perms: int = RW) -> AtcEntry:
    return AtcEntry(pasid, False, addr >> shift, shift, phys, perms)


def test_entry_repr_and_addr() -> None:
    x = e(3, 0x20_0000, 0x40_0000, shift=21)
    assert x.addr == 0x20_0000
    assert "pasid=3" in repr(x) and "size=0x200000" in repr(x)


def test_lookup_by_pasid_and_page_size() -> None:
    atc = AddressTranslationCache()
    atc.insert(e(None, 0x1000, 0x9000))
    atc.insert(e(1, 0x20_0000, 0x40_0000, shift=21))
    atc.insert(e(1, 0x4000_0000, 0x8000_0000, shift=30))
    assert atc.lookup(None, 0x1FFF).phys == 0x9000  # type: ignore[union-attr]
    assert atc.lookup(1, 0x1000) is None and atc.lookup(2, 0x1000) is None
    assert atc.lookup(1, 0x3F_FFFF).phys == 0x40_0000  # type: ignore[union-attr]
    assert atc.lookup(1, 0x7FFF_FFFF).phys == 0x8000_0000  # type: ignore[union-attr]
    assert len(atc) == 3


def test_replacing_an_entry_reports_the_old_one() -> None:
    dropped: list[AtcEntry] = []
    atc = AddressTranslationCache(lambda es: dropped.extend(es))
    old = e(None, 0x1000, 0x9000)
    atc.insert(old)
    atc.insert(e(None, 0x1000, 0xA000))
    assert dropped == [old] and len(atc) == 1


def filled() -> tuple[AddressTranslationCache, list[AtcEntry]]:
    dropped: list[AtcEntry] = []
    atc = AddressTranslationCache(lambda es: dropped.extend(es))
    for p in (None, 1, 2):
        for i in range(8):
            atc.insert(e(p, 0x1000 * i, 0x10_0000 + 0x1000 * i))
    atc.insert(e(1, 0x20_0000, 0x40_0000, shift=21))
    return atc, dropped


def pages(atc: AddressTranslationCache, pasid: int | None) -> list[int]:
    t = atc.tables.get(pasid)
    return [] if t is None else sorted(x.addr for d in t[:3] for x in d.values())


def test_invalidation_without_pasid_covers_every_pasid() -> None:
    atc, dropped = filled()
    assert atc.invalidate(None, 0x2000, 0x2000) == 6
    rest = [0, 0x1000, 0x4000, 0x5000, 0x6000, 0x7000]
    assert pages(atc, None) == pages(atc, 2) == rest
    assert pages(atc, 1) == [*rest, 0x20_0000]
    assert len(dropped) == 6 and atc.stats.invalidations == 1 and atc.stats.dropped == 6


def test_invalidation_with_pasid_and_with_global() -> None:
    atc, _ = filled()
    atc.invalidate(1, 0, 1 << 30)
    assert pages(atc, 1) == [] and 1 not in atc.tables and len(pages(atc, 2)) == 8
    atc.invalidate(7, 0, 1 << 30)  # a PASID with nothing cached
    atc.invalidate(2, 0, 1 << 30, all_pasids=True)
    assert list(atc.tables) == [None] and len(pages(atc, None)) == 8


def test_huge_range_walks_the_dict_and_drops_large_pages_it_overlaps() -> None:
    atc, _ = filled()
    atc.invalidate(1, 0x20_1000, 0x1000)  # inside the 2 MiB entry
    assert pages(atc, 1) == [0x1000 * i for i in range(8)]
    atc.invalidate(None, 0, 1 << 64)
    assert not atc.tables


def test_clear_reports_everything_once() -> None:
    atc, dropped = filled()
    assert atc.clear() == 25 and len(dropped) == 25 and not atc.tables
    assert atc.clear() == 0 and len(dropped) == 25


def block_atc(priv_odd: bool = False, gap: int | None = None) -> AddressTranslationCache:
    atc = AddressTranslationCache()
    for i in range(512):
        if i == gap:
            continue
        phys = 0x40_0000 + 0x1000 * i if i < 100 else 0x80_0000 + 0x1000 * i
        atc.insert(AtcEntry(3, priv_odd and i == 7, (0x20_0000 >> 12) + i, 12, phys, RW))
    return atc


def test_block_summary_merges_runs() -> None:
    atc = block_atc()
    blk = atc.build_block(3, 1)
    assert blk is not None and blk.perms == RW and blk.src is False
    assert blk.runs == (
        (0, 0x40_0000, 100 * 4096),
        (100 * 4096, 0x80_0000 + 100 * 4096, 412 * 4096),
    )
    assert atc.tables[3][3] == {1: blk}
    atc.invalidate(3, 0x20_5000, 0x1000)
    assert atc.tables[3][3] == {}


def test_no_block_summary_when_incomplete_or_mixed() -> None:
    assert AddressTranslationCache().build_block(3, 1) is None
    assert block_atc(gap=0).build_block(3, 1) is None
    assert block_atc(gap=300).build_block(3, 1) is None
    assert block_atc(priv_odd=True).build_block(3, 1) is None


def test_invalidating_many_blocks_walks_the_summaries() -> None:
    atc = block_atc()
    atc.build_block(3, 1)
    atc.insert(e(3, 0x1000_0000, 0x1000))
    atc.invalidate(3, 0, 1 << 40)
    assert not atc.tables


# -- the port, with a scripted agent ---------------------------------------------------------
class Agent:
    """Identity + 0x100000 translations for 4 KiB pages below ``limit``; optional
    block of translated requests."""

    def __init__(self, limit: int = 1 << 30, block: DmaFault | None = None) -> None:
        self.limit = limit
        self.block = block
        self.requests: list[tuple[int, int, bool]] = []
        self.translated: list[tuple[int, int]] = []
        """(address, suspect entries) of each access the root complex checked."""
        self.ats_tracker: SlotTracker | None = None
        self.bound: dict[int, AddressTranslationCache | None] = {}
        self.released: list[AtcEntry] = []

    def ats_translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> AtsResult:
        self.requests.append((addr, size, write))
        out: list[AtcEntry] = []
        for vpn in range(addr >> 12, ((addr + size - 1) >> 12) + 1):
            if vpn << 12 >= self.limit:
                return AtsResult(tuple(out), DmaFault(vpn << 12, 7, write, "no"))
            out.append(AtcEntry(pasid, priv, vpn, 12, (vpn << 12) + 0x100000, ATS_R | ATS_W))
        return AtsResult(tuple(out))

    def ats_translated(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        write: bool,
        addr: int,
        suspects: Sequence[AtcEntry],
    ) -> DmaFault | None:
        self.translated.append((addr, len(suspects)))
        return self.block

    def ats_bind(self, rid: int, atc: AddressTranslationCache | None) -> None:
        self.bound[rid] = atc

    def ats_release(self, entries: Iterable[AtcEntry]) -> None:
        self.released.extend(entries)


BDF = PciAddr.parse("00:02.0")


def dsa_with(agent: Agent | None, ram: str = "8M") -> DsaDevice:
    spec = {"ram": ram, "devices": [{"kind": "dsa", "bdf": "00:02.0"}]}
    m = build_machine(spec)
    if agent is not None:
        m._iommu_for[BDF] = agent  # type: ignore[assignment]
    fn = m.functions[BDF]
    assert isinstance(fn, DsaDevice)
    m.pci_config_write(BDF, 0x04, 2, 0x6)
    off = fn.find_ext_cap(PCI_EXT_CAP_ID_ATS)
    m.pci_config_write(BDF, off + 6, 2, 0x8000)
    return fn


def test_port_requests_once_then_hits_and_builds_blocks() -> None:
    agent = Agent()
    fn = dsa_with(agent)
    port = fn.ats_port
    assert port is not None and agent.bound == {BDF.rid: port.atc}
    res = fn.dma_translate(None, True, 0x1F_F800, 0x40_1000, False)  # priv dropped: no PASID
    assert res.runs == ((0x2F_F800, 0x40_1000),) and res.fault is None
    assert agent.requests == [(0x1F_F800, 0x40_1000, False)]
    assert set(port.atc.tables[None][3]) == {1, 2}
    res = fn.dma_translate(None, False, 0x20_0800, 0x40_0000, False)
    assert res.runs == ((0x30_0800, 0x40_0000),)
    assert len(agent.requests) == 1 and agent.translated[-1] == (0x20_0800, 0)
    assert fn.dma_translate(None, False, 0, 0, False).runs == ()


def test_port_block_summary_with_several_runs() -> None:
    agent = Agent()
    fn = dsa_with(agent, ram="64M")
    port = fn.ats_port
    assert port is not None
    for i in range(512):
        phys = 0x100_0000 + 0x1000 * i if i % 2 else 0x200_0000 + 0x1000 * i
        port.atc.insert(AtcEntry(4, False, (0x20_0000 >> 12) + i, 12, phys, RW))
    assert port.atc.build_block(4, 1) is not None
    res = fn.dma_translate(4, False, 0x20_1000, 0x3000, True)
    assert res.runs == ((0x100_1000, 0x1000), (0x200_2000, 0x1000), (0x100_3000, 0x1000))
    assert agent.requests == [] and agent.translated == [(0x20_1000, 0)]


def test_port_fault_from_the_agent_stops_the_access_after_one_request() -> None:
    agent = Agent(limit=0x3000)
    fn = dsa_with(agent)
    res = fn.dma_translate(2, False, 0x1000, 0x4000, True)
    assert res.runs == ((0x101000, 0x2000),)
    assert res.fault is not None and res.fault.addr == 0x3000 and res.fault.reason == 7
    assert len(agent.requests) == 1


def test_port_with_an_agent_that_translates_nothing() -> None:
    agent = Agent(limit=0)
    fn = dsa_with(agent)
    res = fn.dma_translate(2, False, 0x1000, 8, False)
    assert not res.runs and res.fault is not None and agent.translated == []


def test_port_write_needs_w_and_priv_must_match() -> None:
    agent = Agent()
    fn = dsa_with(agent)
    port = fn.ats_port
    assert port is not None
    port.atc.insert(AtcEntry(2, False, 1, 12, 0x5000, ATS_R))
    assert fn.dma_translate(2, False, 0x1000, 8, False).runs == ((0x5000, 8),)
    assert fn.dma_translate(2, False, 0x1000, 8, True).runs == ((0x101000, 8),)
    assert fn.dma_translate(2, True, 0x1000, 8, True).runs == ((0x101000, 8),)
    assert len(agent.requests) == 2 and port.atc.lookup(2, 0x1000).priv  # type: ignore[union-attr]


def test_blocked_translated_requests_move_nothing() -> None:
    fault = DmaFault(0x1000, 0x44, False, "DTE")
    fn = dsa_with(Agent(block=fault))
    assert fn.dma_translate(None, False, 0x1000, 8, False).runs == ()
    assert fn.dma_translate(None, False, 0x1000, 8, False).fault == fault


def test_translations_outside_ram_are_cut() -> None:
    fn = dsa_with(Agent(), ram="2M")
    res = fn.dma_translate(None, False, 0x10_0000 - 0x1000, 0x3000, False)  # phys 1M+... 2M+
    assert res.runs == ((0x1F_F000, 0x1000),)
    assert res.fault is not None and res.fault.addr == 0x10_0000 and res.fault.reason == -1
    res = fn.dma_translate(None, False, 0x10_0000, 0x1000, False)
    assert res.runs == () and res.fault is not None


def test_disabling_ats_drops_the_atc() -> None:
    agent = Agent()
    fn = dsa_with(agent)
    fn.dma_translate(None, False, 0x1000, 0x2000, False)
    m = fn.machine
    assert m is not None
    m.pci_config_write(BDF, fn.find_ext_cap(PCI_EXT_CAP_ID_ATS) + 6, 2, 0)
    assert fn.ats_port is None and agent.bound == {BDF.rid: None} and len(agent.released) == 2
    m.pci_config_write(BDF, fn.find_ext_cap(PCI_EXT_CAP_ID_ATS) + 4, 4, 0)  # cap word: no-op
    assert fn.ats_port is None


def test_no_port_without_an_ats_capable_iommu() -> None:
    fn = dsa_with(None)
    assert fn.ats_enabled and fn.ats_port is None
    assert fn.dma_translate(None, False, 0x1000, 8, False).runs == ((0x1000, 8),)
