"""Silicon parameters of one VT-d remapping unit and the CAP/ECAP values they imply.

A :class:`VtdConfig` is what a machine file's ``config`` table for a ``vtd`` unit says
(VT-d spec 10.4.2 CAP_REG, 10.4.3 ECAP_REG; facts A2/A3). The register layout (where
the IOTLB registers and fault recording registers sit) is derived here once, as real
silicon fixes it at design time; the unit reads FRO/IRO back from CAP/ECAP.

A machine file may instead give ``cap``, ``ecap`` (and optionally ``ver``) verbatim as
hex strings, the way ``dmesg`` and ``/sys/class/iommu/dmar*/intel-iommu/`` print them;
:func:`knobs_from_registers` then derives every knob from the register values, refuses a
set bit whose feature the model does not implement (naming the bit), and the unit
reads those exact values back. Knobs and raw registers are exclusive.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from attrs import frozen

from hw.devconfig import check_range, from_mapping
from hw.regs import Register
from hw.vtd import registers as vr

PAGE = 4096

IOTLB_REGS_OFFSET = 0x100
"""IVA_REG/IOTLB_REG pair: first 16-byte slot after the fixed register block (0x000-0x0FF)."""
FRCD_OFFSET = 0x200
"""First fault recording register; records follow at 16-byte strides."""


WHAT = "vtd config"

REGISTER_KEYS = ("cap", "ecap", "ver")
"""Machine-file keys that give the ID registers verbatim (hex strings)."""

CAP_KNOBS = (
    "nd", "rwbf", "plmr", "phmr", "cm", "sagaw", "mgaw", "zlr", "sllps", "psi", "nfr", "mamv",
    "fl1gp", "pi", "fl5lp",
)  # fmt: skip
ECAP_KNOBS = (
    "coherent", "qi", "dt", "ir", "eim", "sc", "mhmv", "pt", "prs", "pds", "ers", "srs", "nwfs",
    "pss", "pasid", "smts", "slts", "flts", "slads",
)  # fmt: skip

FIXED_REGS_END = vr.PEUADDR_OFF + 4
"""End of the fixed registers the model implements; IOTLB and fault records go above it."""

# Set bits the model does not implement: (register, field) -> what it is.
_UNMODELLED: dict[tuple[str, str], str] = {
    ("cap", "AFL"): "advanced fault logging",
    ("cap", "ECMDS"): "enhanced command interface",
    ("cap", "ESIRTPS"): "enhanced SIRTP, interrupt remapping",
    ("cap", "ESRTPS"): "enhanced SRTP cache invalidation",
    ("ecap", "MTS"): "memory type support",
    ("ecap", "NEST"): "nested translation",
    ("ecap", "EAFS"): "extended accessed flag",
    ("ecap", "DIT"): "device-TLB invalidation throttling",
    ("ecap", "VCS"): "virtual command",
    ("ecap", "RPS"): "RID_PASID field",
    ("ecap", "PMS"): "performance monitoring",
    ("ecap", "ADMS"): "abort-DMA mode",
    ("ecap", "RPRIVS"): "RID_PRIV field",
}


def _parse_hex(key: str, value: object, bits: int) -> int:
    if not isinstance(value, str):
        raise ValueError(f"vtd.{key}: expected a hex string such as '0x10', got {value!r}")
    try:
        n = int(value, 16)
    except ValueError:
        raise ValueError(f"vtd.{key}: {value!r} is not a hex number") from None
    if not 0 <= n < 1 << bits:
        raise ValueError(f"vtd.{key}: {value!r} does not fit in {bits} bits")
    return n


def _check_bits(key: str, reg: type[Register], value: int) -> None:
    """Error naming the first set bit the model does not model (or that is reserved)."""
    declared = 0
    for f in reg.FIELDS:
        declared |= f.mask
        name = f.name
        what = _UNMODELLED.get((key, name))
        if what is not None and f.get(value):
            where = f"bit {f.lsb}" if f.msb == f.lsb else f"bits {f.msb}:{f.lsb}"
            raise ValueError(f"vtd.{key} {where} ({name}, {what}) is not modelled")
    extra = value & ~declared
    if extra:
        bit = (extra & -extra).bit_length() - 1
        raise ValueError(f"vtd.{key} bit {bit} is reserved")


def knobs_from_registers(cap: int, ecap: int) -> dict[str, Any]:
    """Every register-backed knob as CAP/ECAP say (VT-d 10.4.2/10.4.3; facts A2/A3).

    Mirrors what Linux's ``cap_*``/``ecap_*`` accessors read; DWD/DRD need no knob (the
    model drains synchronously, so descriptors carrying DR/DW are accepted as they are)."""
    _check_bits("cap", vr.CAP, cap)
    _check_bits("ecap", vr.ECAP, ecap)
    c, e = vr.CAP.decode(cap), vr.ECAP.decode(ecap)
    return {
        "nd": c["ND"],
        "rwbf": bool(c["RWBF"]),
        "plmr": bool(c["PLMR"]),
        "phmr": bool(c["PHMR"]),
        "zlr": bool(c["ZLR"]),
        "pi": bool(c["PI"]),
        "cm": bool(c["CM"]),
        "sagaw": c["SAGAW"],
        "mgaw": c["MGAW"] + 1,
        "sllps": c["SLLPS"],
        "psi": bool(c["PSI"]),
        "nfr": c["NFR"] + 1,
        "mamv": c["MAMV"],
        "fl1gp": bool(c["FL1GP"]),
        "fl5lp": bool(c["FL5LP"]),
        "coherent": bool(e["C"]),
        "qi": bool(e["QI"]),
        "dt": bool(e["DT"]),
        "ir": bool(e["IR"]),
        "eim": bool(e["EIM"]),
        "sc": bool(e["SC"]),
        "mhmv": e["MHMV"],
        "pt": bool(e["PT"]),
        "prs": bool(e["PRS"]),
        "pds": bool(e["PDS"]),
        "ers": bool(e["ERS"]),
        "srs": bool(e["SRS"]),
        "nwfs": bool(e["NWFS"]),
        "pss": e["PSS"],
        "pasid": bool(e["PASID"]),
        "smts": bool(e["SMTS"]),
        "slts": bool(e["SLTS"]),
        "flts": bool(e["FLTS"]),
        "slads": bool(e["SLADS"]),
    }


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
    slads: bool = False
    """Second-stage accessed/dirty bits (ECAP.SLADS): the walk sets A/D in second-stage
    leaves of a PASID entry with SSADE (the model honours SSADE either way; this knob
    is what the unit advertises)."""
    pt: bool = True
    dt: bool = True
    pasid: bool = True
    prs: bool = True
    pds: bool = True
    srs: bool = True
    ers: bool = False
    nwfs: bool = False
    qi: bool = True
    ir: bool = True
    """ECAP.IR: interrupt remapping (:mod:`hw.vtd.irq_remap`)."""
    eim: bool = False
    """ECAP.EIM: IRTA.EIME may select x2APIC (32-bit) destinations."""
    mhmv: int = 15
    """ECAP.MHMV: largest IM an index-selective IEC invalidation may carry."""
    pi: bool = False
    """CAP.PI: posted-format IRTEs post into a posted-interrupt descriptor."""
    sc: bool = False
    """ECAP.SC: the SNP bit of legacy second-stage leaves is accepted (RAM is coherent in
    the model, so snooping changes nothing else)."""
    plmr: bool = False
    """CAP.PLMR: the protected low-memory region registers (:mod:`hw.vtd.pmr`)."""
    phmr: bool = False
    """CAP.PHMR: the protected high-memory region registers."""
    zlr: bool = False
    """CAP.ZLR: zero-length reads to write-only pages are allowed. The model's devices
    never issue zero-length requests (a zero-length access completes with no lookup),
    so the bit only reads back."""
    nfr: int = 8
    rwbf: bool = False
    coherent: bool = True
    strict_stale: bool = False
    raw: tuple[int, int, int] | None = None
    """(CAP, ECAP, VER) given verbatim by the machine file, read back exactly."""

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> VtdConfig:
        """Build from a machine file's table; unknown keys and bad values raise ValueError."""
        config = dict(config or {})
        if "raw" in config:
            raise ValueError(f"{WHAT}: unknown key 'raw'")
        given = {k: config.pop(k) for k in REGISTER_KEYS if k in config}
        if not given:
            if config.get("qi") is False and "ir" not in config:
                config["ir"] = False  # IR needs QI: a unit without QI has no IR either
            cfg = from_mapping(cls, config, WHAT)
            cfg.validate()
            return cfg
        missing = [k for k in ("cap", "ecap") if k not in given]
        if missing:
            raise ValueError(f"vtd: {' and '.join(missing)} must be given with {', '.join(given)}")
        both = sorted(k for k in config if k in CAP_KNOBS + ECAP_KNOBS)
        if both:
            raise ValueError(
                f"vtd: {', '.join(both)} cannot be given with cap/ecap (the registers fix them)"
            )
        cap = _parse_hex("cap", given["cap"], 64)
        ecap = _parse_hex("ecap", given["ecap"], 64)
        default_ver = 0x30 if vr.ECAP.SMTS.get(ecap) else 0x10
        ver = _parse_hex("ver", given["ver"], 8) if "ver" in given else default_ver
        cfg = from_mapping(cls, config, WHAT)
        cfg = attrs.evolve(cfg, raw=(cap, ecap, ver), **knobs_from_registers(cap, ecap))
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
        _check_range("mhmv", self.mhmv, 0, 15)
        if self.ir and not self.qi:
            raise ValueError("vtd config ir: interrupt remapping needs qi (IEC invalidation)")
        if self.eim and not self.ir:
            raise ValueError("vtd config eim: extended interrupt mode needs ir")
        if self.pi and not self.ir:
            raise ValueError("vtd config pi: posted interrupts need ir")
        if self.sagaw == 0 and not (self.smts and not self.slts):
            raise ValueError("vtd config sagaw: 0 is only valid with smts and without slts")
        if self.smts and not self.qi:
            raise ValueError("vtd config smts: scalable mode needs qi (invalidation is QI-only)")
        if self.pds and not self.prs:
            raise ValueError("vtd config pds: page-request drain needs prs")
        if self.pasid and not self.smts:
            raise ValueError("vtd config pasid: PASID support needs smts")
        if self.mgaw < 57 and self.sagaw & 0b1000:
            raise ValueError("vtd config sagaw: 5-level tables need mgaw 57")
        self._check_layout()

    def _check_layout(self) -> None:
        """The IVA/IOTLB pair and the fault records must sit above the fixed registers
        and not overlap each other (they can only be misplaced by raw CAP/ECAP)."""
        iotlb = (self.iro * 16, self.iro * 16 + 16)
        frcd = (self.fro * 16, self.fro * 16 + 16 * self.nfr)
        for name, (lo, _end) in (("ecap IRO", iotlb), ("cap FRO", frcd)):
            if lo < FIXED_REGS_END:
                raise ValueError(f"vtd.{name} {lo:#x} overlaps the fixed registers")
        if iotlb[0] < frcd[1] and frcd[0] < iotlb[1]:
            raise ValueError("vtd: the IOTLB registers (IRO) overlap the fault records (FRO/NFR)")

    # -- derived values -----------------------------------------------------
    @property
    def page_requests(self) -> bool:
        """ECAP.PRS as advertised: the model takes page requests in scalable mode only
        (PRE lives in the scalable-mode context entry)."""
        return self.prs and self.smts

    @property
    def ndoms(self) -> int:
        return 1 << (4 + 2 * self.nd)

    @property
    def fro(self) -> int:
        if self.raw is not None:
            return vr.CAP.FRO.get(self.raw[0])
        return FRCD_OFFSET // 16

    @property
    def iro(self) -> int:
        if self.raw is not None:
            return vr.ECAP.IRO.get(self.raw[1])
        return IOTLB_REGS_OFFSET // 16

    @property
    def register_size(self) -> int:
        end = max(self.fro * 16 + 16 * self.nfr, self.iro * 16 + 16)
        return (end + PAGE - 1) // PAGE * PAGE

    @property
    def ver(self) -> int:
        """VER_REG value: as given, else 3.0 for a scalable-mode unit and 1.0 otherwise."""
        if self.raw is not None:
            return self.raw[2]
        return 0x30 if self.smts else 0x10

    def cap(self) -> int:
        """CAP_REG value (VT-d 10.4.2)."""
        if self.raw is not None:
            return self.raw[0]
        c = vr.CAP
        return c.encode(
            ND=self.nd,
            RWBF=int(self.rwbf),
            PLMR=int(self.plmr),
            PHMR=int(self.phmr),
            CM=int(self.cm),
            ZLR=int(self.zlr),
            PI=int(self.pi),
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
        if self.raw is not None:
            return self.raw[1]
        return vr.ECAP.encode(
            C=int(self.coherent),
            QI=int(self.qi),
            DT=int(self.dt),
            IR=int(self.ir),
            EIM=int(self.eim),
            SC=int(self.sc),
            MHMV=self.mhmv if self.ir else 0,
            PT=int(self.pt),
            IRO=self.iro,
            PRS=int(self.page_requests),
            PDS=int(self.pds and self.page_requests),
            ERS=int(self.ers),
            SRS=int(self.srs and self.smts),
            NWFS=int(self.nwfs),
            PSS=self.pss if self.pasid else 0,
            PASID=int(self.pasid),
            SMTS=int(self.smts),
            SLTS=int(self.slts and self.smts),
            FLTS=int(self.flts and self.smts),
            SMPWC=int(self.smts and self.coherent),
            SLADS=int(self.slads and self.smts),
        )
