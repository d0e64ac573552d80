"""Silicon parameters of one VT-d remapping unit and the CAP/ECAP values they imply.

A :class:`VtdConfig` is what a machine file's ``config`` table for a ``vtd`` unit says
(VT-d spec 10.4.2 CAP_REG, 10.4.3 ECAP_REG; facts A2/A3). The register layout (where
the IOTLB registers and fault recording registers sit) is derived here once, as real
silicon fixes it at design time; the unit reads FRO/IRO back from CAP/ECAP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from hw.devconfig import check_range, from_mapping
from hw.vtd import registers as vr

PAGE = 4096

IOTLB_REGS_OFFSET = 0x100
"""IVA_REG/IOTLB_REG pair: first 16-byte slot after the fixed register block (0x000-0x0FF)."""
FRCD_OFFSET = 0x200
"""First fault recording register; records follow at 16-byte strides."""


WHAT = "vtd config"


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    check_range(WHAT, name, value, lo, hi)


@frozen
class VtdConfig:
    """Capabilities of one unit. Defaults model a modern scalable-mode unit.

    ``nfr`` is the number of fault recording registers (CAP.NFR holds ``nfr - 1``);
    ``sllps`` is the CAP.SLLPS field (bit 0: 2 MiB, bit 1: 1 GiB); ``sagaw`` the CAP.SAGAW
    field (bit 1: 3-level, bit 2: 4-level, bit 3: 5-level). ``haw`` is the host address
    width: pointer bits at or above it are reserved. ``strict_stale`` makes the use of a
    stale cached translation raise :class:`hw.vtd.StaleTranslationError`.
    """

    sagaw: int = 0b0110
    mgaw: int = 48
    haw: int = 46
    nd: int = 6
    cm: bool = False
    psi: bool = True
    mamv: int = 18
    sllps: int = 0b11
    fl1gp: bool = True
    fl5lp: bool = False
    pss: int = 19
    smts: bool = True
    flts: bool = True
    slts: bool = True
    pt: bool = True
    dt: bool = True
    pasid: bool = True
    prs: bool = False
    srs: bool = True
    ers: bool = False
    nwfs: bool = False
    qi: bool = True
    nfr: int = 8
    rwbf: bool = False
    coherent: bool = True
    strict_stale: bool = False

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> VtdConfig:
        """Build from a machine file's table; unknown keys and bad values raise ValueError."""
        cfg = from_mapping(cls, config, WHAT)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        _check_range("sagaw", self.sagaw, 0, 0b01110)
        if self.sagaw & 0b10001:
            raise ValueError("vtd config sagaw: bits 0 and 4 are reserved")
        _check_range("mgaw", self.mgaw, 39, 57)
        _check_range("haw", self.haw, 32, 52)
        _check_range("nd", self.nd, 0, 6)
        _check_range("mamv", self.mamv, 0, 63)
        _check_range("sllps", self.sllps, 0, 3)
        _check_range("pss", self.pss, 0, 19)
        _check_range("nfr", self.nfr, 1, 256)
        if self.sagaw == 0 and not (self.smts and not self.slts):
            raise ValueError("vtd config sagaw: 0 is only valid with smts and without slts")
        if self.smts and not self.qi:
            raise ValueError("vtd config smts: scalable mode needs qi (invalidation is QI-only)")
        if self.pasid and not self.smts:
            raise ValueError("vtd config pasid: PASID support needs smts")
        if self.mgaw < 57 and self.sagaw & 0b1000:
            raise ValueError("vtd config sagaw: 5-level tables need mgaw 57")

    # -- derived values -----------------------------------------------------
    @property
    def ndoms(self) -> int:
        return 1 << (4 + 2 * self.nd)

    @property
    def fro(self) -> int:
        return FRCD_OFFSET // 16

    @property
    def iro(self) -> int:
        return IOTLB_REGS_OFFSET // 16

    @property
    def register_size(self) -> int:
        end = FRCD_OFFSET + 16 * self.nfr
        return (end + PAGE - 1) // PAGE * PAGE

    def cap(self) -> int:
        """CAP_REG value (VT-d 10.4.2)."""
        c = vr.CAP
        return c.encode(
            ND=self.nd,
            RWBF=int(self.rwbf),
            CM=int(self.cm),
            SAGAW=self.sagaw,
            MGAW=self.mgaw - 1,
            FRO=self.fro,
            SLLPS=self.sllps,
            PSI=int(self.psi),
            NFR=self.nfr - 1,
            MAMV=self.mamv if self.psi else 0,
            FL1GP=int(self.fl1gp and self.flts),
            FL5LP=int(self.fl5lp and self.flts),
        )

    def ecap(self) -> int:
        """ECAP_REG value (VT-d 10.4.3)."""
        return vr.ECAP.encode(
            C=int(self.coherent),
            QI=int(self.qi),
            DT=int(self.dt),
            PT=int(self.pt),
            IRO=self.iro,
            PRS=int(self.prs),
            ERS=int(self.ers),
            SRS=int(self.srs and self.smts),
            NWFS=int(self.nwfs),
            PSS=self.pss if self.pasid else 0,
            PASID=int(self.pasid),
            SMTS=int(self.smts),
            SLTS=int(self.slts and self.smts),
            FLTS=int(self.flts and self.smts),
            SMPWC=int(self.smts and self.coherent),
        )
