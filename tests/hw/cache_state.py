"""What a translation cache and its dependency tracker hold, keyed so that two
machines built the same way compare equal: the reference comparisons of the fast-path
tests (VT-d and SMMUv3 fill-ahead, the VT-d one-page fill, the SMMUv3 straight miss)
compare a unit's state with a reference unit's through these."""

from __future__ import annotations

from hw.pagewatch import SlotTracker
from hw.translation import TagCache

TlbState = dict[tuple[object, int, int], tuple[object, ...]]


def tlb_state(cache: TagCache, src: bool = False) -> TlbState:
    """Every entry by (tag, page shift, page number): frame, rights, dirty, leaf entry
    address, granules read (in any order), suspect, and with ``src`` its source
    (comparable across machines only where the vendor's sources are values)."""
    return {
        (key, shift, vpn): (
            e.phys,
            e.perms,
            e.dirty,
            e.pte_addr,
            sorted(e.slots),
            e.suspect,
            *((e.src,) if src else ()),
        )
        for key, t in cache.tables.items()
        for shift, d in zip((12, 21, 30), t[:3], strict=True)
        for vpn, e in d.items()
    }


def deps_state(tracker: SlotTracker) -> tuple[dict[int, list[int]], dict[int, int]]:
    """The granules with registered cache entries (their page numbers; entries under
    a table path included) and the watched pages' live counts."""
    deps = {
        g: sorted((e.vpn for e in s if hasattr(e, "vpn")), key=int)
        for g, s in tracker.dependants().items()
    }
    return deps, dict(tracker.live)
