"""Identity, registers, commands with their error codes, WQ semantics, SWERR, halt."""

from __future__ import annotations

import pytest

from hw.dsa import registers as regs_
from hw.uapi import idxd
from tests.hw.dsa.dsa_helpers import BDF, CR_BASE, Dsa, desc


def test_identity_and_capabilities() -> None:
    t = Dsa()
    assert t.m.pci_config_read(BDF, 0, 4) == 0x0B25_8086
    assert t.r32(0) == 0x100
    gencap = t.r64(regs_.GENCAP_OFFSET)
    assert (gencap >> 16) & 0x1F == 31 and gencap >> 31 & 1
    assert t.r64(regs_.WQCAP_OFFSET) & 0xFFFF == 128
    assert t.r64(regs_.OPCAP_OFFSET) & 0x3FF == 0x3FF
    assert t.dev.msix_table > t.perm > t.wqcfg > t.grpcfg >= 0x400
    for cap in (0x1B, 0x0F, 0x13):
        assert t.dev.find_ext_cap(cap)


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(ValueError, match="bogus"):
        Dsa({"bogus": 1})
    with pytest.raises(ValueError, match="num_wqs"):
        Dsa({"num_wqs": 0})
    with pytest.raises(ValueError, match="shared_wq"):
        Dsa({"shared_wq": 3})
    with pytest.raises(ValueError, match="integer"):
        Dsa({"num_wqs": "x"})


def test_bad_register_writes_are_ignored() -> None:
    t = Dsa()
    t.w64(regs_.GENCAP_OFFSET, 0)
    t.w32(0x1F0, 5)
    t.w32(regs_.CMD_OFFSET + 1, 5)
    assert t.r64(regs_.GENCAP_OFFSET) == t.dev.cfg.gencap
    assert t.dev.regs.violations
    assert t.m.mmio_read(t.bar2, 4) == 0xFFFFFFFF


def test_commands_and_error_codes() -> None:
    t = Dsa()
    assert t.cmd(2) & 0xFF == 0x31  # disable a disabled device
    assert t.cmd(1) & 0xFF == 0x11  # no groups configured
    assert t.cmd(0) & 0xFF == 0x01
    assert t.cmd(13, 1) & 0xFF == 0x01  # not in CMDCAP
    assert t.cmd(6, 0) & 0xFF == 0x20
    assert t.cmd(6, 99) & 0xFF == 0x02
    assert t.cmd(7, 1) & 0xFF == 0x32
    t.config_wq(0, size=200)
    t.config_group(0, 1, 1)
    assert t.cmd(1) & 0xFF == 0x14
    t.config_wq(0)
    t.config_group(1, 1, 2)
    assert t.cmd(1) & 0xFF == 0x16
    t.config_group(1, 0, 1)
    assert t.cmd(1) & 0xFF == 0x17
    t.config_group(1, 2, 0)
    assert t.cmd(1) & 0xFF == 0x18
    t.config_group(1, 1 << 40, 0)
    assert t.cmd(1) & 0xFF == 0x15
    t.config_group(1, 0, 0)
    t.m.pci_config_write(BDF, 4, 2, 2)
    assert t.cmd(1) & 0xFF == 0x12
    t.m.pci_config_write(BDF, 4, 2, 6)
    assert t.cmd(1, int_req=True) & 0xFF == 0
    assert t.r32(regs_.INTCAUSE_OFFSET) & 2
    assert t.cmd(1) & 0xFF == 0x10
    assert t.r32(regs_.GENSTS_OFFSET) & 3 == 1
    t.w32(regs_.GENCFG_OFFSET, 1 << 12)  # ignored while enabled
    assert t.r32(regs_.GENCFG_OFFSET) == 0
    assert t.cmd(6, 0) & 0xFF == 0
    assert t.cmd(6, 0) & 0xFF == 0x21
    for code in (3, 4, 8, 9, 11, 12, 7, 10):
        assert t.cmd(code, 1 if code < 11 else 5) & 0xFF == 0
    assert t.cmd(7, 1 << 16 | 1) & 0xFF == 0x02
    assert t.cmd(2) & 0xFF == 0
    assert t.cmd(5) & 0xFF == 0
    assert t.r64(t.grpcfg) == 0


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ({"priority": 0}, 0x23),
        ({"pasid_en": 1, "dedicated": False, "thresh": 20}, 0x22),
        ({"dedicated": False}, 0x26),
        ({"bof": 1, "_cfg": {"block_on_fault": False}}, 0x25),
        ({"dedicated": False, "_cfg": {"shared_wq": False}}, 0x24),
        ({"shifts": 31}, 0x27),
        ({"shifts": 1 << 5 | 31, "_cfg": {"max_xfer_shift": 20}}, 0x28),
        ({"pasid_en": 1, "_nopasid": True}, 0x26),
        ({"pasid_en": 1, "priv": 1, "_cfg": {"pasid_priv": False}}, 0x26),
        ({"size": 0}, 0x22),
    ],
)
def test_enable_wq_errors(mode: dict, code: int) -> None:
    t = Dsa(mode.pop("_cfg", {}))
    if not mode.pop("_nopasid", False):
        t.enable_pasid()
    t.config_wq(1, size=4)
    t.config_group(0, 3, 1)
    t.config_wq(0, **mode)
    assert t.cmd(1) & 0xFF == 0
    assert t.cmd(6, 0) & 0xFF == code


def test_dedicated_wq_overflow_is_dropped_with_swerr() -> None:
    t = Dsa()
    t.enable_msix()
    t.config_wq(0, size=2)
    t.config_group(0, 1, 1)
    t.cmd(1)
    t.cmd(6, 0)
    for i in range(3):
        t.submit(desc(0, cr=CR_BASE + 32 * i))
    assert t.dev.wqs[0].occupancy == 2
    assert t.r32(t.wqcfg + 24) & 0xFFFF == 2 and t.r32(t.wqcfg + 24) >> 30 == 1
    qw0 = t.swerr()[0]
    assert qw0 & 0b1001 == 0b1001 and (qw0 >> 8) & 0xFF == 0x54
    t.run()
    assert [t.record(CR_BASE + 32 * i).status for i in range(3)] == [1, 1, 0]
    t.m.enqcmds(t.portal(0), desc(0).to_bytes())
    assert t.swerr()[0] & 2  # overflow: a second error while valid
    t.w64(regs_.SWERR_OFFSET, 3)
    assert t.swerr()[0] & 3 == 0


def test_shared_wq_retries_at_capacity_and_threshold() -> None:
    t = Dsa()
    t.bring_up(((0, False),))
    for i in range(8):
        assert t.m.enqcmds(t.portal(0, limited=True), desc(0, cr=CR_BASE + 32 * i).to_bytes())
    assert not t.m.enqcmds(t.portal(0, limited=True), desc(0).to_bytes())
    for i in range(8, 16):
        assert t.m.enqcmd(t.portal(0), desc(0, cr=CR_BASE + 32 * i).to_bytes(), 5)
    assert not t.m.enqcmd(t.portal(0), desc(0).to_bytes(), 5)
    t.run()
    assert all(t.record(CR_BASE + 32 * i).status == 1 for i in range(16))
    t.m.movdir64b(t.portal(0), desc(0).to_bytes())
    assert (t.swerr()[0] >> 8) & 0xFF == 0x55


def test_shared_wq_privilege_checked_against_wqcfg() -> None:
    t = Dsa()
    t.bring_up(((0, False),))
    assert t.m.enqcmds(t.portal(0), desc(0, priv=1, pasid=3).to_bytes())
    t.run()
    assert t.record().status == idxd.DSA_COMP_PRIV_BAD


def test_disabled_wq_and_bad_portals() -> None:
    t = Dsa()
    assert not t.m.enqcmds(t.portal(0), desc(0).to_bytes())
    t.m.movdir64b(t.portal(0), desc(0).to_bytes())
    assert (t.swerr()[0] >> 8) & 0xFF == 0x53
    t.m.movdir64b(t.bar2 + 0x2000, desc(0).to_bytes())
    t.m.movdir64b(t.bar0, desc(0).to_bytes())
    t.m.mmio_write(t.bar2, 4, 1)
    assert not t.dev.portal_write(2, 0, b"x", True)


def test_bus_master_off_halts_and_flr_recovers() -> None:
    t = Dsa()
    t.bring_up()
    t.submit(desc(0))
    t.m.pci_config_write(BDF, 4, 2, 2)
    assert t.r32(regs_.GENSTS_OFFSET) & 0xF == 0x7
    assert t.r32(regs_.INTCAUSE_OFFSET) & 0x11 == 0x11
    assert t.cmd(1) & 0xFF == 0x03
    assert t.cmd(5) & 0xFF == 0x03
    t.run()
    assert t.record().status == 0
    t.dev.reset()
    assert t.r32(regs_.GENSTS_OFFSET) == 0


def test_interrupt_handles() -> None:
    t = Dsa({"int_handles": True})
    t.bring_up()
    sts = t.cmd(13, 1)
    assert sts & 0xFF == 0
    handle = (sts >> 8) & 0xFFFF
    assert t.cmd(13, 1 << 16) & 0xFF == 0x41
    t.msis.clear()
    t.submit(desc(0, flags=0x1C, int_handle=handle))
    t.run()
    assert t.msis == [(0xFEE00000, 0x41)]
    assert t.cmd(14, handle) & 0xFF == 0
    assert t.cmd(14, handle) & 0xFF == 0x41
    for _ in range(9):
        t.cmd(13, 2)
    assert t.cmd(13, 2) & 0xFF == 0x42


def test_msix_perm_and_user_interrupt_enable() -> None:
    t = Dsa()
    t.bring_up(user_int=False)
    r = desc(0, flags=0x1C, int_handle=1)
    t.submit(r)
    t.run()
    assert t.record().status == idxd.DSA_COMP_INT_HANDLE_INVAL


def test_preconfigured_device_and_op_config() -> None:
    t = Dsa({"config_en": False, "wq_op_config": True})
    t.enable_msix()
    t.w32(t.wqcfg, 1)  # read-only
    assert t.r32(t.wqcfg) == 128
    assert t.cmd(1) & 0xFF == 0 and t.cmd(6, 0) & 0xFF == 0
    t.submit(desc(3, src_addr=0, dst_addr=0x1000, xfer_size=8))
    t.run()
    assert t.record().status == 1


def test_command_while_active_goes_to_swerr_and_trace() -> None:
    t = Dsa()
    events: list[str] = []
    t.m.set_hw_trace_sink(lambda name, ts, f: events.append(name))
    t.w32(regs_.CMD_OFFSET, 2 << 20)
    t.w32(regs_.CMD_OFFSET, 1 << 20)
    assert (t.swerr()[0] >> 8) & 0xFF == 0x52
    t.run()
    assert "hw_dsa:command" in events and "hw_dsa:swerr" in events
