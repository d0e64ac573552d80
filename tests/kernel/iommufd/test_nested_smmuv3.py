"""SMMUv3 nesting through iommufd as Linux 6.13 has it (``iommufd.viommu=on``): the
NEST_PARENT stage-2 domain, IOMMU_GET_HW_INFO's IDR registers, the vIOMMU and
vDEVICE objects, the guest's vSTE, and the guest's commands through
IOMMU_HWPT_INVALIDATE on the vIOMMU - what each writes into the SMMU, and the errno
of each bad input as 6.13's arm-smmu-v3-iommufd.c, viommu.c and hw_pagetable.c
return it. The 6.12 baseline (parameter off) is checked to stay as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from drivers.arm_smmu_v3.arm_smmu_v3 import arm_smmu_smmus
from drivers.arm_smmu_v3.domain import ArmSmmuDomain
from drivers.arm_smmu_v3.entry_writer import arm_smmu_get_step_for_sid
from hw.smmuv3.unit import Smmuv3Unit
from iommulab.vfio_dsa import VfioDsa
from kernel.errno import E2BIG, EBUSY, EEXIST, EINVAL, EIO, ENOENT, ENOTTY, EOPNOTSUPP
from kernel.iommufd.uapi_helpers import do_ioctl
from kernel.mm import PAGE_SIZE, read64
from kernel.pci import pci_dev_id
from kernel.uapi import iommufd as uapi
from kernel.uapi.idxd import DSA_COMP_SUCCESS
from tests.kernel.iommufd.conftest import Vmm, pdev
from tests.kernel.iommufd.helpers import domain_of, raw
from tests.kernel.iommufd.nested_guest import (
    ALT,
    ASID,
    CD,
    CMDQ_OP_CFGI_CD,
    CMDQ_OP_TLBI_NH_ASID,
    DST,
    IOVA_SRC,
    LPAE_TABLE,
    SRC,
    STE0_S1,
    STE1_S1,
    VIOMMU_ON,
    VSID,
    NestedGuest,
    boot_nested,
    q,
    smmu_cmd,
    stale_uses,
    tlbi_nh_va,
    unit_of,
    vste,
    write_cd,
)
from tests.kernel.iommufd.test_fail_nth import State, sweep

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations, KernelChecks

S2P = {"s2p": True}
INV = uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3
ARM = uapi.IOMMU_HWPT_DATA_ARM_SMMUV3
NEST_PARENT = uapi.IOMMU_HWPT_ALLOC_NEST_PARENT


@pytest.fixture
def svmm(iommulab_checks: KernelChecks) -> Iterator[Vmm]:
    k = iommulab_checks.track(boot_nested("smmuv3"))
    with k:
        v = Vmm.start(k)
        yield v
        v.close()


def booted(checks: KernelChecks, config: dict[str, object], cmdline: str) -> Vmm:
    k = checks.track(boot_nested("smmuv3", config, cmdline))
    k.activate()
    return Vmm.start(k)


def ste_of(sid: int) -> list[int]:
    smmu = arm_smmu_smmus()[0]
    ptr = arm_smmu_get_step_for_sid(smmu, sid)
    return [read64(ptr + 8 * i) for i in range(4)]


def unit(vmm: Vmm) -> Smmuv3Unit:
    u = unit_of(vmm)
    assert isinstance(u, Smmuv3Unit)
    return u


def translate(vmm: Vmm, iova: int, write: bool = False) -> tuple[int, int]:
    """The DSA's request for ``iova`` through the SMMU model: ``(address, 0)`` or
    ``(-1, event id)``."""
    res = unit(vmm).translate(pci_dev_id(pdev()), None, False, iova, 8, write)
    if res.fault is not None:
        return -1, res.fault.reason
    return res.runs[0][0], 0


# --------------------------------------------------------------------------- what is built


def test_the_nested_ste_is_the_guests_cd_table_over_the_parents_stage_2(svmm: Vmm) -> None:
    """Attaching the nested HWPT writes STE.Config=0b111 with the vSTE's S1ContextPtr
    (a guest IPA) and S1 cache attributes, and the parent's VMID, S2TTB and S2R."""
    g = NestedGuest(svmm, "smmuv3")
    g.attach()
    parent = domain_of(svmm.fd.ctx, g.parent)
    assert isinstance(parent, ArmSmmuDomain) and parent.vmid and parent.pgtbl_ops is not None
    ste = ste_of(pci_dev_id(pdev()))
    assert ste[0] & 0xF == 1 | 7 << 1
    assert ste[0] & ((1 << 52) - 1) & ~0x3F == CD
    assert ste[1] & 0xFF == STE1_S1
    assert ste[2] & 0xFFFF == parent.vmid and ste[2] >> 58 & 1  # S2VMID, S2R
    assert ste[3] == parent.pgtbl_ops.cfg.vttbr
    assert translate(svmm, IOVA_SRC + 8) == (g.phys(SRC + 8), 0)


def test_hw_info_reports_the_smmus_id_registers(svmm: Vmm) -> None:
    dev_id = svmm.vfio.bind_iommufd(svmm.fd.ctx)
    buf = svmm.buffer(PAGE_SIZE)
    size = uapi.iommu_hw_info_arm_smmuv3.SIZE
    cmd = uapi.iommu_hw_info(dev_id=dev_id, data_len=PAGE_SIZE, data_uptr=buf)
    out = uapi.iommu_hw_info.from_bytes(do_ioctl(svmm.fd, uapi.IOMMU_GET_HW_INFO, cmd))
    assert (out.out_data_type, out.data_len) == (uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3, size)
    info = uapi.iommu_hw_info_arm_smmuv3.from_bytes(svmm.read(buf, size))
    cfg = unit(svmm).cfg
    assert (info.idr0, info.idr1, info.idr3, info.idr5) == (
        cfg.idr0(),
        cfg.idr1(),
        cfg.idr3(),
        cfg.idr5(),
    )
    assert info.idr0 & 1 and (info.iidr, info.aidr) == (cfg.iidr, cfg.aidr)
    assert svmm.read(buf + size, 16) == bytes(16)  # the rest of the buffer is cleared


def test_a_nest_parent_is_a_stage_2_domain_the_device_can_use_alone(svmm: Vmm) -> None:
    """The NEST_PARENT HWPT attached directly gives a stage-2-only STE (Config
    0b110): the DSA's addresses are IPAs."""
    g = NestedGuest(svmm, "smmuv3")
    svmm.vfio.attach_pt(g.parent)
    assert ste_of(pci_dev_id(pdev()))[0] & 0xF == 1 | 6 << 1
    assert translate(svmm, SRC + 8) == (g.phys(SRC + 8), 0)
    dsa = VfioDsa.open(svmm.vfio, svmm.task)
    dsa.enable()
    status = dsa.memmove(SRC, DST, PAGE_SIZE, 0x30000, g.mem + 0x30000).status
    assert status == DSA_COMP_SUCCESS and g.read(DST, PAGE_SIZE) == g.read(SRC, PAGE_SIZE)
    dsa.disable()


@pytest.mark.parametrize(
    ("ste0", "ste1", "expect"),
    [
        (0, 0, "abort"),  # V=0: an abort STE, C_BAD_STE reported as the vSTE asked
        (STE0_S1 | CD, STE1_S1 | 2 << 28, "eio"),  # EATS=2 (split-stage ATS)
        (1 | 4 << 1, 0, "bypass"),  # bypass: stage 2 only
        (1, 0, "abort"),  # Config abort
        (1 | 6 << 1 | CD, 0, "eio"),  # Config stage 2 is the host's
        (STE0_S1 | CD, STE1_S1 | 1 << 30, "eio"),  # STRW is not the guest's
        (STE0_S1 | CD | 1 << 6 << 40, 0, "ok"),  # a high S1ContextPtr bit is allowed
        (STE0_S1 | CD | 1 << 52, 0, "eio"),  # bit 52 is not a vSTE field
    ],
)
def test_the_vste_is_validated(svmm: Vmm, ste0: int, ste1: int, expect: str) -> None:
    """``arm_smmu_validate_vste``: only the guest's CD-table fields, Config abort,
    bypass or stage 1, EATS abort or translate; EIO otherwise, nothing allocated."""
    g = NestedGuest(svmm, "smmuv3")
    before = sorted(svmm.fd.ctx.objects)
    if expect == "eio":
        with pytest.raises(EIO):
            g.nested(vste(ste0, ste1))
        assert sorted(svmm.fd.ctx.objects) == before
        return
    g.attach(vste(ste0, ste1))
    got = translate(svmm, SRC + 8)
    if expect == "bypass":
        assert got == (g.phys(SRC + 8), 0)
    elif expect == "abort":
        assert got[0] == -1
    else:
        assert ste_of(pci_dev_id(pdev()))[0] >> 46 & 1


# --------------------------------------------------------------------------- invalidation


def invalidate_raw(g: NestedGuest, entries: list[bytes], **kw: int) -> tuple[int, int]:
    """IOMMU_HWPT_INVALIDATE of raw entries on the vIOMMU: return value, entry_num."""
    g.vmm.write(g.scratch, b"".join(entries))
    args = {
        "hwpt_id": g.viommu,
        "data_uptr": g.scratch,
        "data_type": INV,
        "entry_len": len(entries[0]) if entries else 16,
        "entry_num": len(entries),
    }
    args.update(kw)
    rc, out = raw(g.vmm.fd, uapi.IOMMU_HWPT_INVALIDATE, uapi.iommu_hwpt_invalidate(**args))
    return rc, uapi.iommu_hwpt_invalidate.from_bytes(out).entry_num


NH_VA = tlbi_nh_va(IOVA_SRC).to_bytes()
CFGI_STE = smmu_cmd(0x03 | VSID << 32).to_bytes()
CFGI_CD_UNKNOWN = smmu_cmd(CMDQ_OP_CFGI_CD | 0x77 << 32).to_bytes()


@pytest.mark.parametrize(
    ("entries", "kw", "errno", "done"),
    [
        ([NH_VA, NH_VA, CFGI_STE], {}, EIO, 2),  # CFGI_STE is the host's
        ([NH_VA, CFGI_CD_UNKNOWN], {}, EIO, 1),  # no vDEVICE has vSID 0x77
        ([smmu_cmd(0x46).to_bytes()], {}, EIO, 0),  # CMD_SYNC
        ([NH_VA], {"data_type": uapi.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1}, EINVAL, 0),
        ([NH_VA + b"\x01" * 8], {}, E2BIG, 0),  # longer, non-zero tail
        ([NH_VA], {"reserved": 1}, EOPNOTSUPP, 0),
        ([NH_VA], {"data_uptr": 0}, EINVAL, 0),
        ([NH_VA], {"hwpt_id": 999}, ENOENT, 0),
    ],
)
def test_bad_guest_commands(
    svmm: Vmm, entries: list[bytes], kw: dict[str, int], errno: type[Exception], done: int
) -> None:
    """The errno of the first bad command and ``entry_num`` = the commands before it
    (6.13 counts the converted ones of the unfinished batch too)."""
    g = NestedGuest(svmm, "smmuv3")
    g.attach()
    assert invalidate_raw(g, entries, **kw) == (-errno.errno, done)  # type: ignore[attr-defined]


def test_invalidation_targets(svmm: Vmm) -> None:
    """6.13: no entries is a no-op; a shorter entry is zero-extended (accepted); a
    paging HWPT is EINVAL; an SMMUv3 nested HWPT has no ``cache_invalidate_user``
    (EOPNOTSUPP); the guest's TLBI_NSNH_ALL and TLBI_NH_ALL/ASID/VAA are taken."""
    g = NestedGuest(svmm, "smmuv3")
    g.attach()
    assert invalidate_raw(g, [], entry_num=0, data_uptr=0) == (0, 0)
    assert invalidate_raw(g, [NH_VA[:8]]) == (0, 1)
    assert invalidate_raw(g, [NH_VA], hwpt_id=g.parent) == (-EINVAL.errno, 0)
    assert invalidate_raw(g, [NH_VA], hwpt_id=g.hwpt) == (-EOPNOTSUPP.errno, 0)
    cmds = [
        smmu_cmd(0x30),  # TLBI_NSNH_ALL -> TLBI_NH_ALL of the VMID
        smmu_cmd(0x10),
        smmu_cmd(CMDQ_OP_TLBI_NH_ASID | ASID << 48),
        smmu_cmd(0x13, IOVA_SRC),
    ]
    assert svmm.fd.hwpt_invalidate(g.viommu, INV, list(cmds), g.scratch) == 4
    assert unit(svmm).stats.cmd_errors == 0


def test_the_guests_vmid_is_replaced_by_the_vioMMUs(
    svmm: Vmm, iommulab_expect: Expectations
) -> None:
    """A TLBI_NH_VA naming another VMID still reaches the guest's entries: the
    kernel puts the vIOMMU's VMID in, so the invalidation is sufficient."""
    g = NestedGuest(svmm, "smmuv3")
    dsa = g.start()
    assert g.move(dsa) == DSA_COMP_SUCCESS
    g.remap(IOVA_SRC, ALT)
    cmd = tlbi_nh_va(IOVA_SRC, vmid=0x77)
    assert svmm.fd.hwpt_invalidate(g.viommu, INV, [cmd], g.scratch) == 1
    assert g.move(dsa) == DSA_COMP_SUCCESS
    assert g.read(DST, PAGE_SIZE) == g.read(ALT, PAGE_SIZE)
    assert stale_uses(svmm) == 0
    dsa.disable()


@pytest.mark.parametrize("cfgi", [False, True])
def test_a_cd_change_needs_cfgi_cd_with_the_virtual_streamid(
    svmm: Vmm, iommulab_expect: Expectations, cfgi: bool
) -> None:
    """The guest moves its CD to a second table that maps the source to ALT (new
    ASID, so no TLB entry matches). Without CFGI_CD the SMMU keeps the cached CD
    and the model reports the stale use; CFGI_CD naming the guest's StreamID
    (turned into the physical one through the vDEVICE) is what makes it take."""
    if not cfgi:
        iommulab_expect.stale()
    g = NestedGuest(svmm, "smmuv3")
    dsa = g.start()
    assert g.move(dsa) == DSA_COMP_SUCCESS
    alt_l0, alt_l1, alt_l2, alt_l3 = 0x6000, 0x7000, 0x8000, 0x9000
    for table in (alt_l0, alt_l1, alt_l2):
        g.vmm.write(g.mem + table, bytes(PAGE_SIZE))
    q(g.vmm, g.mem, alt_l0, 0, alt_l1 | LPAE_TABLE)
    q(g.vmm, g.mem, alt_l1, 1, alt_l2 | LPAE_TABLE)
    q(g.vmm, g.mem, alt_l2, 0, alt_l3 | LPAE_TABLE)
    g.vmm.write(g.mem + alt_l3, g.read(0x4000, PAGE_SIZE))
    q(g.vmm, g.mem, alt_l3, 0, int.from_bytes(g.read(0x4000, 8), "little") - SRC + ALT)  # IOVA_SRC
    write_cd(g.vmm, g.mem, alt_l0, ASID + 1)
    if cfgi:
        cmd = smmu_cmd(CMDQ_OP_CFGI_CD | VSID << 32, 1)
        assert svmm.fd.hwpt_invalidate(g.viommu, INV, [cmd], g.scratch) == 1
    assert g.move(dsa) == DSA_COMP_SUCCESS
    want = ALT if cfgi else SRC
    assert g.read(DST, PAGE_SIZE) == g.read(want, PAGE_SIZE)
    assert (stale_uses(svmm) == 0) == cfgi
    dsa.disable()


# --------------------------------------------------------------------------- objects


@pytest.mark.parametrize(
    ("what", "errno"),
    [
        ("flags", EOPNOTSUPP),
        ("default_type", EOPNOTSUPP),
        ("unknown_type", EOPNOTSUPP),
        ("not_a_parent", EINVAL),
        ("ioas", ENOENT),
        ("no_device", ENOENT),
    ],
)
def test_bad_viommu_alloc(svmm: Vmm, what: str, errno: type[Exception]) -> None:
    g = NestedGuest(svmm, "smmuv3")
    paging = svmm.fd.hwpt_alloc(g.dev_id, g.ioas)
    before = sorted(svmm.fd.ctx.objects)
    cmd = uapi.iommu_viommu_alloc(
        type=uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id=g.dev_id, hwpt_id=g.parent
    )
    match what:
        case "flags":
            cmd.flags = 1
        case "default_type":
            cmd.type = uapi.IOMMU_VIOMMU_TYPE_DEFAULT
        case "unknown_type":
            cmd.type = 2
        case "not_a_parent":
            cmd.hwpt_id = paging
        case "ioas":
            cmd.hwpt_id = g.ioas
        case "no_device":
            cmd.dev_id = 999
    assert raw(svmm.fd, uapi.IOMMU_VIOMMU_ALLOC, cmd)[0] == -errno.errno  # type: ignore[attr-defined]
    assert sorted(svmm.fd.ctx.objects) == before
    assert svmm.fd.ctx.objects[g.parent].users == 2  # type: ignore[union-attr]


def test_bad_vdevice_alloc(svmm: Vmm) -> None:
    """A virtual ID taken on the vIOMMU is EEXIST; an unknown vIOMMU or device
    ENOENT; nothing is left behind."""
    g = NestedGuest(svmm, "smmuv3")
    before = sorted(svmm.fd.ctx.objects)
    with pytest.raises(EEXIST):
        svmm.fd.vdevice_alloc(g.viommu, g.dev_id, VSID)
    with pytest.raises(ENOENT):
        svmm.fd.vdevice_alloc(g.parent, g.dev_id, 1)
    with pytest.raises(ENOENT):
        svmm.fd.vdevice_alloc(g.viommu, 999, 1)
    assert sorted(svmm.fd.ctx.objects) == before
    assert svmm.fd.ctx.objects[g.viommu].users == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("what", "errno"),
    [
        ("type", EINVAL),  # iommu_copy_struct_from_user: another data type
        ("short", EINVAL),
        ("long_nonzero_tail", E2BIG),
        ("flags", EOPNOTSUPP),
        ("on_the_parent", EOPNOTSUPP),  # SMMUv3 nests only on a vIOMMU
        ("no_data", EINVAL),
    ],
)
def test_bad_nested_alloc(svmm: Vmm, what: str, errno: type[Exception]) -> None:
    g = NestedGuest(svmm, "smmuv3")
    before = sorted(svmm.fd.ctx.objects)
    g.vmm.write(g.scratch, vste().to_bytes() + bytes(16))
    cmd = uapi.iommu_hwpt_alloc(
        dev_id=g.dev_id,
        pt_id=g.viommu,
        data_type=ARM,
        data_len=uapi.iommu_hwpt_arm_smmuv3.SIZE,
        data_uptr=g.scratch,
    )
    match what:
        case "type":
            cmd.data_type = uapi.IOMMU_HWPT_DATA_VTD_S1
        case "short":
            cmd.data_len = 8
        case "long_nonzero_tail":
            cmd.data_len = 24
            g.vmm.write(g.scratch + 20, b"\x01")
        case "flags":
            cmd.flags = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
        case "on_the_parent":
            cmd.pt_id = g.parent
        case "no_data":
            cmd.data_len = 0
    assert raw(svmm.fd, uapi.IOMMU_HWPT_ALLOC, cmd)[0] == -errno.errno  # type: ignore[attr-defined]
    assert sorted(svmm.fd.ctx.objects) == before
    assert svmm.fd.ctx.objects[g.viommu].users == 2  # type: ignore[union-attr]


def test_a_nested_attach_is_ebusy_while_pasids_are_attached(svmm: Vmm) -> None:
    g = NestedGuest(svmm, "smmuv3")
    hwpt = svmm.fd.hwpt_alloc(g.dev_id, g.ioas, flags=uapi.IOMMU_HWPT_ALLOC_PASID)
    svmm.vfio.attach_pt(hwpt, pasid=3)
    g.hwpt = g.nested()
    with pytest.raises(EBUSY):
        svmm.vfio.attach_pt(g.hwpt)


# --------------------------------------------------------------------------- generations


def test_without_the_parameter_the_6_12_baseline_stays(iommulab_checks: KernelChecks) -> None:
    """``iommufd.viommu`` off (the default) on the same SMMU: no vIOMMU commands
    (ENOTTY), no hw_info (type NONE), NEST_PARENT refused (EOPNOTSUPP)."""
    vmm = booted(iommulab_checks, S2P, "")
    dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    cmd = uapi.iommu_viommu_alloc(type=1, dev_id=dev_id, hwpt_id=ioas)
    assert raw(vmm.fd, uapi.IOMMU_VIOMMU_ALLOC, cmd)[0] == -ENOTTY.errno
    vcmd = uapi.iommu_vdevice_alloc(viommu_id=ioas, dev_id=dev_id)
    assert raw(vmm.fd, uapi.IOMMU_VDEVICE_ALLOC, vcmd)[0] == -ENOTTY.errno
    info = uapi.iommu_hw_info(dev_id=dev_id)
    out = uapi.iommu_hw_info.from_bytes(do_ioctl(vmm.fd, uapi.IOMMU_GET_HW_INFO, info))
    assert out.out_data_type == uapi.IOMMU_HW_INFO_TYPE_NONE
    with pytest.raises(EOPNOTSUPP):
        vmm.fd.hwpt_alloc(dev_id, ioas, flags=NEST_PARENT)
    vmm.close()


@pytest.mark.parametrize(
    ("config", "flags"),
    [
        ({}, NEST_PARENT),  # no IDR0.S2P: no nesting
        ({"s2p": True, "httu": 2}, NEST_PARENT | uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING),
    ],
    ids=["no_s2p", "dirty_parent"],
)
def test_a_nest_parent_the_smmu_cannot_build_is_eopnotsupp(
    iommulab_checks: KernelChecks, config: dict[str, object], flags: int
) -> None:
    vmm = booted(iommulab_checks, config, VIOMMU_ON)
    dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    with pytest.raises(EOPNOTSUPP):
        vmm.fd.hwpt_alloc(dev_id, ioas, flags=flags)
    assert sorted(vmm.fd.ctx.objects) == [dev_id, ioas]
    vmm.close()


# --------------------------------------------------------------------------- fail_nth


def _guest(vmm: Vmm, st: State) -> None:
    st["g"] = NestedGuest(vmm, "smmuv3")


def _bound(vmm: Vmm, st: State) -> None:
    st["dev"] = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    st["ioas"] = vmm.fd.ioas_alloc()
    st["buf"] = vmm.buffer(PAGE_SIZE)


def _parent(vmm: Vmm, st: State) -> None:
    _bound(vmm, st)
    st["parent"] = vmm.fd.hwpt_alloc(st["dev"], st["ioas"], flags=NEST_PARENT)


def _viommu(vmm: Vmm, st: State) -> None:
    _parent(vmm, st)
    st["viommu"] = vmm.fd.viommu_alloc(st["dev"], st["parent"])


def _nested(vmm: Vmm, st: State) -> None:
    _guest(vmm, st)
    st["g"].hwpt = st["g"].nested()


def _attached(vmm: Vmm, st: State) -> None:
    _nested(vmm, st)
    vmm.vfio.attach_pt(st["g"].hwpt)


def _hw_info(vmm: Vmm, st: State) -> object:
    cmd = uapi.iommu_hw_info(dev_id=st["dev"], data_len=64, data_uptr=st["buf"])
    return do_ioctl(vmm.fd, uapi.IOMMU_GET_HW_INFO, cmd)


FAIL_NTH = {
    "parent_alloc": (_bound, lambda v, s: v.fd.hwpt_alloc(s["dev"], s["ioas"], NEST_PARENT)),
    "viommu_alloc": (_parent, lambda v, s: v.fd.viommu_alloc(s["dev"], s["parent"])),
    "vdevice_alloc": (_viommu, lambda v, s: v.fd.vdevice_alloc(s["viommu"], s["dev"], VSID)),
    "nested_alloc": (_guest, lambda v, s: s["g"].nested()),
    "nested_attach": (_nested, lambda v, s: v.vfio.attach_pt(s["g"].hwpt)),
    "invalidate": (_attached, lambda v, s: s["g"].invalidate(IOVA_SRC)),
    "hw_info": (_bound, _hw_info),
}


@pytest.mark.parametrize("scenario", sorted(FAIL_NTH))
def test_fail_nth_over_the_6_13_ioctls(scenario: str) -> None:
    """upstream's ``iommufd_fail_nth`` over the vIOMMU ioctls and what they reach in
    the SMMUv3 driver: every injected failure returns an errno and leaves objects,
    user counts, attachments, pins and allocations as they were."""
    setup, op = FAIL_NTH[scenario]
    points = sweep(boot_nested("smmuv3"), setup, op)
    assert points > 0
