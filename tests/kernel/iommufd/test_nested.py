"""Nested translation through iommufd on both vendors, as a VMM runs it for a guest
that owns its device's stage-1 table (``iommufd.viommu=on``: 6.13's vIOMMU on
SMMUv3; VT-d nests on its parent HWPT as in 6.12).

The guest writes its stage-1 structures into its memory (see
:mod:`tests.kernel.iommufd.nested_guest`); the DSA copies with stage-1 addresses,
which the IOMMU model translates through both stages. The evidence: the bytes that
arrive, the model's stale-use count, and the ioctls' errnos.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from kernel.errno import EOPNOTSUPP
from kernel.mm import PAGE_SIZE
from kernel.uapi import iommufd as uapi
from kernel.uapi.idxd import DSA_COMP_SUCCESS
from tests.kernel.iommufd.conftest import Vmm
from tests.kernel.iommufd.helpers import raw
from tests.kernel.iommufd.nested_guest import (
    ALT,
    DST,
    IOVA_SRC,
    SRC,
    NestedGuest,
    boot_nested,
    stale_uses,
)

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations, KernelChecks


@pytest.fixture(params=["vtd", "smmuv3"])
def nvendor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def nvmm(nvendor: str, iommulab_checks: KernelChecks) -> Iterator[Vmm]:
    k = iommulab_checks.track(boot_nested(nvendor))
    with k:
        v = Vmm.start(k)
        yield v
        v.close()


def test_a_dma_through_a_user_owned_stage_1_table_and_the_ioas(nvmm: Vmm, nvendor: str) -> None:
    """Two pages copied with stage-1 addresses land where the guest's table and the
    IOAS put them, and nothing after them is touched."""
    g = NestedGuest(nvmm, nvendor)
    dsa = g.start()
    assert g.move(dsa, 2 * PAGE_SIZE) == DSA_COMP_SUCCESS
    assert g.read(DST, 2 * PAGE_SIZE) == g.read(SRC, 2 * PAGE_SIZE)
    assert g.read(DST + 2 * PAGE_SIZE, 16) == bytes(16)
    assert stale_uses(nvmm) == 0
    dsa.disable()


def test_a_guest_remap_needs_the_user_invalidation(
    nvmm: Vmm, nvendor: str, iommulab_expect: Expectations
) -> None:
    """The guest points its source page elsewhere and does not invalidate: the DSA
    still reads the old page through the cached nested translation, and the model
    reports the stale use."""
    iommulab_expect.stale()
    g = NestedGuest(nvmm, nvendor)
    dsa = g.start()
    assert g.move(dsa) == DSA_COMP_SUCCESS
    g.remap(IOVA_SRC, ALT)
    assert g.move(dsa) == DSA_COMP_SUCCESS
    assert g.read(DST, PAGE_SIZE) == g.read(SRC, PAGE_SIZE) != g.read(ALT, PAGE_SIZE)
    assert stale_uses(nvmm) >= 1
    dsa.disable()


def test_the_user_invalidation_is_sufficient(nvmm: Vmm, nvendor: str) -> None:
    """The same remap followed by the guest's invalidation of that one page
    (TLBI_NH_VA to the vIOMMU on SMMUv3, a stage-1 entry to the nested HWPT on
    VT-d): the DSA reads the new page and nothing stale is used."""
    g = NestedGuest(nvmm, nvendor)
    dsa = g.start()
    assert g.move(dsa) == DSA_COMP_SUCCESS
    g.remap(IOVA_SRC, ALT)
    assert g.invalidate(IOVA_SRC) == 1
    assert g.move(dsa) == DSA_COMP_SUCCESS
    assert g.read(DST, PAGE_SIZE) == g.read(ALT, PAGE_SIZE) != g.read(SRC, PAGE_SIZE)
    assert stale_uses(nvmm) == 0
    dsa.disable()


def test_a_second_stage_unmap_is_flushed_through_the_parent(nvmm: Vmm, nvendor: str) -> None:
    """The VMM unmaps the guest's source page from the IOAS: the parent's flush also
    removes the nested translations (no stale use) and the next copy stops at the
    source."""
    g = NestedGuest(nvmm, nvendor)
    dsa = g.start()
    assert g.move(dsa) == DSA_COMP_SUCCESS
    g.unmap_guest_page(SRC)
    assert g.move(dsa) != DSA_COMP_SUCCESS
    assert g.read(DST, PAGE_SIZE) == g.read(SRC, PAGE_SIZE)  # from the first copy
    assert stale_uses(nvmm) == 0
    dsa.disable()


def test_the_parent_and_the_viommu_cannot_go_before_what_uses_them(nvmm: Vmm, nvendor: str) -> None:
    """IOMMU_DESTROY of the parent HWPT is EBUSY while a nested HWPT (VT-d) or a
    vIOMMU (SMMUv3) uses it, of a vIOMMU while a nested HWPT or a vDEVICE uses
    it; torn down in order, everything goes."""
    g = NestedGuest(nvmm, nvendor)
    hwpt = g.nested()
    ctx = nvmm.fd.ctx

    def destroy(oid: int) -> int:
        return raw(nvmm.fd, uapi.IOMMU_DESTROY, uapi.iommu_destroy(id=oid))[0]

    busy = -16  # EBUSY
    assert destroy(g.parent) == busy
    if g.viommu:
        assert destroy(g.viommu) == busy
        assert destroy(hwpt) == 0
        assert destroy(g.viommu) == busy  # the vDEVICE
        assert destroy(g.parent) == busy
        assert destroy(g.vdev) == 0
        assert destroy(g.viommu) == 0
    else:
        assert destroy(hwpt) == 0
    assert destroy(g.parent) == 0
    assert sorted(ctx.objects) == [g.dev_id, g.ioas]


def test_viommu_alloc_is_eopnotsupp_on_vtd(iommulab_checks: KernelChecks) -> None:
    """6.13's VT-d has no ``viommu_alloc``: IOMMU_VIOMMU_ALLOC of the SMMUv3 type
    is EOPNOTSUPP, and of the default type too (refused before the driver)."""
    k = iommulab_checks.track(boot_nested("vtd"))
    with k:
        vmm = Vmm.start(k)
        g = NestedGuest(vmm, "vtd")
        before = sorted(vmm.fd.ctx.objects)
        for vtype in (uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, uapi.IOMMU_VIOMMU_TYPE_DEFAULT):
            with pytest.raises(EOPNOTSUPP):
                vmm.fd.viommu_alloc(g.dev_id, g.parent, vtype)
        assert sorted(vmm.fd.ctx.objects) == before
        vmm.close()
