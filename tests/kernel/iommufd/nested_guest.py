"""A guest that owns its device's stage-1 table, for the nested tests of both vendors.

The guest's memory is a user buffer mapped at IOVA 0 of an IOAS (IOVA = the
guest-physical / intermediate-physical address) through a NEST_PARENT HWPT. The
guest writes its stage-1 structures there as its kernel would: on VT-d an x86-64
first-stage table (the one of ``test_nested_vtd``), on SMMUv3 an LPAE stage-1 table
and a context descriptor, named to the host by a vSTE. Both map 16 pages at each
of ``IOVA_SRC``, ``IOVA_DST`` and ``IOVA_CR`` to ``SRC``, ``DST`` and ``CR``.

Kernels boot with ``iommufd.viommu=on`` (Linux 6.13's vIOMMU objects); VT-d needs
ECAP.NEST, SMMUv3 IDR0.S2P.
"""

from __future__ import annotations

import copy

from hw.machine import build_machine
from iommulab.presets import PRESETS
from iommulab.vfio_dsa import VfioDsa
from kernel.boot import Kernel, boot
from kernel.mm import PAGE_SIZE
from kernel.uapi import iommufd as uapi
from tests.kernel.iommufd.conftest import VENDORS, Vmm
from tests.kernel.iommufd.helpers import user_phys
from tests.kernel.iommufd.test_nested_vtd import (
    ALT,
    CR,
    DST,
    GUEST,
    IOVA_CR,
    IOVA_DST,
    IOVA_SRC,
    PML4,
    S1,
    SRC,
    build_guest,
    s1_map,
)

__all__ = ["ALT", "CR", "DST", "GUEST", "IOVA_CR", "IOVA_DST", "IOVA_SRC", "S1", "SRC"]

VIOMMU_ON = "iommufd.viommu=on"
NEST_UNITS: dict[str, dict[str, object]] = {"vtd": {"nest": True}, "smmuv3": {"s2p": True}}

# SMMUv3 guest structures (IPAs) and descriptor bits (VMSAv8-64, 4 KiB granule)
L0, L1, L2, L3 = 0x1000, 0x2000, 0x3000, 0x4000
CD = 0x5000
ASID = 0x42
VSID = 0x2A
"""The StreamID the guest's vSMMU gives the DSA."""
LPAE_TABLE = 0b11
LPAE_PAGE = 0b11 | 1 << 11 | 1 << 10 | 3 << 8 | 1 << 2 | 1 << 6
"""Page | nG | AF | inner shareable | AttrIndx 1 (write-back) | AP[1] (EL0 access)."""
CD0 = (
    16  # T0SZ: 48-bit VA
    | 1 << 8  # IRGN0 WBWA
    | 1 << 10  # ORGN0 WBWA
    | 3 << 12  # SH0 inner shareable
    | 1 << 30  # EPD1
    | 1 << 31  # V
    | 5 << 32  # IPS 48 bits
    | 1 << 41  # AA64
    | 1 << 45  # R
    | 1 << 46  # A
    | 1 << 47  # ASET
)
STE0_S1 = 1 | 5 << 1
"""vSTE word 0: V, Config = stage-1 translate (S1FMT linear, S1CDMax 0)."""
STE1_S1 = 1 << 2 | 1 << 4 | 3 << 6
"""vSTE word 1: S1CIR/S1COR write-back, S1CSH inner shareable."""
CMDQ_OP_TLBI_NH_VA = 0x12
CMDQ_OP_TLBI_NH_ASID = 0x11
CMDQ_OP_CFGI_CD = 0x05


def boot_nested(
    vendor: str, config: dict[str, object] | None = None, cmdline: str = VIOMMU_ON
) -> Kernel:
    """The vendor's preset with only its IOMMU driver, the unit configured for
    nesting (or ``config``), booted with ``cmdline``."""
    preset, driver = VENDORS[vendor]
    spec = copy.deepcopy(PRESETS[preset])
    spec["iommus"][0]["config"] = NEST_UNITS[vendor] if config is None else config
    return boot(build_machine(spec), cmdline, builtins=(driver,), entry_points=False)


def q(vmm: Vmm, guest: int, gpa: int, index: int, value: int) -> None:
    """Store descriptor ``index`` of the table at guest-physical ``gpa``."""
    vmm.write(guest + gpa + 8 * index, value.to_bytes(8, "little"))


def lpae_map(vmm: Vmm, guest: int, iova: int, gpa: int, bits: int = LPAE_PAGE) -> None:
    """The SMMUv3 guest maps ``iova`` to ``gpa`` in its level-3 table."""
    q(vmm, guest, L3, (iova >> 12) & 0x1FF, gpa | bits if bits else 0)


def build_lpae_guest(vmm: Vmm, guest: int) -> None:
    """The SMMUv3 guest: the data of :func:`build_guest`, an LPAE stage-1 table
    (L0[0] -> L1[1] -> L2[0] -> L3) mapping the same pages, and CD 0 at ``CD``."""
    build_guest(vmm, guest)
    for table in (L0, L1, L2, L3):
        vmm.write(guest + table, bytes(PAGE_SIZE))
    q(vmm, guest, L0, 0, L1 | LPAE_TABLE)
    q(vmm, guest, L1, 1, L2 | LPAE_TABLE)
    q(vmm, guest, L2, 0, L3 | LPAE_TABLE)
    for n in range(16):
        for iova, gpa in ((IOVA_SRC, SRC), (IOVA_DST, DST), (IOVA_CR, CR)):
            lpae_map(vmm, guest, iova + n * PAGE_SIZE, gpa + n * PAGE_SIZE)
    write_cd(vmm, guest, L0)


def write_cd(vmm: Vmm, guest: int, ttb0: int, asid: int = ASID) -> None:
    q(vmm, guest, CD, 0, CD0 | asid << 48)
    q(vmm, guest, CD, 1, ttb0)
    q(vmm, guest, CD, 2, 0)
    q(vmm, guest, CD, 3, 0xFF << 8 | 0x44)  # MAIR: attr 0 non-cacheable, attr 1 write-back


def vste(ste0: int = STE0_S1 | CD, ste1: int = STE1_S1) -> uapi.iommu_hwpt_arm_smmuv3:
    return uapi.iommu_hwpt_arm_smmuv3(ste0=ste0, ste1=ste1)


def tlbi_nh_va(
    iova: int, asid: int = ASID, vmid: int = 0
) -> uapi.iommu_viommu_arm_smmuv3_invalidate:
    """TLBI_NH_VA of one page (Leaf=1); the kernel puts its own VMID in."""
    return uapi.iommu_viommu_arm_smmuv3_invalidate(
        cmd0=CMDQ_OP_TLBI_NH_VA | vmid << 32 | asid << 48, cmd1=iova | 1
    )


def smmu_cmd(cmd0: int, cmd1: int = 0) -> uapi.iommu_viommu_arm_smmuv3_invalidate:
    return uapi.iommu_viommu_arm_smmuv3_invalidate(cmd0=cmd0, cmd1=cmd1)


class NestedGuest:
    """The VMM's objects for one guest: device id, IOAS, parent HWPT, guest memory,
    a scratch user page; on SMMUv3 also the vIOMMU and the vDEVICE."""

    def __init__(self, vmm: Vmm, vendor: str) -> None:
        self.vmm = vmm
        self.vendor = vendor
        fd = vmm.fd
        self.dev_id = vmm.vfio.bind_iommufd(fd.ctx)
        self.ioas = fd.ioas_alloc()
        self.mem = vmm.buffer(GUEST)
        if vendor == "smmuv3":
            build_lpae_guest(vmm, self.mem)
        else:
            build_guest(vmm, self.mem)
        fd.ioas_map(self.ioas, self.mem, GUEST, iova=0)
        self.parent = fd.hwpt_alloc(self.dev_id, self.ioas, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
        self.scratch = vmm.buffer(PAGE_SIZE)
        self.viommu = self.vdev = 0
        self.hwpt = 0
        if vendor == "smmuv3":
            self.viommu = fd.viommu_alloc(self.dev_id, self.parent)
            self.vdev = fd.vdevice_alloc(self.viommu, self.dev_id, VSID)

    def nested(self, data: uapi.UapiStruct | None = None) -> int:
        """A nested HWPT: the vSTE on the vIOMMU (SMMUv3) or the stage-1 config on
        the parent (VT-d)."""
        if self.vendor == "smmuv3":
            return self.vmm.fd.hwpt_alloc(
                self.dev_id,
                self.viommu,
                data_type=uapi.IOMMU_HWPT_DATA_ARM_SMMUV3,
                data=data or vste(),
                data_uptr=self.scratch,
            )
        return self.vmm.fd.hwpt_alloc(
            self.dev_id,
            self.parent,
            data_type=uapi.IOMMU_HWPT_DATA_VTD_S1,
            data=data or uapi.iommu_hwpt_vtd_s1(pgtbl_addr=PML4, addr_width=48),
            data_uptr=self.scratch,
        )

    def remap(self, iova: int, gpa: int) -> None:
        """The guest points ``iova`` at ``gpa`` in its stage-1 table."""
        if self.vendor == "smmuv3":
            lpae_map(self.vmm, self.mem, iova, gpa)
        else:
            s1_map(self.vmm, self.mem, iova, gpa)

    def invalidate(self, iova: int) -> int:
        """The guest's invalidation of one page: TLBI_NH_VA to the vIOMMU (SMMUv3),
        a stage-1 invalidation entry to the nested HWPT (VT-d)."""
        fd = self.vmm.fd
        if self.vendor == "smmuv3":
            data = uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3
            return fd.hwpt_invalidate(self.viommu, data, [tlbi_nh_va(iova)], self.scratch)
        entry = uapi.iommu_hwpt_vtd_s1_invalidate(addr=iova, npages=1)
        return fd.hwpt_invalidate(
            self.hwpt, uapi.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, [entry], self.scratch
        )

    def attach(self, data: uapi.UapiStruct | None = None) -> None:
        self.hwpt = self.nested(data)
        self.vmm.vfio.attach_pt(self.hwpt)

    def start(self) -> VfioDsa:
        self.attach()
        dsa = VfioDsa.open(self.vmm.vfio, self.vmm.task)
        dsa.enable()
        return dsa

    def move(self, dsa: VfioDsa, size: int = PAGE_SIZE) -> int:
        return dsa.memmove(IOVA_SRC, IOVA_DST, size, IOVA_CR, self.mem + CR).status

    def read(self, gpa: int, size: int) -> bytes:
        return self.vmm.read(self.mem + gpa, size)

    def phys(self, gpa: int) -> int:
        """The host-physical address of guest-physical ``gpa`` (the VMM's page)."""
        return user_phys(self.vmm.task, self.mem + gpa)

    def unmap_guest_page(self, gpa: int) -> None:
        """The VMM takes guest page ``gpa`` out of the IOAS (a stage-2 change)."""
        fd = self.vmm.fd
        fd.ioas_unmap(self.ioas, 0, GUEST)
        if gpa:
            fd.ioas_map(self.ioas, self.mem, gpa, iova=0)
        rest = gpa + PAGE_SIZE
        fd.ioas_map(self.ioas, self.mem + rest, GUEST - rest, iova=rest)


def unit_of(vmm: Vmm) -> object:
    return next(iter(vmm.kernel.machine.iommus.values()))  # type: ignore[attr-defined]


def stale_uses(vmm: Vmm) -> int:
    return int(unit_of(vmm).stats.stale_uses)  # type: ignore[attr-defined]
