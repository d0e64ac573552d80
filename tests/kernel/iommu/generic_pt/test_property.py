"""Random map/unmap sequences on every format, checked against a dict of the
mappings the test asked for (never against the library's own walk)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.boot import Kernel
from kernel.errno import EADDRINUSE
from kernel.iommu.iommu_h import IOMMU_READ, IOMMU_WRITE, IommuIotlbGather
from tests.kernel.iommu.generic_pt.tables import FORMATS, SZ_2M, SZ_4K, make_table

RW = IOMMU_READ | IOMMU_WRITE
BASE = 0x4000_0000  # 1 GiB; a slot is 2 MiB of IOVA, aligned
PHYS = 0x1_0000_0000

# ("map", slot, first 4 KiB page in the slot or -1 for one 2 MiB leaf, pages, phys slot)
MAP = st.tuples(
    st.just("map"),
    st.integers(0, 5),
    st.integers(-1, 509),
    st.integers(1, 3),
    st.integers(0, 7),
)
UNMAP = st.tuples(st.just("unmap"), st.integers(0, 30), st.just(0), st.just(0), st.just(0))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(st.one_of(MAP, UNMAP), max_size=14))
def test_translations_match_what_was_mapped(
    k: Kernel, fmt: str, ops: list[tuple[str, int, int, int, int]]
) -> None:
    t, _, fl = make_table(fmt)
    ref: dict[int, int] = {}  # 4 KiB page IOVA -> physical address
    live: list[tuple[int, int]] = []  # (iova, size) as mapped
    gone: set[int] = set()
    for kind, slot, page, count, pslot in ops:
        if kind == "map":
            iova = BASE + slot * SZ_2M + (0 if page < 0 else page * SZ_4K)
            size = SZ_2M if page < 0 else count * SZ_4K
            phys = PHYS + pslot * SZ_2M + (0 if page < 0 else page * SZ_4K)
            pages = range(iova, iova + size, SZ_4K)
            if any(p in ref for p in pages):
                with pytest.raises(EADDRINUSE):
                    t.map_pages(iova, phys, size, 1, RW, 0)
            else:
                t.map_pages(iova, phys, size, 1, RW, 0)
                ref.update({p: phys + p - iova for p in pages})
                gone.difference_update(pages)
                live.append((iova, size))
        elif live:
            iova, size = live.pop(slot % len(live))
            gather = IommuIotlbGather()
            assert t.unmap_pages(iova, size, 1, gather) == size
            fl.sync(gather)
            for p in range(iova, iova + size, SZ_4K):
                del ref[p]
                gone.add(p)
        for iova, size in live:
            for p in (iova, iova + size // SZ_4K // 2 * SZ_4K, iova + size - SZ_4K):
                assert t.iova_to_phys(p + 0x123) == ref[p] + 0x123
        for p in gone:
            assert t.iova_to_phys(p) == 0
    for iova, size in live:
        gather = IommuIotlbGather()
        assert t.unmap_pages(iova, size, 1, gather) == size
        fl.sync(gather)
    assert all(t.iova_to_phys(p) == 0 for p in ref)
    t.deinit()
