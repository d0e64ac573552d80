"""Work queues: the configuration latched at Enable WQ and the runtime queue
(DSA spec 3.3/9.2.13; facts B8, B11, B12)."""

from __future__ import annotations

from attrs import define, field

from hw.dsa.engine import Job

PORTAL_STRIDE = 0x4000
PORTAL_PAGE = 0x1000


def portal_decode(offset: int) -> tuple[int, bool, bool]:
    """BAR2 offset -> (WQ index, limited portal, IMS portal)."""
    page = (offset // PORTAL_PAGE) & 3
    return offset // PORTAL_STRIDE, bool(page & 1), bool(page & 2)


@define(slots=True, eq=False)
class WqState:
    """One WQ: latched WQCFG values (valid while enabled) and its pending jobs."""

    index: int
    enabled: bool = False
    size: int = 0
    thresh: int = 0
    dedicated: bool = False
    bof: bool = False
    prs_disable: bool = False
    pasid: int = 0
    pasid_en: bool = False
    priv: bool = False
    max_xfer: int = 0
    max_batch: int = 0
    op_config: int | None = None
    group: int = -1
    pending: dict[int, Job] = field(factory=dict)
    last_finish: int = 0

    @property
    def occupancy(self) -> int:
        return len(self.pending)

    def op_allowed(self, op: int) -> bool:
        return self.op_config is None or bool(self.op_config >> op & 1)
