"""Nested translation on VT-d through iommufd (PGTT=3, ECAP.NEST), as a VMM runs it
for a guest that owns its device's stage-1 table.

The "guest" is a user buffer mapped at IOVA 0 of an IOAS (IOVA = guest-physical
address) through a NEST_PARENT HWPT; the test writes an x86-64 stage-1 table into
that buffer, as a guest kernel would, and allocates a nested HWPT pointing at it.
The DSA then copies with stage-1 addresses, which the VT-d model translates
through both stages. The evidence: the bytes that arrive, the model's stale-use
count and fault records, and the errno and ``entry_num`` of the ioctls.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from drivers.intel_iommu import iommu as intel_iommu_core
from hw.vtd import registers as vr
from hw.vtd.dump import dump_unit
from hw.vtd.unit import VtdUnit
from iommulab.vfio_dsa import VfioDsa
from kernel.errno import E2BIG, EINVAL, ENOENT, EOPNOTSUPP
from kernel.iommufd.uapi_helpers import do_ioctl
from kernel.mm import PAGE_SIZE
from kernel.pci import pci_dev_id
from kernel.uapi import iommufd as uapi
from kernel.uapi.idxd import DSA_COMP_PAGE_FAULT_NOBOF, DSA_COMP_SUCCESS
from tests.kernel.iommufd.conftest import Vmm, boot_vendor, pdev
from tests.kernel.iommufd.helpers import raw, user_phys
from tests.kernel.iommufd.test_fail_nth import State, sweep

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations, KernelChecks

GUEST = 64 * PAGE_SIZE
PML4, PDPT, PD, PT = 0x1000, 0x2000, 0x3000, 0x4000
"""Guest-physical addresses of the guest's stage-1 table pages."""
SRC, ALT, DST, CR = 0x10000, 0x18000, 0x20000, 0x30000
"""Guest-physical data pages."""
S1 = 0x4000_0000
"""Stage-1 input addresses (the guest's IOVAs) start here (PML4 0, PDPT 1, PD 0)."""
IOVA_SRC, IOVA_DST, IOVA_CR = S1, S1 + 0x10000, S1 + 0x20000
NONLEAF = 0x27  # P | R/W | U/S | A
LEAF = 0x67  # P | R/W | U/S | A | D
NEST = {"nest": True}
S1_DATA = uapi.IOMMU_HWPT_DATA_VTD_S1
INV_DATA = uapi.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1


def write_pte(vmm: Vmm, guest: int, table: int, index: int, value: int) -> None:
    vmm.write(guest + table + 8 * index, value.to_bytes(8, "little"))


def s1_map(vmm: Vmm, guest: int, iova: int, gpa: int, flags: int = LEAF) -> None:
    """The guest maps ``iova`` to ``gpa`` in its last-level table."""
    write_pte(vmm, guest, PT, (iova >> 12) & 0x1FF, gpa | flags)


def build_guest(vmm: Vmm, guest: int) -> None:
    """A 4-level stage-1 table: PML4[0] -> PDPT[1] -> PD[0] -> PT, mapping 16 pages
    at each of IOVA_SRC, IOVA_DST and IOVA_CR; distinct bytes in SRC and ALT."""
    vmm.write(guest, bytes(GUEST))
    write_pte(vmm, guest, PML4, 0, PDPT | NONLEAF)
    write_pte(vmm, guest, PDPT, 1, PD | NONLEAF)
    write_pte(vmm, guest, PD, 0, PT | NONLEAF)
    for n in range(16):
        for iova, gpa in ((IOVA_SRC, SRC), (IOVA_DST, DST), (IOVA_CR, CR)):
            s1_map(vmm, guest, iova + n * PAGE_SIZE, gpa + n * PAGE_SIZE)
    vmm.write(guest + SRC, bytes((i * 7 + 1) & 0xFF for i in range(2 * PAGE_SIZE)))
    vmm.write(guest + ALT, bytes((i * 3 + 2) & 0xFF for i in range(2 * PAGE_SIZE)))


@pytest.fixture
def nest_vmm(iommulab_checks: KernelChecks) -> Iterator[Vmm]:
    k = iommulab_checks.track(boot_vendor("vtd", NEST))
    with k:
        v = Vmm.start(k)
        yield v
        v.close()


class Guest:
    """The VMM's objects: device id, IOAS, parent HWPT, the guest memory, and a
    scratch user page for vendor data."""

    def __init__(self, vmm: Vmm) -> None:
        self.vmm = vmm
        self.dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
        self.ioas = vmm.fd.ioas_alloc()
        self.mem = vmm.buffer(GUEST)
        build_guest(vmm, self.mem)
        vmm.fd.ioas_map(self.ioas, self.mem, GUEST, iova=0)
        self.parent = vmm.fd.hwpt_alloc(
            self.dev_id, self.ioas, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
        )
        self.scratch = vmm.buffer(PAGE_SIZE)

    def s1_cmd(self, **kw: int) -> uapi.iommu_hwpt_alloc:
        """An IOMMU_HWPT_ALLOC of a nested HWPT (its data already in ``scratch``)."""
        self.vmm.write(
            self.scratch, uapi.iommu_hwpt_vtd_s1(pgtbl_addr=PML4, addr_width=48).to_bytes()
        )
        args = {
            "dev_id": self.dev_id,
            "pt_id": self.parent,
            "data_type": S1_DATA,
            "data_len": uapi.iommu_hwpt_vtd_s1.SIZE,
            "data_uptr": self.scratch,
        }
        args.update(kw)
        return uapi.iommu_hwpt_alloc(**args)

    def nested(self, flags: int = 0, addr_width: int = 48) -> int:
        data = uapi.iommu_hwpt_vtd_s1(flags=flags, pgtbl_addr=PML4, addr_width=addr_width)
        return self.vmm.fd.hwpt_alloc(
            self.dev_id, self.parent, data_type=S1_DATA, data=data, data_uptr=self.scratch
        )

    def invalidate(self, iova: int, npages: int) -> int:
        entry = uapi.iommu_hwpt_vtd_s1_invalidate(addr=iova, npages=npages)
        return self.vmm.fd.hwpt_invalidate(self.hwpt, INV_DATA, [entry], self.scratch)

    def start(self) -> VfioDsa:
        self.hwpt = self.nested()
        self.vmm.vfio.attach_pt(self.hwpt)
        dsa = VfioDsa.open(self.vmm.vfio, self.vmm.task)
        dsa.enable()
        return dsa

    def move(self, dsa: VfioDsa, size: int = PAGE_SIZE) -> int:
        return dsa.memmove(IOVA_SRC, IOVA_DST, size, IOVA_CR, self.mem + CR).status

    def read(self, gpa: int, size: int) -> bytes:
        return self.vmm.read(self.mem + gpa, size)


def vtd_unit(vmm: Vmm) -> VtdUnit:
    unit = next(iter(vmm.kernel.machine.iommus.values()))  # type: ignore[attr-defined]
    assert isinstance(unit, VtdUnit)
    return unit


def fault_reasons(vmm: Vmm) -> set[int]:
    """The fault reasons recorded: in the unit's fault recording registers (F set)
    and in what the driver's fault handler logged."""
    unit = vtd_unit(vmm)
    regs = [unit.regs[f"FRCD{i}_HI"] for i in range(unit.cfg.nfr)]
    out = {vr.FRCD_HI.FR.get(hi) for hi in regs if hi >> 63}
    return out | {int(m, 16) for m in re.findall(r"fault reason (0x[0-9a-f]+)", vmm.kernel.dmesg())}


# --------------------------------------------------------------------------- must show


def test_a_dsa_copy_through_a_user_owned_stage_1_table_and_the_ioas(nest_vmm: Vmm) -> None:
    """Two pages copied with stage-1 addresses land where the guest's table and the
    IOAS put them; the PASID entry the driver wrote is nested (PGTT=3) with the
    guest's table pointer and the parent's second-stage table."""
    g = Guest(nest_vmm)
    dsa = g.start()
    assert g.move(dsa, 2 * PAGE_SIZE) == DSA_COMP_SUCCESS
    assert g.read(DST, 2 * PAGE_SIZE) == g.read(SRC, 2 * PAGE_SIZE)
    assert g.read(DST + 2 * PAGE_SIZE, 16) == bytes(16)
    unit = vtd_unit(nest_vmm)
    assert unit.stats.iotlb_misses >= 3 and unit.stats.stale_uses == 0
    # The first-stage leaf of the destination got A and D, the source's A.
    assert int.from_bytes(g.read(PT + 8 * 0x10, 8), "little") & 0x60 == 0x60
    # The dump shows the entry as nested: the guest's root, over the IOAS's table.
    dump = dump_unit(unit)
    assert f"nested first-stage 4-level root={PML4:#x} (guest) over second-stage" in dump
    dsa.disable()


def test_a_guest_remap_needs_the_user_invalidation(
    nest_vmm: Vmm, iommulab_expect: Expectations
) -> None:
    """The guest points its source page elsewhere and does not invalidate: the DSA
    still reads the old page through the IOTLB's nested entry, and the model
    reports the stale use."""
    iommulab_expect.stale()
    g = Guest(nest_vmm)
    dsa = g.start()
    assert g.move(dsa) == DSA_COMP_SUCCESS
    s1_map(g.vmm, g.mem, IOVA_SRC, ALT)
    assert g.move(dsa) == DSA_COMP_SUCCESS
    assert g.read(DST, PAGE_SIZE) == g.read(SRC, PAGE_SIZE)
    assert vtd_unit(nest_vmm).stats.stale_uses >= 1
    dsa.disable()


def test_the_user_invalidation_is_sufficient(nest_vmm: Vmm) -> None:
    """The same remap followed by IOMMU_HWPT_INVALIDATE of that page: the DSA reads
    the new page and nothing stale is used (the checker fails the test otherwise)."""
    g = Guest(nest_vmm)
    dsa = g.start()
    assert g.move(dsa) == DSA_COMP_SUCCESS
    s1_map(g.vmm, g.mem, IOVA_SRC, ALT)
    assert g.invalidate(IOVA_SRC, 1) == 1
    assert g.move(dsa) == DSA_COMP_SUCCESS
    assert g.read(DST, PAGE_SIZE) == g.read(ALT, PAGE_SIZE) != g.read(SRC, PAGE_SIZE)
    assert vtd_unit(nest_vmm).stats.stale_uses == 0
    dsa.disable()


def test_a_second_stage_change_without_its_flush_is_a_stale_use(
    nest_vmm: Vmm, iommulab_expect: Expectations, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The VMM moves the guest's source page to another host page while the
    driver's flush of the parent is patched out: the nested IOTLB entry still
    holds the old second-stage answer, the DSA reads the old page, and the model
    reports the stale use (the second stage's entries are in the nested entry)."""
    iommulab_expect.stale()
    g = Guest(nest_vmm)
    dsa = g.start()
    assert g.move(dsa) == DSA_COMP_SUCCESS
    other = nest_vmm.buffer(PAGE_SIZE, 9)
    with monkeypatch.context() as m:
        m.setattr(intel_iommu_core, "domain_flush_range", lambda *a: None)
        nest_vmm.fd.ioas_unmap(g.ioas, 0, GUEST)
    nest_vmm.fd.ioas_map(g.ioas, g.mem, SRC, iova=0)
    nest_vmm.fd.ioas_map(g.ioas, other, PAGE_SIZE, iova=SRC)
    rest = SRC + PAGE_SIZE
    nest_vmm.fd.ioas_map(g.ioas, g.mem + rest, GUEST - rest, iova=rest)
    assert g.move(dsa) == DSA_COMP_SUCCESS
    assert g.read(DST, PAGE_SIZE) == g.read(SRC, PAGE_SIZE) != nest_vmm.read(other, PAGE_SIZE)
    assert vtd_unit(nest_vmm).stats.stale_uses >= 1
    dsa.disable()


def translate(vmm: Vmm, iova: int, write: bool = False) -> tuple[int, int]:
    """The DSA's request for ``iova`` (untranslated, no PASID) through the VT-d model:
    ``(host address, 0)`` or ``(-1, fault reason)``."""
    res = vtd_unit(vmm).translate(pci_dev_id(pdev()), None, False, iova, 8, write)
    if res.fault is not None:
        return -1, res.fault.reason
    return res.runs[0][0], 0


def unmap_guest_page(vmm: Vmm, g: Guest, gpa: int) -> None:
    """The VMM takes guest page ``gpa`` out of the IOAS (a second-stage change)."""
    vmm.fd.ioas_unmap(g.ioas, 0, GUEST)
    if gpa:
        vmm.fd.ioas_map(g.ioas, g.mem, gpa, iova=0)
    rest = gpa + PAGE_SIZE
    vmm.fd.ioas_map(g.ioas, g.mem + rest, GUEST - rest, iova=rest)


def test_a_second_stage_unmap_is_flushed_through_the_parent(nest_vmm: Vmm) -> None:
    """Unmapping the guest's source page from the IOAS changes the second stage: the
    parent's NESTING cache tag flushes the nested entries (no stale use), and the
    DSA's next copy stops at the source."""
    g = Guest(nest_vmm)
    dsa = g.start()
    assert g.move(dsa) == DSA_COMP_SUCCESS
    unmap_guest_page(nest_vmm, g, SRC)
    assert g.move(dsa) == DSA_COMP_PAGE_FAULT_NOBOF
    assert vtd_unit(nest_vmm).stats.stale_uses == 0
    dsa.disable()


@pytest.mark.parametrize(
    ("damage", "write", "reason"),
    [
        ("none", False, 0),
        ("s1_leaf", False, 0x71),  # first-stage entry not present
        ("s1_read_only", True, 0x85),  # first-stage R/W=0, write
        ("s2_output", False, 0x86),  # the output page is not in the IOAS (read)
        ("s2_output", True, 0x85),  # (write)
        ("s2_table", False, 0x76),  # the last-level table page is not in the IOAS
        ("s2_top", False, 0x75),  # the PML4 page is not in the IOAS
        ("beyond", False, 0x74),  # a table pointer beyond MGAW
        ("s2_no_write", False, 0x77),  # the A update of a table page mapped read-only
    ],
)
def test_faults_are_reported_at_the_stage_that_failed(
    nest_vmm: Vmm, damage: str, write: bool, reason: int
) -> None:
    """The reason a nested request faults with names the stage and the step: a
    first-stage entry (0x71, 0x85), the second-stage translation of the output
    (0x86/0x85), of a first-stage table pointer (0x76; 0x75 for the top table)
    or a table pointer beyond the second stage (0x74). The fault is recorded."""
    g = Guest(nest_vmm)
    g.hwpt = g.nested()
    nest_vmm.vfio.attach_pt(g.hwpt)
    match damage:
        case "s1_leaf":
            s1_map(g.vmm, g.mem, IOVA_SRC, 0, 0)
        case "s1_read_only":
            s1_map(g.vmm, g.mem, IOVA_SRC, SRC, LEAF & ~2)
        case "s2_output":
            unmap_guest_page(nest_vmm, g, SRC)
        case "s2_table":
            unmap_guest_page(nest_vmm, g, PT)
        case "s2_top":
            unmap_guest_page(nest_vmm, g, PML4)
        case "s2_no_write":
            unmap_guest_page(nest_vmm, g, PD)
            nest_vmm.fd.ioas_map(g.ioas, g.mem + PD, PAGE_SIZE, PD, uapi.IOMMU_IOAS_MAP_READABLE)
            write_pte(g.vmm, g.mem, PD, 0, PT | NONLEAF & ~0x20)
        case "beyond":
            write_pte(g.vmm, g.mem, PD, 0, (1 << 49) | NONLEAF)  # MGAW is 48
    got = translate(nest_vmm, IOVA_SRC + 8, write)
    if not reason:
        assert got == (user_phys(g.vmm.task, g.mem + SRC + 8), 0)
        return
    assert got == (-1, reason)
    assert reason in fault_reasons(nest_vmm)


def test_dirty_tracking_on_the_parent_reports_the_guest_pages_a_nested_dma_wrote(
    iommulab_checks: KernelChecks,
) -> None:
    """With second-stage A/D (ECAP.SLADS), tracking switched on at the parent sets
    SSADE in the nested PASID entry too; the bitmap of the parent is then exactly
    the guest-physical pages the DSA wrote through the guest's table (also a page
    whose cached nested entry was filled by a read before it was written)."""
    k = iommulab_checks.track(boot_vendor("vtd", {"nest": True, "slads": True}))
    with k:
        vmm = Vmm.start(k)
        dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
        g = Guest.__new__(Guest)
        g.vmm, g.dev_id, g.ioas = vmm, dev_id, vmm.fd.ioas_alloc()
        g.mem = vmm.buffer(GUEST)
        build_guest(vmm, g.mem)
        vmm.fd.ioas_map(g.ioas, g.mem, GUEST, iova=0)
        flags = uapi.IOMMU_HWPT_ALLOC_NEST_PARENT | uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
        g.parent = vmm.fd.hwpt_alloc(dev_id, g.ioas, flags=flags)
        g.scratch = vmm.buffer(PAGE_SIZE)
        dsa = g.start()
        track = uapi.iommu_hwpt_set_dirty_tracking(
            flags=uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE, hwpt_id=g.parent
        )
        do_ioctl(vmm.fd, uapi.IOMMU_HWPT_SET_DIRTY_TRACKING, track)
        assert g.move(dsa, 2 * PAGE_SIZE) == DSA_COMP_SUCCESS
        # back again: the source's nested entries were filled by reads, now written
        back = dsa.memmove(IOVA_DST, IOVA_SRC, PAGE_SIZE, IOVA_CR, g.mem + CR)
        assert back.status == DSA_COMP_SUCCESS
        bitmap = vmm.buffer(PAGE_SIZE)
        get = uapi.iommu_hwpt_get_dirty_bitmap(
            hwpt_id=g.parent, iova=0, length=GUEST, page_size=PAGE_SIZE, data=bitmap
        )
        do_ioctl(vmm.fd, uapi.IOMMU_HWPT_GET_DIRTY_BITMAP, get)
        word = int.from_bytes(vmm.read(bitmap, 8), "little")
        dirty = {n for n in range(64) if word >> n & 1}
        pages = {SRC // PAGE_SIZE, DST // PAGE_SIZE, DST // PAGE_SIZE + 1, CR // PAGE_SIZE}
        assert dirty == pages
        dsa.disable()
        vmm.close()


def test_a_guest_2m_page_over_4k_second_stage_pages(nest_vmm: Vmm) -> None:
    """The guest maps 2 MiB with one PD entry (PS) and leaves A clear on its way: a
    request through it reaches the guest page the IOAS maps, and the walk sets A
    (and D for the write) on the first-stage entries it used. A 2 MiB entry whose
    address is not 2 MiB aligned is a first-stage reserved-bit fault (0x72)."""
    g = Guest(nest_vmm)
    g.hwpt = g.nested()
    nest_vmm.vfio.attach_pt(g.hwpt)
    big = S1 + (1 << 21)
    write_pte(g.vmm, g.mem, PD, 1, 0 | 0x80 | (LEAF & ~0x60))
    write_pte(g.vmm, g.mem, PDPT, 1, PD | (NONLEAF & ~0x20))
    assert translate(nest_vmm, big + SRC + 0x10) == (user_phys(g.vmm.task, g.mem + SRC + 0x10), 0)
    assert translate(nest_vmm, big + DST + 8, write=True) == (
        user_phys(g.vmm.task, g.mem + DST + 8),
        0,
    )
    pde = int.from_bytes(g.read(PD + 8, 8), "little")
    pdpte = int.from_bytes(g.read(PDPT + 8, 8), "little")
    assert (pde & 0x60, pdpte & 0x20) == (0x60, 0x20)
    write_pte(g.vmm, g.mem, PD, 2, 0x4000 | 0x80 | LEAF)
    assert translate(nest_vmm, S1 + (2 << 21)) == (-1, 0x72)


# --------------------------------------------------------------------------- bad input


def test_nesting_on_hardware_without_nest_is_eopnotsupp(iommulab_checks: KernelChecks) -> None:
    k = iommulab_checks.track(boot_vendor("vtd"))
    with k:
        vmm = Vmm.start(k)
        dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
        ioas = vmm.fd.ioas_alloc()
        cmd = uapi.iommu_hwpt_alloc(
            dev_id=dev_id, pt_id=ioas, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
        )
        assert raw(vmm.fd, uapi.IOMMU_HWPT_ALLOC, cmd)[0] == -EOPNOTSUPP.errno
        assert sorted(vmm.fd.ctx.objects) == [dev_id, ioas]
        vmm.close()


@pytest.mark.parametrize(
    ("what", "errno"),
    [
        ("data_type_none", EINVAL),  # data without a type: the core refuses it
        ("smmu_data_type", EOPNOTSUPP),  # not VTD_S1: 6.12's nested.c says EOPNOTSUPP
        ("short", EINVAL),
        ("long_nonzero_tail", E2BIG),
        ("flags", EOPNOTSUPP),
        ("not_a_parent", EINVAL),
        ("pt_is_nested", ENOENT),  # rather EINVAL upstream? see below
        ("bad_width", EINVAL),  # refused at attach (intel_pasid_setup_nested)
    ],
)
def test_bad_nested_alloc(nest_vmm: Vmm, what: str, errno: type[Exception]) -> None:
    g = Guest(nest_vmm)
    before = sorted(nest_vmm.fd.ctx.objects)
    cmd = g.s1_cmd()
    match what:
        case "data_type_none":
            cmd.data_type = uapi.IOMMU_HWPT_DATA_NONE
        case "smmu_data_type":
            cmd.data_type = 2
        case "short":
            cmd.data_len = uapi.iommu_hwpt_vtd_s1.SIZE - 4
        case "long_nonzero_tail":
            cmd.data_len = uapi.iommu_hwpt_vtd_s1.SIZE + 8
            g.vmm.write(g.scratch + uapi.iommu_hwpt_vtd_s1.SIZE, b"\x01")
        case "flags":
            cmd.flags = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
        case "not_a_parent":
            cmd.pt_id = nest_vmm.fd.hwpt_alloc(g.dev_id, g.ioas)
            before = sorted(nest_vmm.fd.ctx.objects)
        case "pt_is_nested":
            cmd.pt_id = g.nested()
            before = sorted(nest_vmm.fd.ctx.objects)
        case "bad_width":
            hwpt = g.nested(addr_width=39)
            with pytest.raises(EINVAL):
                nest_vmm.vfio.attach_pt(hwpt)
            nest_vmm.fd.destroy(hwpt)
            assert sorted(nest_vmm.fd.ctx.objects) == before
            return
    rc, _ = raw(nest_vmm.fd, uapi.IOMMU_HWPT_ALLOC, cmd)
    if what == "pt_is_nested":  # a nested HWPT is neither an IOAS nor a paging HWPT
        assert rc == -EINVAL.errno
        return
    assert rc == -errno.errno  # type: ignore[attr-defined]
    assert sorted(nest_vmm.fd.ctx.objects) == before
    assert nest_vmm.fd.ctx.objects[g.parent].users == 1  # type: ignore[union-attr]


def invalidate_raw(g: Guest, entries: list[bytes], **kw: int) -> tuple[int, int]:
    """IOMMU_HWPT_INVALIDATE of raw entries; the return value and ``entry_num``."""
    g.vmm.write(g.scratch, b"".join(entries))
    args = {
        "hwpt_id": g.hwpt,
        "data_uptr": g.scratch,
        "data_type": INV_DATA,
        "entry_len": len(entries[0]) if entries else 24,
        "entry_num": len(entries),
    }
    args.update(kw)
    rc, out = raw(g.vmm.fd, uapi.IOMMU_HWPT_INVALIDATE, uapi.iommu_hwpt_invalidate(**args))
    return rc, uapi.iommu_hwpt_invalidate.from_bytes(out).entry_num


def inv(addr: int = S1, npages: int = 1, flags: int = 0, reserved: int = 0) -> bytes:
    return uapi.iommu_hwpt_vtd_s1_invalidate(
        addr=addr, npages=npages, flags=flags, reserved=reserved
    ).to_bytes()


@pytest.mark.parametrize(
    ("entries", "kw", "errno", "done"),
    [
        ([inv(), inv(S1 + 0x800)], {}, EINVAL, 1),  # unaligned second entry
        ([inv(), inv(), inv(flags=2)], {}, EOPNOTSUPP, 2),  # unknown flag
        ([inv(reserved=1)], {}, EOPNOTSUPP, 0),
        ([inv(npages=(1 << 64) - 1)], {}, EINVAL, 0),  # "all" needs address 0
        ([inv()], {"data_type": 7}, EINVAL, 0),
        ([inv()], {"entry_len": 16}, EINVAL, 0),  # shorter than the struct
        ([inv() + b"\x01" * 8], {}, E2BIG, 0),  # longer, with a non-zero tail
        ([inv()], {"reserved": 1}, EOPNOTSUPP, 0),
        ([inv()], {"data_uptr": 0}, EINVAL, 0),
        ([inv()], {"hwpt_id": 999}, ENOENT, 0),
    ],
)
def test_bad_invalidation_entries(
    nest_vmm: Vmm, entries: list[bytes], kw: dict[str, int], errno: type[Exception], done: int
) -> None:
    """The errno of the first bad entry, and ``entry_num`` = the entries handled
    before it (written back on failure too, as 6.12 does)."""
    g = Guest(nest_vmm)
    g.hwpt = g.nested()
    assert invalidate_raw(g, entries, **kw) == (-errno.errno, done)  # type: ignore[attr-defined]


def test_invalidation_edges(nest_vmm: Vmm) -> None:
    """No entries is a no-op; every page (npages = U64_MAX at address 0) and a leaf
    invalidation are accepted; a paging HWPT cannot be invalidated (ENOENT)."""
    g = Guest(nest_vmm)
    g.hwpt = g.nested()
    assert invalidate_raw(g, [], entry_num=0, data_uptr=0) == (0, 0)
    assert invalidate_raw(g, [inv(0, (1 << 64) - 1), inv(flags=1)]) == (0, 2)
    assert invalidate_raw(g, [inv()], hwpt_id=g.parent) == (-ENOENT.errno, 0)


def test_the_parent_cannot_go_before_its_nested_hwpt(nest_vmm: Vmm) -> None:
    g = Guest(nest_vmm)
    hwpt = g.nested()
    assert raw(nest_vmm.fd, uapi.IOMMU_DESTROY, uapi.iommu_destroy(id=g.parent))[0] < 0
    nest_vmm.fd.destroy(hwpt)
    nest_vmm.fd.destroy(g.parent)


# --------------------------------------------------------------------------- fail_nth


def _guest(vmm: Vmm, st: State) -> None:
    st["g"] = Guest(vmm)


def _nested(vmm: Vmm, st: State) -> None:
    _guest(vmm, st)
    st["g"].hwpt = st["g"].nested()


def _nested_attached(vmm: Vmm, st: State) -> None:
    _nested(vmm, st)
    vmm.vfio.attach_pt(st["g"].hwpt)


@pytest.mark.parametrize(
    ("setup", "op"),
    [
        (_guest, lambda v, s: s["g"].nested()),
        (_nested, lambda v, s: v.vfio.attach_pt(s["g"].hwpt)),
        (_nested_attached, lambda v, s: s["g"].invalidate(IOVA_SRC, 4)),
    ],
    ids=["alloc", "attach", "invalidate"],
)
def test_fail_nth_over_nested_alloc_attach_and_invalidate(setup: object, op: object) -> None:
    """upstream's ``iommufd_fail_nth`` over the nested ioctls: every injected
    failure returns an errno and leaves the objects, user counts, attachments and
    allocations as they were (alloc and attach allocate; invalidation does not)."""
    points = sweep(boot_vendor("vtd", NEST), setup, op)  # type: ignore[arg-type]
    assert (points > 0) == (op is not None and setup is not _nested_attached)
