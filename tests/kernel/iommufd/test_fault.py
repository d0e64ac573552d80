"""The iommufd fault queue on VT-d: a "VMM" allocates a fault queue and an
IOPF-capable HWPT, binds the DSA and submits a block-on-fault memmove whose
destination is not mapped yet. The DSA's ATS translation misses, it sends a PCIe
page request, VT-d queues it in its page request queue, intel prq reports it to
io-pgfault and the HWPT's handler hands it to the fault queue: the record is read
from the fault fd, user space maps the page with IOMMU_IOAS_MAP and writes the
response; the DSA retries and completes (or, answered Invalid, completes with the
page-fault status). Evidence: the records' bytes, the completion record, RAM."""

from __future__ import annotations

import pytest
from attrs import define

from iommulab.vfio_dsa import VfioDsa
from kernel.delay import udelay
from kernel.errno import EBUSY, EFAULT, EINVAL, ENOENT, EOPNOTSUPP, ESPIPE, ETIMEDOUT
from kernel.iommufd.fault import IommufdFaultFile, fault_fd_get
from kernel.iommufd.uapi_helpers import Iommufd
from kernel.mm import PAGE_SIZE
from kernel.mmap import PROT_READ
from kernel.sched import use_task
from kernel.uapi import idxd
from kernel.uapi import iommufd as uapi
from tests.kernel.iommufd.conftest import Vmm, boot_vendor, pdev
from tests.kernel.iommufd.helpers import raw
from tests.kernel.iommufd.test_fail_nth import sweep

SIZE = 0x2000
SRC, DST, CR = 0x10_0000, 0x20_0000, 0x30_0000
REC = uapi.iommu_hwpt_pgfault.SIZE
RESP = uapi.iommu_hwpt_page_response.SIZE


@pytest.fixture
def vendor() -> str:
    return "vtd"


@define(eq=False)
class UserFaultFd:
    """The VMM's view of a fault fd: ``read``/``write`` through a buffer of its own
    memory, as the syscalls take one."""

    vmm: Vmm
    filep: IommufdFaultFile
    buf: int

    @classmethod
    def of(cls, vmm: Vmm, fault_fd: int) -> UserFaultFd:
        return cls(vmm, fault_fd_get(fault_fd), vmm.buffer(PAGE_SIZE))

    def read(self, count: int) -> bytes | int:
        with use_task(self.vmm.task):
            n = self.filep.read(self.buf, count)
        return self.vmm.read(self.buf, n) if n >= 0 else n

    def write(self, data: bytes) -> int:
        self.vmm.write(self.buf, data)
        with use_task(self.vmm.task):
            return self.filep.write(self.buf, len(data))

    def poll(self) -> bool:
        return self.filep.poll()

    def close(self) -> None:
        self.filep.close()


def setup(vmm: Vmm) -> tuple[int, int, UserFaultFd, int, int, VfioDsa]:
    """Fault queue, IOPF-capable HWPT on a fresh IOAS with source and record mapped
    (the destination not), DSA bound, attached and enabled with block-on-fault."""
    fd = vmm.fd
    dev_id = vmm.vfio.bind_iommufd(fd.ctx)
    fault_id, fault_fd = fd.fault_queue_alloc()
    ioas = fd.ioas_alloc()
    src, cr = vmm.buffer(SIZE, 5), vmm.buffer(0x1000)
    fd.ioas_map(ioas, src, SIZE, iova=SRC)
    fd.ioas_map(ioas, cr, 0x1000, iova=CR)
    hwpt = fd.hwpt_alloc(dev_id, ioas, uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id)
    assert vmm.vfio.attach_pt(hwpt) == hwpt
    dsa = VfioDsa.open(vmm.vfio, vmm.task)
    dsa.enable(bof=True)
    return dev_id, ioas, UserFaultFd.of(vmm, fault_fd), src, cr, dsa


def wait_fault(ffile: UserFaultFd) -> list[uapi.iommu_hwpt_pgfault]:
    for _ in range(10_000):
        if ffile.poll():
            break
        udelay(1)
    data = ffile.read(4 * REC)
    assert isinstance(data, bytes) and data
    return [uapi.iommu_hwpt_pgfault.from_bytes(data[i : i + REC]) for i in range(0, len(data), REC)]


def respond(ffile: UserFaultFd, cookie: int, code: int) -> int:
    return ffile.write(uapi.iommu_hwpt_page_response(cookie=cookie, code=code).to_bytes())


def test_fault_delivered_then_mapped_and_answered_success(vmm: Vmm) -> None:
    dev_id, ioas, ffile, src, cr, dsa = setup(vmm)
    dst = vmm.buffer(SIZE)
    dsa.submit(SRC, DST, SIZE, CR, cr, bof=True)
    recs = wait_fault(ffile)
    last = recs[-1]
    assert last.dev_id == dev_id and last.addr == DST and last.length == 0
    assert last.perm & uapi.IOMMU_PGFAULT_PERM_WRITE
    assert last.flags & uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE
    assert not last.flags & uapi.IOMMU_PGFAULT_FLAGS_PASID_VALID  # RID-only requests
    assert not idxd.DsaCompletionRecord.from_bytes(vmm.read(cr, 32)).status  # blocked
    vmm.fd.ioas_map(ioas, dst, SIZE, iova=DST)
    assert respond(ffile, last.cookie, uapi.IOMMUFD_PAGE_RESP_SUCCESS) == RESP
    # The cookie is spent: answering it again is EINVAL.
    assert respond(ffile, last.cookie, uapi.IOMMUFD_PAGE_RESP_SUCCESS) == -EINVAL.errno
    for _ in range(8):  # the second page may fault too: map is done, answer success
        if not ffile.poll():
            break
        for r in wait_fault(ffile)[-1:]:
            assert respond(ffile, r.cookie, uapi.IOMMUFD_PAGE_RESP_SUCCESS) == RESP
    rec = dsa.wait(cr)
    assert rec.status == idxd.DSA_COMP_SUCCESS
    assert vmm.read(dst, SIZE) == vmm.read(src, SIZE)
    dsa.disable()
    ffile.close()


def test_fault_answered_invalid_completes_with_page_fault(vmm: Vmm) -> None:
    _, _, ffile, _, cr, dsa = setup(vmm)
    dsa.submit(SRC, DST, SIZE, CR, cr, bof=True)
    last = wait_fault(ffile)[-1]
    assert respond(ffile, last.cookie, uapi.IOMMUFD_PAGE_RESP_INVALID) == RESP
    rec = dsa.wait(cr)
    assert rec.status & 0x3F == idxd.DSA_COMP_PAGE_FAULT_IR
    assert rec.fault_addr == DST and rec.bytes_completed == 0
    dsa.disable()
    ffile.close()


def test_detach_answers_outstanding_faults(vmm: Vmm) -> None:
    _, _, ffile, _, cr, dsa = setup(vmm)
    dsa.submit(SRC, DST, SIZE, CR, cr, bof=True)
    wait_fault(ffile)  # read: now awaiting a response by cookie
    vmm.vfio.detach_pt()  # iommufd_auto_response_faults: Invalid Request
    assert not ffile.filep.fault.response and not ffile.filep.fault.deliver
    # The device got its response and gave up; on the blocking domain now, it
    # cannot even write its completion record.
    with pytest.raises(ETIMEDOUT):
        dsa.wait(cr)
    dsa.disable()
    ffile.close()


def test_bad_input(vmm: Vmm) -> None:
    fd = vmm.fd
    dev_id = vmm.vfio.bind_iommufd(fd.ctx)
    ioas = fd.ioas_alloc()
    fault_id, fault_fd = fd.fault_queue_alloc()
    ffile = UserFaultFd.of(vmm, fault_fd)
    # Flags: EOPNOTSUPP; fault_id of a non-fault object or an unknown one: ENOENT.
    assert raw(fd, uapi.IOMMU_FAULT_QUEUE_ALLOC, uapi.iommu_fault_alloc(flags=1))[0] == (
        -EOPNOTSUPP.errno
    )
    for bad in (ioas, 999):
        st = uapi.iommu_hwpt_alloc(
            flags=uapi.IOMMU_HWPT_FAULT_ID_VALID, dev_id=dev_id, pt_id=ioas, fault_id=bad
        )
        assert raw(fd, uapi.IOMMU_HWPT_ALLOC, st)[0] == -ENOENT.errno
    # Wrong sizes on read/write: ESPIPE; unknown cookie, bad code: EINVAL.
    assert ffile.read(REC - 1) == -ESPIPE.errno
    assert ffile.read(REC) == b""
    assert ffile.write(bytes(RESP + 1)) == -ESPIPE.errno
    assert respond(ffile, 77, uapi.IOMMUFD_PAGE_RESP_SUCCESS) == -EINVAL.errno
    assert respond(ffile, 1, 2) == -EINVAL.errno
    # The fault object is busy while its fd or a HWPT holds it.
    hwpt = fd.hwpt_alloc(dev_id, ioas, uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id)
    ffile.close()
    assert raw(fd, uapi.IOMMU_DESTROY, uapi.iommu_destroy(id=fault_id))[0] == -EBUSY.errno
    fd.destroy(hwpt)
    fd.destroy(fault_id)
    assert not fd.ctx.objects.get(fault_id)
    # A HWPT without FAULT_ID_VALID cannot be used as fault-capable; a plain attach works.
    assert isinstance(fd, Iommufd)


def _bound_only(vmm: Vmm, st: dict[str, int]) -> None:
    st["dev"] = vmm.vfio.bind_iommufd(vmm.fd.ctx)


def _fault_bound(vmm: Vmm, st: dict[str, int]) -> None:
    st["dev"] = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    st["ioas"] = vmm.fd.ioas_alloc()
    st["fault"] = vmm.fd.fault_queue_alloc()[0]


FAULT_SCENARIOS = {
    "fault_queue_alloc": (_bound_only, lambda v, s: v.fd.fault_queue_alloc()),
    "fault_hwpt_alloc": (
        _fault_bound,
        lambda v, s: v.fd.hwpt_alloc(
            s["dev"], s["ioas"], uapi.IOMMU_HWPT_FAULT_ID_VALID, s["fault"]
        ),
    ),
}


@pytest.mark.parametrize("scenario", sorted(FAULT_SCENARIOS))
def test_fail_nth_fault_allocations_leave_nothing(scenario: str) -> None:
    setup, op = FAULT_SCENARIOS[scenario]
    assert sweep(boot_vendor("vtd"), setup, op) > 0


@pytest.mark.parametrize("vendor", ["vtd", "smmuv3"])
def test_attaching_a_fault_capable_hwpt_enables_iopf_or_is_einval(vmm: Vmm, vendor: str) -> None:
    """Attaching a HWPT with a fault object enables IOPF on the device
    (``iommufd_fault_iopf_enable`` → ``iommu_dev_enable_feature``). VT-d turns on
    PRI for the DSA; arm-smmu-v3 in 6.12 takes IOPF only from stalling masters
    (``arm_smmu_master_iopf_supported``; PRI requests are denied by
    ``arm_smmu_handle_ppr``), so its ``arm_smmu_dev_enable_feature`` answers EINVAL
    and the attach fails with nothing changed; a plain HWPT still attaches."""
    fd = vmm.fd
    dev_id = vmm.vfio.bind_iommufd(fd.ctx)
    idev = fd.ctx.objects[dev_id]
    fault_id, fault_fd = fd.fault_queue_alloc()
    ioas = fd.ioas_alloc()
    hwpt = fd.hwpt_alloc(dev_id, ioas, uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id)
    if vendor == "vtd":
        assert vmm.vfio.attach_pt(hwpt) == hwpt
        assert idev.iopf_enabled == 1  # type: ignore[union-attr]
        assert pdev().pri_enabled
        vmm.vfio.detach_pt()
        assert idev.iopf_enabled == 0 and not pdev().pri_enabled  # type: ignore[union-attr]
    else:
        with pytest.raises(EINVAL):
            vmm.vfio.attach_pt(hwpt)
        assert not vmm.vfio.attached and idev.iopf_enabled == 0  # type: ignore[union-attr]
    obj = fd.ctx.objects[hwpt]
    assert obj is not None and obj.users == 1
    assert vmm.vfio.attach_pt(ioas) != hwpt  # a plain HWPT still attaches
    vmm.vfio.detach_pt()
    fault_fd_get(fault_fd).close()


def test_fault_records_travel_through_user_memory(vmm: Vmm) -> None:
    """``read``/``write`` on the fault fd copy records to and from the VMM's memory:
    a buffer it has not mapped (or may not write) is EFAULT and the group stays
    queued; a response from unmapped memory is EFAULT and answers nothing."""
    _, _, ffile, _, cr, dsa = setup(vmm)
    dsa.submit(SRC, DST, SIZE, CR, cr, bof=True)
    for _ in range(10_000):
        if ffile.poll():
            break
        udelay(1)
    ro = vmm.buffer(PAGE_SIZE, 0, prot=PROT_READ)
    hole = vmm.buffer(PAGE_SIZE)
    vmm.munmap(hole, PAGE_SIZE)
    with use_task(vmm.task):
        assert ffile.filep.read(hole, 4 * REC) == -EFAULT.errno
        assert ffile.filep.read(ro, 4 * REC) == -EFAULT.errno
        assert ffile.filep.write(hole, RESP) == -EFAULT.errno
    assert ffile.poll()  # still queued
    last = wait_fault(ffile)[-1]
    assert respond(ffile, last.cookie, uapi.IOMMUFD_PAGE_RESP_INVALID) == RESP
    assert dsa.wait(cr).status != idxd.DSA_COMP_SUCCESS
    dsa.disable()
    ffile.close()
