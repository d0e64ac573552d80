"""HW page tables and device attachment (hw_pagetable.c, device.c): IOMMU_HWPT_ALLOC
and its refusals, IOMMU_GET_HW_INFO (VT-d's CAP/ECAP as the unit reports them over
MMIO; SMMUv3 in 6.12 has no vendor data), the kernel attach API's rules, binding
rules, and a PASID attachment of a HWPT carrying the DSA's PASID-tagged DMA."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from hw.machine import build_machine
from iommulab.vfio_dsa import VfioDsa
from kernel.boot import boot
from kernel.errno import EBUSY, EINVAL, ENOENT, EOPNOTSUPP, EPERM
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.pasid import iommu_get_domain_for_dev_pasid
from kernel.iommufd.device import (
    IommufdDevice,
    iommufd_device_attach,
    iommufd_device_replace,
)
from kernel.iommufd.uapi_helpers import Iommufd
from kernel.mm import PAGE_SIZE
from kernel.sched import do_exit, user_process_create
from kernel.uapi import iommufd as uapi
from kernel.uapi.idxd import DSA_COMP_SUCCESS
from kernel.vfio.device_cdev import vfio_device_fops_cdev_open
from tests.kernel.iommufd.conftest import Vmm, pdev
from tests.kernel.iommufd.helpers import domain_of, maps_to, raw

if TYPE_CHECKING:
    from iommulab.pytest_plugin import KernelChecks


def test_hwpt_alloc_copies_the_ioas_and_attaches(vmm: Vmm) -> None:
    fd = vmm.fd
    dev_id = vmm.vfio.bind_iommufd(fd.ctx)
    ioas = fd.ioas_alloc()
    buf = vmm.buffer(8 * PAGE_SIZE)
    fd.ioas_map(ioas, buf, 8 * PAGE_SIZE, iova=0x80_0000)
    hwpt = fd.hwpt_alloc(dev_id, ioas)
    dom = domain_of(fd.ctx, hwpt)
    assert maps_to(vmm, dom, 0x80_0000, buf, 8 * PAGE_SIZE)
    assert vmm.vfio.attach_pt(hwpt) == hwpt
    assert iommu_get_domain_for_dev(pdev()) is dom
    vmm.vfio.detach_pt()
    assert iommu_get_domain_for_dev(pdev()) is not dom
    fd.destroy(hwpt)


@pytest.mark.parametrize(
    ("what", "errno"),
    [
        ("bad_dev", ENOENT),
        ("bad_pt", ENOENT),
        ("pt_is_device", EINVAL),
        ("reserved", EOPNOTSUPP),
        ("unknown_flag", EOPNOTSUPP),
        ("data_len_without_type", EINVAL),
        ("type_without_data", EINVAL),
        ("dirty_tracking", EOPNOTSUPP),
        ("nest_parent", EOPNOTSUPP),
        ("fault_id", ENOENT),
    ],
)
def test_bad_hwpt_alloc(vmm: Vmm, what: str, errno: type[Exception]) -> None:
    dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    cmd = uapi.iommu_hwpt_alloc(dev_id=dev_id, pt_id=ioas)
    match what:
        case "bad_dev":
            cmd.dev_id = 50
        case "bad_pt":
            cmd.pt_id = 50
        case "pt_is_device":
            cmd.pt_id = dev_id
        case "reserved":
            cmd.reserved = 1
        case "unknown_flag":
            cmd.flags = 1 << 7
        case "data_len_without_type":
            cmd.data_len = 8
        case "type_without_data":
            cmd.data_type = uapi.IOMMU_HWPT_DATA_VTD_S1
        case "dirty_tracking":
            cmd.flags = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
        case "nest_parent":  # neither model offers nesting (VT-d ECAP.NEST=0; SMMUv3 6.12)
            cmd.flags = uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
        case "fault_id":  # no fault queue objects exist
            cmd.flags, cmd.fault_id = uapi.IOMMU_HWPT_FAULT_ID_VALID, 9
    assert raw(vmm.fd, uapi.IOMMU_HWPT_ALLOC, cmd)[0] == -errno.errno  # type: ignore[attr-defined]
    assert sorted(vmm.fd.ctx.objects) == [dev_id, ioas]
    assert vmm.fd.ctx.objects[ioas].users == 1  # type: ignore[union-attr]


def test_a_nested_hwpt_needs_a_nest_parent_and_a_vendor_that_nests(vmm: Vmm) -> None:
    dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    parent = vmm.fd.hwpt_alloc(dev_id, ioas)
    data = vmm.buffer(PAGE_SIZE)
    cmd = uapi.iommu_hwpt_alloc(
        dev_id=dev_id,
        pt_id=parent,
        data_type=uapi.IOMMU_HWPT_DATA_VTD_S1,
        data_len=uapi.iommu_hwpt_vtd_s1.SIZE,
        data_uptr=data,
    )
    assert raw(vmm.fd, uapi.IOMMU_HWPT_ALLOC, cmd)[0] == -EINVAL.errno  # not a parent
    cmd.flags = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
    assert raw(vmm.fd, uapi.IOMMU_HWPT_ALLOC, cmd)[0] == -EOPNOTSUPP.errno
    assert sorted(vmm.fd.ctx.objects) == [dev_id, ioas, parent]


def test_hw_info(vmm: Vmm, vendor: str) -> None:
    dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    data = vmm.buffer(PAGE_SIZE)

    vmm.write(data, b"\xee" * 64)
    cmd = uapi.iommu_hw_info(dev_id=dev_id, data_len=64, data_uptr=data)
    rc, out = raw(vmm.fd, uapi.IOMMU_GET_HW_INFO, cmd)
    info = uapi.iommu_hw_info.from_bytes(out)
    assert rc == 0 and info.out_max_pasid_log2 == 20
    if vendor == "vtd":
        unit = next(iter(vmm.kernel.machine.iommus.values()))  # type: ignore[attr-defined]
        base = unit.base
        mmio = vmm.kernel.machine.mmio_read  # type: ignore[attr-defined]
        vtd = uapi.iommu_hw_info_vtd.from_bytes(vmm.read(data, uapi.iommu_hw_info_vtd.SIZE))
        assert info.out_data_type == uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD
        assert info.data_len == uapi.iommu_hw_info_vtd.SIZE
        assert (vtd.cap_reg, vtd.ecap_reg) == (mmio(base + 0x08, 8), mmio(base + 0x10, 8))
        assert vtd.flags == uapi.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17
        assert vmm.read(data + 24, 40) == bytes(40)  # the rest of the buffer zeroed
    else:
        assert (info.out_data_type, info.data_len) == (uapi.IOMMU_HW_INFO_TYPE_NONE, 0)
        assert vmm.read(data, 64) == bytes(64)
    assert raw(vmm.fd, uapi.IOMMU_GET_HW_INFO, uapi.iommu_hw_info(dev_id=77))[0] == (-ENOENT.errno)


def test_attach_rules_of_the_kernel_api(vmm: Vmm) -> None:
    fd = vmm.fd
    dev_id = vmm.vfio.bind_iommufd(fd.ctx)
    idev = fd.ctx.objects[dev_id]
    assert isinstance(idev, IommufdDevice)
    ioas = fd.ioas_alloc()
    a, b = fd.hwpt_alloc(dev_id, ioas), fd.hwpt_alloc(dev_id, ioas)
    with pytest.raises(EINVAL):  # replace needs an attachment
        iommufd_device_replace(idev, a)
    assert iommufd_device_attach(idev, a) == a
    with pytest.raises(EINVAL):  # attaching elsewhere while attached
        iommufd_device_attach(idev, b)
    with pytest.raises(EINVAL):  # an IOAS id is fine, a device id is not
        iommufd_device_replace(idev, dev_id)
    assert iommufd_device_replace(idev, b) == b
    assert iommu_get_domain_for_dev(pdev()) is domain_of(fd.ctx, b)
    fd.destroy(a)  # no longer attached
    with pytest.raises(ENOENT):
        vmm.vfio.attach_pt(a)


def test_binding_rules(vmm: Vmm) -> None:
    vmm.vfio.bind_iommufd(vmm.fd.ctx)
    with pytest.raises(EINVAL):
        vmm.vfio.bind_iommufd(vmm.fd.ctx)
    other = Iommufd.open(user_process_create("other"))
    second = vfio_device_fops_cdev_open(pdev())
    with pytest.raises(EPERM):  # the group belongs to the first iommufd
        second.bind_iommufd(other.ctx)
    assert not other.ctx.objects
    other.close()
    do_exit(other.task)
    unbound = vfio_device_fops_cdev_open(pdev())
    with pytest.raises(EINVAL):
        unbound.attach_pt(1)


def test_a_device_with_a_kernel_driver_cannot_be_opened(vmm: Vmm) -> None:
    from kernel.device import DeviceDriver

    dev = pdev()
    dev.driver = DeviceDriver("idxd")  # as if idxd were bound
    try:
        with pytest.raises(EBUSY):
            vfio_device_fops_cdev_open(dev)
    finally:
        dev.driver = None


PASID = 5
SRC, DST, CR = 0x10_0000, 0x20_0000, 0x30_0000


def test_pasid_attach_of_a_hwpt_carries_pasid_tagged_dma(vmm: Vmm) -> None:
    fd = vmm.fd
    dev_id = vmm.vfio.bind_iommufd(fd.ctx)
    rid_ioas, pasid_ioas = fd.ioas_alloc(), fd.ioas_alloc()
    src, dst, cr = vmm.buffer(PAGE_SIZE, 9), vmm.buffer(PAGE_SIZE), vmm.buffer(PAGE_SIZE)
    for iova, buf in ((SRC, src), (DST, dst), (CR, cr)):
        fd.ioas_map(pasid_ioas, buf, PAGE_SIZE, iova=iova)
    vmm.vfio.attach_pt(rid_ioas)  # the RID's IOAS maps nothing
    plain = fd.hwpt_alloc(dev_id, pasid_ioas)
    with pytest.raises(EINVAL):  # not allocated for PASID use
        vmm.vfio.attach_pt(plain, pasid=PASID)
    hwpt = fd.hwpt_alloc(dev_id, pasid_ioas, flags=uapi.IOMMU_HWPT_ALLOC_PASID)
    assert vmm.vfio.attach_pt(hwpt, pasid=PASID) == hwpt
    assert iommu_get_domain_for_dev_pasid(pdev(), PASID) is domain_of(fd.ctx, hwpt)
    with pytest.raises(EBUSY):
        vmm.vfio.attach_pt(hwpt, pasid=PASID)
    dsa = VfioDsa.open(vmm.vfio, vmm.task)
    dsa.enable(pasid=PASID)
    assert dsa.memmove(SRC, DST, PAGE_SIZE, CR, cr).status == DSA_COMP_SUCCESS
    assert vmm.read(dst, PAGE_SIZE) == vmm.read(src, PAGE_SIZE)
    dsa.disable()
    with pytest.raises(EBUSY):  # attached to a PASID
        fd.destroy(hwpt)
    vmm.vfio.detach_pt(pasid=PASID)
    assert iommu_get_domain_for_dev_pasid(pdev(), PASID) is None
    with pytest.raises(EINVAL):
        vmm.vfio.detach_pt(pasid=PASID)
    fd.destroy(hwpt)


TWO_SMMUS = {
    "name": "two-smmus",
    "ram": "256M",
    "iommus": [
        {"kind": "smmuv3", "name": "smmu0", "scope": ["0000:00:02.0"]},
        {"kind": "smmuv3", "name": "smmu1", "scope": ["0000:00:04.0"]},
    ],
    "devices": [{"kind": "dsa", "bdf": "0000:00:02.0"}, {"kind": "dsa", "bdf": "0000:00:04.0"}],
}


def test_a_hwpt_of_another_iommu_instance_is_refused(iommulab_checks: KernelChecks) -> None:
    """Two DSAs behind two SMMUv3 instances: a HWPT made for the first cannot be
    attached to the second (EINVAL, from the driver), and attaching the second to the
    same IOAS skips the incompatible auto domain and makes one of its own."""
    k = iommulab_checks.track(
        boot(build_machine(TWO_SMMUS), "", builtins=("drivers.arm_smmu_v3",), entry_points=False)
    )
    with k:
        fd = Iommufd.open(user_process_create("vmm"))
        a = vfio_device_fops_cdev_open(pdev("0000:00:02.0"))
        b = vfio_device_fops_cdev_open(pdev("0000:00:04.0"))
        dev_a, dev_b = a.bind_iommufd(fd.ctx), b.bind_iommufd(fd.ctx)
        ioas = fd.ioas_alloc()
        hwpt_a = a.attach_pt(ioas)
        with pytest.raises(EINVAL):
            b.attach_pt(hwpt_a)
        assert not b.attached and fd.ctx.objects[hwpt_a].users == 2  # type: ignore[union-attr]
        hwpt_b = b.attach_pt(ioas)
        assert hwpt_b not in (hwpt_a, dev_a, dev_b)
        assert iommu_get_domain_for_dev(pdev("0000:00:04.0")) is domain_of(fd.ctx, hwpt_b)
        a.close()
        b.close()
        fd.close()
        do_exit(fd.task)
