"""The SMMUv3 PRI queue (IHI 0070 §3.5.4, §4.6.2): a function's page requests land in
the ring at PRIQ_PROD in the spec's layout with the PRI interrupt, CMD_PRI_RESP goes
back to the function as a PRG Response, a full queue loses requests with OVFLG (the
last of a group answered Success), PRIQEN=0 answers Response Failure, a reserved
response code or PRI_RESP without IDR0.PRI is CERROR_ILL."""

from __future__ import annotations

from hw.machine import Machine, build_machine
from hw.pri import PRG_RESP_FAILURE, PRG_RESP_INVALID, PRG_RESP_SUCCESS, PageRequest
from hw.smmuv3 import Smmuv3Unit
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from tests.hw.smmuv3.helpers import MSI_ADDR, RID, Pages, Smmu, reg_read, reg_write

PRIQ_OFF_IRQ_DATA = 0x43


def _machine(config: dict[str, object]) -> tuple[Machine, Smmuv3Unit]:
    m = build_machine(
        {
            "ram": 32 << 20,
            "iommus": [{"kind": "smmuv3", "name": "smmu0", "config": config}],
            "devices": [{"kind": "dsa", "bdf": "0000:00:02.0"}],
        }
    )
    unit = m.iommus["smmu0"]
    assert isinstance(unit, Smmuv3Unit)
    return m, unit


def _priq(m: Machine, s: Smmu, log2: int) -> int:
    """Program the PRI queue as ``arm_smmu_device_reset`` does and enable it."""
    q = s.pages.alloc()
    reg_write(m, sr.PRIQ_BASE_OFF, q | log2, 8)
    reg_write(m, sr.PRIQ_PROD_OFF, 0)
    reg_write(m, sr.PRIQ_CONS_OFF, 0)
    reg_write(m, sr.PRIQ_IRQ_CFG0_OFF, MSI_ADDR, 8)
    reg_write(m, sr.PRIQ_IRQ_CFG1_OFF, PRIQ_OFF_IRQ_DATA)
    irqen = sr.IRQ_CTRL.EVTQ_IRQEN.mask | sr.IRQ_CTRL.GERROR_IRQEN.mask
    reg_write(m, sr.IRQ_CTRL_OFF, irqen | sr.IRQ_CTRL.PRIQ_IRQEN.mask)
    s.cr0(reg_read(m, sr.CR0ACK_OFF) | sr.CR0.PRIQEN.mask)
    return q


def _req(prgi: int, pasid: int | None = 5, last: bool = True, write: bool = True) -> PageRequest:
    return PageRequest(RID, pasid, False, False, 0x7F12_3000, not write, write, prgi, last)


def test_a_page_request_is_written_in_the_spec_layout_and_interrupts() -> None:
    m, unit = _machine({"pri": True, "priqs": 4})
    msis: list[tuple[int, int]] = []
    m.set_msi_sink(lambda a, d: msis.append((a, d)))
    s = Smmu(m, unit, Pages(m), irqs=False)
    q = _priq(m, s, 4)
    assert reg_read(m, sr.IDR0_OFF) >> 16 & 1 and reg_read(m, sr.IDR1_OFF) >> 11 & 0x1F == 4
    unit.page_request(_req(0x1A5, pasid=0x12345))
    m.clock.advance(1000)
    assert reg_read(m, sr.PRIQ_PROD_OFF) == 1
    dw0 = m.memory.read_u64(q)
    dw1 = m.memory.read_u64(q + 8)
    # SID 31:0, SSID 51:32, Write 61, Last 62, SSV 63 (read, exec, priv clear)
    assert dw0 == RID | 0x12345 << 32 | 1 << 61 | 1 << 62 | 1 << 63
    assert dw1 == 0x7F12_3000 | 0x1A5
    assert (MSI_ADDR, PRIQ_OFF_IRQ_DATA) in msis


def test_cmd_pri_resp_reaches_the_function_as_a_prg_response() -> None:
    m, unit = _machine({"pri": True})
    s = Smmu(m, unit, Pages(m), irqs=False)
    _priq(m, s, 4)
    seen: list[tuple[int, int, int | None]] = []
    fn = next(iter(m.functions.values()))
    assert fn.pri is not None
    orig = fn.pri.response
    fn.pri.response = lambda prgi, code, pasid: seen.append((prgi, code, pasid))  # type: ignore[method-assign]
    for resp, code in (
        (ent.PRI_RESP_DENY, PRG_RESP_INVALID),
        (ent.PRI_RESP_SUCC, PRG_RESP_SUCCESS),
        (ent.PRI_RESP_FAIL, PRG_RESP_FAILURE),
    ):
        dw0 = ent.CmdPriResp0.encode(OP=0x41, SSV=1, SSID=7, SID=RID)
        s.submit((dw0, ent.CmdPriResp1.encode(GRPID=3, RESP=resp)))
        assert seen[-1] == (3, code, 7)
    s.submit((ent.CmdPriResp0.encode(OP=0x41, SID=RID), ent.CmdPriResp1.encode(GRPID=4)))
    assert seen[-1] == (4, PRG_RESP_INVALID, None)
    cons = s.cons_reg()
    s.submit((ent.CmdPriResp0.encode(OP=0x41, SID=RID), ent.CmdPriResp1.encode(RESP=3)))
    assert sr.CMDQ_CONS.ERR.get(s.cons_reg()) == sr.CERROR_ILL and s.cons_reg() & 0xFF == cons
    fn.pri.response = orig  # type: ignore[method-assign]


def test_a_full_queue_loses_requests_sets_ovflg_and_answers_the_last_success() -> None:
    m, unit = _machine({"pri": True, "priqs": 1})
    s = Smmu(m, unit, Pages(m), irqs=False)
    _priq(m, s, 1)  # two entries
    answered: list[tuple[int, int]] = []
    fn = next(iter(m.functions.values()))
    assert fn.pri is not None
    fn.pri.response = lambda prgi, code, pasid: answered.append((prgi, code))  # type: ignore[method-assign]
    for i in range(4):
        unit.page_request(_req(i, last=i != 3))
    m.clock.advance(1000)
    prod = reg_read(m, sr.PRIQ_PROD_OFF)
    assert prod & 0x3 == 0b10 and sr.PRIQ_PROD.OVFLG.get(prod)  # full (wrapped), overflow
    assert answered == [(2, PRG_RESP_SUCCESS)]  # lost and last: retried later; 3 not last
    assert unit.priq.lost == 2
    # software consumes and acknowledges: the next request is recorded again
    reg_write(m, sr.PRIQ_CONS_OFF, 0b10 | sr.PRIQ_CONS.OVACKFLG.mask)
    unit.page_request(_req(9))
    m.clock.advance(1000)
    assert reg_read(m, sr.PRIQ_PROD_OFF) & 0x3 == 0b11


def test_disabled_or_absent_priq_answers_response_failure() -> None:
    m, unit = _machine({"pri": True})
    s = Smmu(m, unit, Pages(m), irqs=False)
    answered: list[int] = []
    fn = next(iter(m.functions.values()))
    assert fn.pri is not None
    fn.pri.response = lambda prgi, code, pasid: answered.append(code)  # type: ignore[method-assign]
    unit.page_request(_req(1))  # PRIQEN=0
    unit.page_request(_req(2, last=False))
    m.clock.advance(1000)
    assert answered == [PRG_RESP_FAILURE]
    # without IDR0.PRI: no PRIQ registers, PRIQEN ignored, PRI_RESP illegal
    m2, unit2 = _machine({})
    s2 = Smmu(m2, unit2, Pages(m2), irqs=False)
    assert not reg_read(m2, sr.IDR0_OFF) >> 16 & 1
    reg_write(m2, sr.CR0_OFF, reg_read(m2, sr.CR0ACK_OFF) | sr.CR0.PRIQEN.mask)
    m2.clock.advance(1000)
    assert not reg_read(m2, sr.CR0ACK_OFF) & sr.CR0.PRIQEN.mask
    s2.submit((ent.CmdPriResp0.encode(OP=0x41, SID=RID), ent.CmdPriResp1.encode(RESP=2)))
    assert sr.CMDQ_CONS.ERR.get(s2.cons_reg()) == sr.CERROR_ILL
    assert s.unit.priq.refused == 2


def test_priq_registers_cannot_move_while_enabled_and_a_bad_base_aborts() -> None:
    m, unit = _machine({"pri": True})
    s = Smmu(m, unit, Pages(m), irqs=False)
    q = _priq(m, s, 2)
    reg_write(m, sr.PRIQ_BASE_OFF, 0x1234_0000, 8)
    assert reg_read(m, sr.PRIQ_BASE_OFF, 8) == q | 2 and unit.errors
    s.cr0(reg_read(m, sr.CR0ACK_OFF) & ~sr.CR0.PRIQEN.mask)
    reg_write(m, sr.PRIQ_BASE_OFF, (1 << 40) | 2, 8)  # outside RAM
    s.cr0(reg_read(m, sr.CR0ACK_OFF) | sr.CR0.PRIQEN.mask)
    unit.page_request(_req(1))
    m.clock.advance(1000)
    gerror = reg_read(m, sr.GERROR_OFF) ^ reg_read(m, sr.GERRORN_OFF)
    assert gerror & sr.GERROR_PRIQ_ABT_ERR and unit.priq.lost == 1
