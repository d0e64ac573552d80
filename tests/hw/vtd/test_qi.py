"""Invalidation queue: execution as clock events, wait status, wrap, errors."""

from __future__ import annotations

import pytest

from hw.machine import build_machine
from hw.vtd import entries as ent
from hw.vtd import registers as vr
from tests.hw.vtd.helpers import (
    Pages,
    Queue,
    cc_inval,
    iotlb_global,
    make,
    reg_read,
    reg_write,
    sm_setup,
)


def qsetup(dw: int = 1) -> tuple:  # type: ignore[type-arg]
    m, unit, pages, _t = sm_setup()
    return m, unit, pages, Queue(m, unit, pages, dw=dw)


def test_qie_sets_qies_after_a_clock_event() -> None:
    m, _unit = make()
    pages = Pages(m)
    reg_write(m, vr.IQA_OFF, pages.alloc() | (1 << 11), 8)
    reg_write(m, vr.GCMD_OFF, vr.GCMD.QIE.mask)
    assert not reg_read(m, vr.GSTS_OFF) & vr.GSTS.QIES.mask
    m.clock.advance(1000)
    assert reg_read(m, vr.GSTS_OFF) & vr.GSTS.QIES.mask


def test_wait_descriptor_writes_status() -> None:
    _m, unit, _pages, q = qsetup()
    q.submit()
    assert q.done() and unit.stats.qi_descriptors == 1


def test_descriptors_run_only_when_the_clock_advances() -> None:
    m, _unit, _pages, q = qsetup()
    q.put(*q.wait_desc())
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    assert not q.done()
    m.clock.advance(10_000)
    assert q.done()


def test_head_follows_tail_after_processing() -> None:
    m, _unit, _pages, q = qsetup()
    q.submit(iotlb_global(), cc_inval(1))
    assert reg_read(m, vr.IQH_OFF, 8) == reg_read(m, vr.IQT_OFF, 8) == 3 * 32


def test_tail_wraps_around_the_ring() -> None:
    m, _unit, _pages, q = qsetup()
    for _ in range(70):  # 128 slots of 256 bits: two submissions per round wrap twice
        q.submit(iotlb_global())
        assert q.done()
    assert reg_read(m, vr.IQH_OFF, 8) == q.tail == (140 * 32) % 4096


def test_128_bit_descriptors_work() -> None:
    m, _unit, _pages, q = qsetup(dw=0)
    q.submit(iotlb_global())
    assert q.done() and reg_read(m, vr.IQH_OFF, 8) == 2 * 16


def test_wait_with_if_sets_iwc_and_interrupts() -> None:
    m, _unit, _pages, q = qsetup()
    reg_write(m, vr.IEADDR_OFF, 0xFEE0_0000)
    reg_write(m, vr.IEDATA_OFF, 0x41)
    reg_write(m, vr.IECTL_OFF, 0)
    q.put(*q.wait_desc(iflag=True))
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    assert reg_read(m, vr.ICS_OFF) == 1
    assert m.lost_msis == [(0xFEE0_0000, 0x41)]


def test_masked_iwc_interrupt_is_pending_until_unmasked() -> None:
    m, _unit, _pages, q = qsetup()
    reg_write(m, vr.IEADDR_OFF, 0xFEE0_0000)
    q.put(*q.wait_desc(iflag=True))
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    assert reg_read(m, vr.IECTL_OFF) & vr.EventControl.IP.mask and m.lost_msis == []
    reg_write(m, vr.IECTL_OFF, 0)
    assert m.lost_msis == [(0xFEE0_0000, 0)]


def test_clearing_iwc_clears_pending_interrupt() -> None:
    m, _unit, _pages, q = qsetup()
    q.put(*q.wait_desc(iflag=True))
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    reg_write(m, vr.ICS_OFF, 1)
    assert reg_read(m, vr.ICS_OFF) == 0
    assert not reg_read(m, vr.IECTL_OFF) & vr.EventControl.IP.mask


def test_invalid_descriptor_type_sets_iqe_with_head_on_it() -> None:
    m, _unit, _pages, q = qsetup()
    q.put(*iotlb_global())
    bad = q.put(0xF)
    q.put(*q.wait_desc())
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    assert reg_read(m, vr.FSTS_OFF) & vr.FSTS.IQE.mask
    assert reg_read(m, vr.IQH_OFF, 8) == bad
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 3
    assert not q.done()


def test_processing_resumes_after_software_fixes_and_clears_iqe() -> None:
    m, _unit, _pages, q = qsetup()
    bad = q.put(0xF)
    q.put(*q.wait_desc())
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    m.memory.write(q.base + bad, iotlb_global()[0].to_bytes(8, "little") + bytes(24))
    reg_write(m, vr.FSTS_OFF, vr.FSTS.IQE.mask)
    m.clock.advance(10_000)
    assert q.done()


def test_reserved_bits_in_descriptor_set_iqe_code_4() -> None:
    m, _unit, _pages, q = qsetup()
    q.put(iotlb_global()[0] | (1 << 40))
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 4


def test_nonzero_upper_half_of_256_bit_descriptor_is_reserved() -> None:
    m, _unit, _pages, q = qsetup()
    q.put(iotlb_global()[0], 0, 1)
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 4


def test_iqe_raises_fault_event() -> None:
    m, _unit, _pages, q = qsetup()
    reg_write(m, vr.FEADDR_OFF, 0xFEE0_1000)
    reg_write(m, vr.FECTL_OFF, 0)
    q.put(0xF)
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    assert m.lost_msis == [(0xFEE0_1000, 0)]


def test_misaligned_tail_in_256_bit_mode_sets_iqe_code_6() -> None:
    m, _unit, _pages, _q = qsetup()
    reg_write(m, vr.IQT_OFF, 0x10, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 6


def test_tail_beyond_queue_sets_iqe_code_1() -> None:
    m, _unit, _pages, _q = qsetup()
    reg_write(m, vr.IQT_OFF, 0x2000, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 1


def test_queue_outside_ram_sets_iqe_code_2() -> None:
    m, _unit, _pages, _t = sm_setup()
    reg_write(m, vr.IQA_OFF, 0x1_0000_0000 | (1 << 11), 8)
    reg_write(m, vr.GCMD_OFF, vr.GSTS.TES.mask | vr.GCMD.QIE.mask)
    m.clock.advance(1000)
    reg_write(m, vr.IQT_OFF, 0x20, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 2


def test_queue_in_a_ram_hole_sets_iqe_code_2() -> None:
    m = build_machine(
        {
            "ram": [{"base": 0, "size": "16M"}, {"base": "32M", "size": "16M"}],
            "iommus": [{"kind": "vtd", "name": "dmar0", "config": {}}],
        }
    )
    pages = Pages(m)
    reg_write(m, vr.IQA_OFF, (20 << 20) | (1 << 11), 8)  # in the hole at 16..32 MiB
    reg_write(m, vr.GCMD_OFF, vr.GCMD.QIE.mask)
    m.clock.advance(1000)
    reg_write(m, vr.IQT_OFF, 0x20, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 2
    assert pages.alloc() < 16 << 20  # the hole itself was never RAM


@pytest.mark.parametrize("dw", [0, 1])
def test_queue_running_into_a_ram_hole_executes_up_to_it(dw: int) -> None:
    """A queue whose second page is in the hole: the descriptors in RAM run, the
    first one in the hole is a fetch error with IQH on it (the model reads such a
    queue one bounds-checked descriptor at a time)."""
    m = build_machine(
        {
            "ram": [{"base": 0, "size": "16M"}, {"base": "32M", "size": "16M"}],
            "iommus": [{"kind": "vtd", "name": "dmar0", "config": {}}],
        }
    )
    unit = m.iommus["dmar0"]
    base = (16 << 20) - 4096  # the last page of low RAM, then the hole
    stride = 16 << dw
    for off in range(0, 4096, stride):  # a page of plain wait descriptors
        m.memory.write_u64(base + off, ent.QI_WAIT)
    reg_write(m, vr.IQA_OFF, base | (dw << 11) | 1, 8)  # QS=1: two pages
    reg_write(m, vr.GCMD_OFF, vr.GCMD.QIE.mask)
    m.clock.advance(1000)
    reg_write(m, vr.IQT_OFF, 4096 + 2 * stride, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 2
    assert reg_read(m, vr.IQH_OFF, 8) == 4096
    assert unit.stats.qi_descriptors == 4096 // stride


@pytest.mark.parametrize("dw", [0, 1])
def test_a_descriptor_that_passed_is_checked_again_once_its_words_change(dw: int) -> None:
    """The queue remembers descriptors that passed their checks by all their words: the
    same slot rewritten with a reserved bit (or, 256-bit, a nonzero upper half) is an
    IQE, and the unchanged descriptor still runs after it."""
    m, unit, _pages, q = qsetup(dw=dw)
    for _ in range(3):
        q.submit(iotlb_global())
        assert q.done()
    bad = (iotlb_global()[0] | (1 << 40), 0) if not dw else (iotlb_global()[0], 0, 0, 1)
    q.m.memory.write_u32(q.status, 0)
    at = q.put(*bad)
    q.put(*q.wait_desc())
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 4
    assert reg_read(m, vr.IQH_OFF, 8) == at and not q.done()
    m.memory.write(q.base + at, iotlb_global()[0].to_bytes(8, "little") + bytes(q.stride - 8))
    reg_write(m, vr.FSTS_OFF, vr.FSTS.IQE.mask)
    m.clock.advance(10_000)
    assert q.done() and unit.stats.qi_descriptors == 8


def test_piotlb_reserved_granularity_sets_iqe() -> None:
    m, _unit, _pages, q = qsetup()
    q.put(ent.QiPiotlbQw0.encode(TYPE=ent.QI_PIOTLB, G=1))
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 4


def test_iotlb_am_above_mamv_sets_iqe() -> None:
    m, _unit, _pages, q = qsetup()
    q.put(ent.QiIotlbQw0.encode(TYPE=ent.QI_IOTLB, G=3, DID=1), ent.QiAddrQw1.encode(AM=40))
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 4


def test_context_cache_granularity_zero_sets_iqe() -> None:
    m, _unit, _pages, q = qsetup()
    q.put(*cc_inval(0))
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 4


def test_pasid_cache_granularity_two_sets_iqe() -> None:
    m, _unit, _pages, q = qsetup()
    q.put(ent.QiPcQw0.encode(TYPE=ent.QI_PC, G=2))
    reg_write(m, vr.IQT_OFF, q.tail, 8)
    m.clock.advance(10_000)
    assert vr.IQERCD.IQEI.get(reg_read(m, vr.IQERCD_OFF, 8)) == 4


def test_device_tlb_and_iec_descriptors_complete() -> None:
    _m, unit, _pages, q = qsetup()
    q.submit(
        (ent.QiDevTlbQw0.encode(TYPE=ent.QI_DEVTLB, SID=0x10), ent.QiDevTlbQw1.encode(S=1)),
        (ent.QiPdevTlbQw0.encode(TYPE=ent.QI_PDEVTLB, SID=0x10, PASID=3), 0),
        (ent.QiIecQw0.encode(TYPE=ent.QI_IEC), 0),
    )
    assert q.done() and unit.stats.qi_descriptors == 4


def test_qi_descriptor_trace_event_when_tracing() -> None:
    m, _unit, _pages, q = qsetup()
    names: list[str] = []
    m.set_hw_trace_sink(lambda name, ts, fields: names.append(name))
    q.submit()
    assert names == ["hw_vtd:qi_descriptor"]


def test_disabling_qie_clears_qies() -> None:
    m, _unit, _pages, _q = qsetup()
    reg_write(m, vr.GCMD_OFF, vr.GSTS.TES.mask)
    m.clock.advance(1000)
    assert not reg_read(m, vr.GSTS_OFF) & vr.GSTS.QIES.mask
