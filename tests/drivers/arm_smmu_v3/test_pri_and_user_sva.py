"""What 6.12's arm-smmu-v3 does with page requests and with user SVA on the
``smmuv3`` machine: the PRI queue is set up and enabled, a page request is logged as
unexpected and, when it ends its group, denied with CMD_PRI_RESP (the function sees
Invalid Request); an overflow is reported once; user WQs cannot be enabled because
this driver offers no SVA domains (EOPNOTSUPP), so a process finds no node — no
exception, no stale use, nothing leaked."""

from __future__ import annotations

import pytest

from drivers.idxd.init import idxd_find
from drivers.idxd.sysfs import idxd_enable, idxd_load_config
from hw.pci import PciFunction
from hw.pri import PRG_RESP_INVALID, PageRequest
from hw.smmuv3 import registers as sr
from kernel.errno import ENOENT, EOPNOTSUPP
from kernel.fs import do_sys_open
from kernel.printk import log_buffer
from kernel.sched import do_exit, user_process_create
from tests.drivers.arm_smmu_v3.conftest import Boot, machine, smmu, unit
from tests.drivers.arm_smmu_v3.machines import DSA_SID
from tests.drivers.idxd.user_setup import SWQ, user_config


def _dsa_fn(k: object) -> PciFunction:
    m = machine(k)  # type: ignore[arg-type]
    fn = next(f for a, f in m.functions.items() if a.rid == DSA_SID)
    assert fn.pri is not None
    return fn


def test_a_page_request_is_logged_and_denied(smmu_boot: Boot) -> None:
    k = smmu_boot(smmu_config={"pri": True})
    sm = smmu()
    assert sm.priq_irq and sm.priq.q_base
    fn = _dsa_fn(k)
    # 6.12 never enables PRI on a master; a function that asks anyway is answered.
    fn.config_write(fn.pri.cap + 0x0C, 4, 4)  # allocation
    fn.config_write(fn.pri.cap + 0x04, 2, 1)  # enable
    codes: list[int] = []
    assert fn.pri.request(9, False, False, 0x4000_1000, True, codes.append)
    m = machine(k)
    m.clock.advance(100_000)
    assert codes == [PRG_RESP_INVALID]
    assert sm.ppr_seen == 1 and unit(k).priq.responses == 1
    lines = log_buffer().lines()
    i = lines.index(next(x for x in lines if "unexpected PRI request received:" in x))
    assert (
        f"sid 0x{DSA_SID:08x}.0x00009: [0L] unprivileged W access at iova 0x0000000040001000"
        in (lines[i + 1])
    )


def test_a_request_that_does_not_end_its_group_is_only_logged(smmu_boot: Boot) -> None:
    k = smmu_boot(smmu_config={"pri": True})
    u = unit(k)
    u.page_request(PageRequest(DSA_SID, None, True, True, 0x2000, True, False, 5, last=False))
    machine(k).clock.advance(100_000)
    assert smmu().ppr_seen == 1 and u.priq.responses == 0
    assert any("[5] privileged RX access" in x for x in log_buffer().lines())


def test_priq_overflow_is_reported_once_and_acknowledged(smmu_boot: Boot) -> None:
    """With the PRI interrupt held off, requests overflow the two-entry queue; the
    next interrupt drains what was kept, reports the loss once and acknowledges it."""
    k = smmu_boot(smmu_config={"pri": True, "priqs": 1})
    u, m = unit(k), machine(k)
    ctrl = u.base + sr.IRQ_CTRL_OFF
    on = m.mmio_read(ctrl, 4)
    m.mmio_write(ctrl, 4, on & ~sr.IRQ_CTRL.PRIQ_IRQEN.mask)
    m.clock.advance(10_000)
    for i in range(4):
        u.page_request(PageRequest(DSA_SID, 3, False, False, 0x1000 * i, True, False, i))
    m.clock.advance(100_000)
    assert smmu().ppr_seen == 0 and u.priq.lost == 2
    m.mmio_write(ctrl, 4, on)
    m.clock.advance(10_000)
    u.page_request(PageRequest(DSA_SID, 3, False, False, 0x9000, True, False, 9))
    m.clock.advance(100_000)
    # still full when it arrives: lost too, but its interrupt makes the driver drain
    lines = log_buffer().lines()
    assert sum("PRIQ overflow detected -- requests lost" in x for x in lines) == 1
    assert smmu().ppr_seen == 2 and u.priq.lost == 3
    u.page_request(PageRequest(DSA_SID, 3, False, False, 0xA000, True, False, 10))
    m.clock.advance(100_000)
    assert smmu().ppr_seen == 3
    prod, cons = (
        m.mmio_read(u.base + sr.PRIQ_PROD_OFF, 4),
        m.mmio_read(u.base + sr.PRIQ_CONS_OFF, 4),
    )
    assert prod >> 31 == cons >> 31  # overflow acknowledged


def test_user_wqs_cannot_be_enabled_without_sva(smmu_boot: Boot) -> None:
    k = smmu_boot(builtins=("drivers.arm_smmu_v3", "drivers.idxd"), cmdline="idxd.default_config=0")
    idxd = idxd_find("dsa0")
    assert not idxd.user_pasid_enabled
    with pytest.raises(EOPNOTSUPP, match="shared WQ needs PASID"):
        idxd_load_config(idxd, user_config())
    cfg = user_config()
    group = cfg["groups"][0]
    group["grouped_workqueues"] = [w for w in group["grouped_workqueues"] if w["dev"] == "wq0.1"]
    idxd_load_config(idxd, cfg)  # a dedicated user WQ loads, but cannot be enabled
    with pytest.raises(EOPNOTSUPP, match="user WQ needs SVA"):
        idxd_enable(idxd)
    task = user_process_create("app")
    with pytest.raises(ENOENT):
        do_sys_open(task, SWQ)
    do_exit(task)
    assert unit(k).stats.stale_uses == 0
