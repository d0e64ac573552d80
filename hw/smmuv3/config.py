"""Silicon parameters of one SMMUv3 and the ID register values they imply.

A :class:`Smmuv3Config` is what a machine file's ``config`` table for an ``smmuv3``
unit says. Defaults follow the facts file C3 (an MMU-600-like, coherent,
AArch64-only, stage-1-only SMMU without ATS/PRI/stall) except that MSIs are on by
default, because the platform delivers interrupts only as MSIs (``Machine.msi``).
``pri`` adds the PRI queue (IDR0.PRI, IDR1.PRIQS = ``priqs``); ATS is not modelled,
so a function's page requests reach it without a translation request first (the
model's departure: PRI needs ATS on real SMMUs).
Field positions are those of IHI 0070 §6.3.1-6.3.6 as Linux ``arm-smmu-v3.h``
names them (``IDR0_*``, ``IDR1_*``, ``IDR3_RIL``, ``IDR5_*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from hw.devconfig import check_range, from_mapping
from hw.smmuv3 import registers as sr

OAS_BITS = (32, 36, 40, 42, 44, 48, 52)
"""IDR5.OAS / CD.IPS encodings 0..6 -> address bits (IHI 0070 §6.3.6)."""

REGISTER_SIZE = 0x20000
"""Page 0 and page 1, 64 KiB each (facts A1)."""


WHAT = "smmuv3 config"


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    check_range(WHAT, name, value, lo, hi)


@frozen
class Smmuv3Config:
    """Capabilities of one SMMU.

        ``sidsize``/``ssidsize`` are IDR1.SIDSIZE/SSIDSIZE (StreamID and SubstreamID
        bits); ``cmdqs``/``evtqs`` the log2 of the largest queues; ``oas`` the IDR5.OAS
        encoding (5 = 48 bits); ``st_level`` 1 when 2-level stream tables are supported;
        ``httu`` 0 (none), 1 (hardware Access flag update) or 2 (Access flag and dirty state:
    DBM descriptors made writable on a write, CD.HD / STE.S2HD); ``s2p`` adds stage 2
    (IDR0.S2P: STE.Config 0b110 and, with stage 1, nesting 0b111). ``strict_stale`` makes the
        use of a stale cached entry raise :class:`hw.smmuv3.StaleTranslationError`.
    """

    s1p: bool = True
    s2p: bool = False
    cohacc: bool = True
    httu: int = 0
    hyp: bool = False
    ats: bool = False
    asid16: bool = True
    msi: bool = True
    sev: bool = False
    pri: bool = False
    vmid16: bool = True
    cd2l: bool = True
    st_level: int = 1
    stall_model: int = 1
    sidsize: int = 16
    ssidsize: int = 20
    evtqs: int = 7
    priqs: int = 7
    cmdqs: int = 8
    ril: bool = False
    oas: int = 5
    iidr: int = 0
    aidr: int = 1
    strict_stale: bool = False

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> Smmuv3Config:
        """Build from a machine file's table; unknown keys and bad values raise ValueError."""
        cfg = from_mapping(cls, config, WHAT)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        _check_range("httu", self.httu, 0, 2)
        _check_range("st_level", self.st_level, 0, 1)
        _check_range("stall_model", self.stall_model, 1, 1)
        _check_range("sidsize", self.sidsize, 1, 32)
        _check_range("ssidsize", self.ssidsize, 0, 20)
        _check_range("evtqs", self.evtqs, 1, 19)
        _check_range("priqs", self.priqs, 1, 19)
        _check_range("cmdqs", self.cmdqs, 1, 19)
        _check_range("oas", self.oas, 0, 6)
        _check_range("iidr", self.iidr, 0, 0xFFFF_FFFF)
        _check_range("aidr", self.aidr, 0, 0xFF)
        if not self.s1p:
            raise ValueError("smmuv3 config s1p: the model implements stage 1 only; keep it true")
        if self.ats:
            raise ValueError("smmuv3 config ats: PCIe ATS is not modelled")
        if self.aidr == 0 and self.oas == 6:
            raise ValueError("smmuv3 config oas: 52-bit output needs SMMUv3.1 (aidr >= 1)")

    # -- derived values -----------------------------------------------------
    @property
    def oas_bits(self) -> int:
        return OAS_BITS[self.oas]

    def idr0(self) -> int:
        """IDR0 (IHI 0070 §6.3.1): TTF=AArch64, TTENDIAN=LE, TERM_MODEL=0."""
        return sr.IDR0.encode(
            S2P=int(self.s2p),
            S1P=int(self.s1p),
            TTF=2,
            COHACC=int(self.cohacc),
            HTTU=self.httu,
            HYP=int(self.hyp),
            ASID16=int(self.asid16),
            MSI=int(self.msi),
            SEV=int(self.sev),
            PRI=int(self.pri),
            VMID16=int(self.vmid16),
            CD2L=int(self.cd2l),
            TTENDIAN=2,
            STALL_MODEL=self.stall_model,
            ST_LEVEL=self.st_level,
        )

    def idr1(self) -> int:
        return sr.IDR1.encode(
            SIDSIZE=self.sidsize,
            SSIDSIZE=self.ssidsize,
            EVTQS=self.evtqs,
            PRIQS=self.priqs if self.pri else 0,
            CMDQS=self.cmdqs,
        )

    def idr3(self) -> int:
        return sr.IDR3.encode(RIL=int(self.ril))

    def idr5(self) -> int:
        return sr.IDR5.encode(OAS=self.oas, GRAN4K=1)
