"""Register-based invalidation and the cache invalidation operations QI shares
(VT-d spec 6.5.1, 6.5.2.1, 6.5.2.3; facts A6; QEMU ``vtd_handle_ccmd_write``,
``vtd_handle_iotlb_write``).

A write of CCMD with ICC=1 or of the IOTLB register with IVT=1 starts a command that
stays busy for :data:`CMD_DELAY_NS`, then reports the granularity it actually used
(CAIG/IAIG; 0 = rejected). Register-based invalidation is rejected while queued
invalidation is enabled and in scalable mode, where only QI exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.regs import RegSlot
from hw.vtd import registers as vr
from hw.vtd.caches import SL_TAG

if TYPE_CHECKING:
    from hw.vtd.unit import VtdUnit

CMD_DELAY_NS = 100
"""Time a register-based invalidation (CCMD.ICC, IOTLB.IVT) stays busy."""


class RegisterInvalidation:
    """CCMD and IOTLB/IVA registers of one unit; the operations are the unit's
    :meth:`~hw.vtd.unit.VtdUnit.context_invalidate` and
    :meth:`~hw.vtd.unit.VtdUnit.iotlb_invalidate`, which QI calls too."""

    def __init__(self, unit: VtdUnit) -> None:
        self.unit = unit

    def _allowed(self, what: str) -> bool:
        unit = self.unit
        if unit.regs.field("GSTS", vr.GSTS.QIES):
            unit.error(f"{what}: register-based invalidation while QI is enabled; rejected")
            return False
        if unit.ttm != 0:
            unit.error(f"{what}: register-based invalidation in scalable mode; rejected")
            return False
        return True

    def ccmd_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if not touched >> 63 or not written >> 63:
            return
        value = slot.value
        self.unit._schedule(CMD_DELAY_NS, lambda: self._ccmd_done(value), "ccmd")

    def _ccmd_done(self, value: int) -> None:
        """Execute CCMD and report the actual granularity (0 = rejected)."""
        unit = self.unit
        g = vr.CCMD.CIRG.get(value)
        actual = 0
        if g and self._allowed("CCMD"):
            actual = g
            unit.context_invalidate(
                g, vr.CCMD.DID.get(value), vr.CCMD.SID.get(value), vr.CCMD.FM.get(value)
            )
        v = vr.CCMD.CAIG.put(value, actual)
        unit.regs["CCMD"] = vr.CCMD.ICC.put(v, 0)

    def iotlb_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if not touched >> 63 or not written >> 63:
            return
        value, iva = slot.value, self.unit.regs["IVA"]
        self.unit._schedule(CMD_DELAY_NS, lambda: self._iotlb_done(value, iva), "iotlb")

    def _iotlb_done(self, value: int, iva: int) -> None:
        unit = self.unit
        g = vr.IOTLB.IIRG.get(value)
        actual = 0
        if g and self._allowed("IOTLB"):
            if g == 3 and (not unit.cfg.psi or vr.IVA.AM.get(iva) > unit.cfg.mamv):
                g = 2
            actual = g
            did = vr.IOTLB.DID.get(value)
            unit.iotlb_invalidate(g, did, iva & ~0xFFF, vr.IVA.AM.get(iva))
        v = vr.IOTLB.IAIG.put(value, actual)
        unit.regs["IOTLB"] = vr.IOTLB.IVT.put(v, 0)

    # -- the operations (register and QI paths) ------------------------------------------
    def context_invalidate(self, g: int, did: int, sid: int, fm: int) -> int:
        unit = self.unit
        unit.stats.invalidations += 1
        if g == 1:
            return unit.caches.flush_ctx()
        if g == 2:
            return unit.caches.flush_ctx(did=did)
        return unit.caches.flush_ctx(sid=sid, fm=fm)

    def iotlb_invalidate(self, g: int, did: int, addr: int, am: int) -> int:
        """Type-2 semantics: global drops everything; domain- and page-selective drop
        second-stage and nested entries of ``did`` (first-stage ones need P_IOTLB,
        spec 6.5.2.4; nested ones go whatever the address, see :mod:`hw.vtd.caches`)."""
        unit = self.unit
        unit.stats.invalidations += 1
        if g == 1:
            return unit.caches.flush_tlb()
        if g == 2:
            return unit.caches.flush_tlb(did=did, tag=SL_TAG, nested=True)
        return unit.caches.flush_tlb(did=did, tag=SL_TAG, addr=addr, am=am, nested=True)
