"""A user-space driver's DSA memmove through iommufd, on VT-d and SMMUv3: the DMA
goes through the device's IOAS, keeps working across a HWPT replace (landing in the
new IOAS's memory) and stops at detach.

The evidence is the bytes in RAM and the DSA's own completion record."""

from __future__ import annotations

import pytest

from iommulab.vfio_dsa import VfioDsa
from kernel.errno import ETIMEDOUT
from kernel.uapi.idxd import DSA_COMP_SUCCESS
from tests.kernel.iommufd.conftest import Vmm

SIZE = 0x4000
SRC, DST, CR = 0x10_0000, 0x20_0000, 0x30_0000


def guest(vmm: Vmm, ioas: int, seed: int) -> tuple[int, int, int]:
    """Guest memory mapped at fixed IOVAs: source (filled), destination, record."""
    src, dst, cr = vmm.buffer(SIZE, seed), vmm.buffer(SIZE), vmm.buffer(0x1000)
    vmm.fd.ioas_map(ioas, src, SIZE, iova=SRC)
    vmm.fd.ioas_map(ioas, dst, SIZE, iova=DST)
    vmm.fd.ioas_map(ioas, cr, 0x1000, iova=CR)
    return src, dst, cr


def test_memmove_through_the_ioas_and_across_a_replace(vmm: Vmm) -> None:
    fd = vmm.fd
    dev_id = vmm.vfio.bind_iommufd(fd.ctx)
    ioas1, ioas2 = fd.ioas_alloc(), fd.ioas_alloc()
    src1, dst1, cr1 = guest(vmm, ioas1, 1)
    src2, dst2, cr2 = guest(vmm, ioas2, 7)
    hwpt1 = vmm.vfio.attach_pt(ioas1)
    dsa = VfioDsa.open(vmm.vfio, vmm.task)
    dsa.enable()
    assert dsa.memmove(SRC, DST, SIZE, CR, cr1).status == DSA_COMP_SUCCESS
    assert vmm.read(dst1, SIZE) == vmm.read(src1, SIZE)

    hwpt2 = fd.hwpt_alloc(dev_id, ioas2)
    assert vmm.vfio.attach_pt(hwpt2) == hwpt2  # attached already: a replace
    assert hwpt1 not in fd.ctx.objects  # the auto domain went with its last device
    assert dsa.memmove(SRC, DST, SIZE, CR, cr2).status == DSA_COMP_SUCCESS
    assert vmm.read(dst2, SIZE) == vmm.read(src2, SIZE) != vmm.read(dst1, SIZE)
    dsa.disable()


def test_detached_device_dma_is_blocked(vmm: Vmm) -> None:
    vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    _, dst, cr = guest(vmm, ioas, 3)
    vmm.vfio.attach_pt(ioas)
    dsa = VfioDsa.open(vmm.vfio, vmm.task)
    dsa.enable()
    vmm.vfio.detach_pt()
    # The group is back on the blocking domain: the DSA cannot even write its record.
    with pytest.raises(ETIMEDOUT):
        dsa.memmove(SRC, DST, SIZE, CR, cr)
    assert not any(vmm.read(dst, SIZE))
    dsa.disable()
