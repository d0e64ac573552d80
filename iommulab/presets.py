"""Machine presets: named, documented machine descriptions (``--machine NAME``).

Each preset is a plain description dict validated by ``hw.machine.MachineSpec``;
``--machine-file`` loads the same shape from TOML or JSON.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hw.machine import MachineSpec

DSA_BDF = "0000:00:02.0"
EDU_BDF = "0000:00:03.0"

SERVER_DSA_BDFS = tuple(
    f"0000:{bus:02x}:01.0" for bus in (0x6A, 0x6F, 0x74, 0x79, 0xE7, 0xEC, 0xF1, 0xF6)
)
"""Where a two-socket Sapphire Rapids server has its eight DSAs (one per accelerator stack)."""
SERVER_DSAS_PER_UNIT = 2
SERVER_CMDLINE = "idxd.default_wqs=0"
"""Boot the ``server`` preset with every WQ of every DSA configured (the demo's ``--every-wq``)."""


def _server() -> dict[str, Any]:
    """Two sockets' worth: a DRHD per pair of accelerator stacks (each scoping two DSAs),
    a catch-all DRHD (INCLUDE_PCI_ALL) for the rest, and 256 GiB of RAM, most of it
    above the PCI hole."""
    per = SERVER_DSAS_PER_UNIT
    groups = [SERVER_DSA_BDFS[i : i + per] for i in range(0, len(SERVER_DSA_BDFS), per)]
    iommus: list[dict[str, Any]] = [
        {"kind": "vtd", "name": f"dmar{i}", "scope": list(bdfs)} for i, bdfs in enumerate(groups)
    ]
    iommus.append({"kind": "vtd", "name": f"dmar{len(groups)}", "scope": "all"})
    return {
        "name": "server",
        "doc": (
            "256 GiB RAM (3 GiB below the PCI hole, the rest from 4 GiB), eight DSAs with "
            f"8 WQs each on their own buses, {len(groups)} VT-d units scoping two DSAs each "
            "plus an INCLUDE_PCI_ALL unit for the edu device; boot it with "
            f"'{SERVER_CMDLINE}' to configure every WQ"
        ),
        "ram": "256G",
        "iommus": iommus,
        "devices": [{"kind": "dsa", "bdf": b} for b in SERVER_DSA_BDFS]
        + [{"kind": "edu", "bdf": EDU_BDF}],
    }


QEMU_72_SM_CAP = "0xd2008c222f0606"
QEMU_72_SM_ECAP = "0x480080f00f4a"
"""QEMU 7.2's ECAP as its dmesg prints it: IR (bit 3) and MHMV 0xF (bits 23:20) set,
EIM clear (``intremap=on`` without ``eim=on``), so Linux enables interrupt remapping
in xAPIC mode."""
QEMU_72_SM_VER = "0x10"
QEMU_72_SM_HAW = 48


def _qemu_72_sm() -> dict[str, Any]:
    """QEMU 7.2's ``-device intel-iommu,x-scalable-mode=on,aw-bits=48`` (``vtd_cap_init``):
    scalable mode with second-stage tables only (no first stage, no PASID, no ATS),
    one fault record at FRO 0x220, IOTLB registers at IRO 0xF0, DRD/DWD set, page
    walks not coherent (ECAP.C=0, so the driver flushes table updates), interrupt
    remapping with a 15-bit IEC handle mask and no x2APIC mode (ECAP.IR, MHMV 0xF,
    EIM 0). Its DMAR table says host address width 48 (QEMU writes ``aw-bits - 1``;
    the real 6.12 dmesg in spec/linux-6.12-trace prints "DMAR: Host address width 48")."""
    return {
        "name": "qemu-7.2-sm",
        "doc": (
            "256 MiB RAM, one VT-d unit with QEMU 7.2's scalable-mode registers "
            f"(cap {QEMU_72_SM_CAP}, ecap {QEMU_72_SM_ECAP}, ver "
            f"{QEMU_72_SM_VER}), one DSA and one edu device"
        ),
        "ram": "256M",
        "dmar": {"host_address_width": QEMU_72_SM_HAW},
        "iommus": [
            {
                "kind": "vtd",
                "name": "dmar0",
                "scope": "all",
                "config": {
                    "cap": QEMU_72_SM_CAP,
                    "ecap": QEMU_72_SM_ECAP,
                    "ver": QEMU_72_SM_VER,
                },
            }
        ],
        "devices": [
            {"kind": "dsa", "bdf": DSA_BDF},
            {"kind": "edu", "bdf": EDU_BDF},
        ],
    }


def _real_server(
    name: str, bases: tuple[int, ...], cap: str, ecap: str, source: str, what: str
) -> dict[str, Any]:
    """A machine whose VT-d units are a real server's, register for register: the DRHD
    bases, CAP and ECAP its boot log prints (``source``); the last unit is the
    INCLUDE_PCI_ALL one (``flags: 0x1``) and covers the DSA and edu device, the others
    scope no device (Linux ignores them for DMA remapping but sets up interrupt
    remapping on every unit). The platform has no DSA of its own; the one here sits
    behind the catch-all unit so the founding scenario runs as far as the unit's
    capabilities allow (legacy mode, no PASID: idxd does in-kernel DMA without PASID).
    The DMAR header's host address width is :data:`XEON_SP_HAW`."""
    iommus: list[dict[str, Any]] = [
        {
            "kind": "vtd",
            "name": f"dmar{i}",
            "scope": "all" if i == len(bases) - 1 else [],
            "base": base,
            "config": {"cap": cap, "ecap": ecap, "ver": "0x10"},
        }
        for i, base in enumerate(bases)
    ]
    return {
        "name": name,
        "doc": f"{what}: {len(bases)} VT-d units with cap {cap} ecap {ecap} ({source}), "
        "256 MiB RAM, one DSA and one edu device behind the INCLUDE_PCI_ALL unit",
        "ram": "256M",
        "dmar": {"host_address_width": XEON_SP_HAW},
        "iommus": iommus,
        "devices": [
            {"kind": "dsa", "bdf": DSA_BDF},
            {"kind": "edu", "bdf": EDU_BDF},
        ],
    }


XEON_SP_HAW = 46
"""The Xeon presets' DMAR host address width. Neither cited log excerpt shows its "DMAR:
Host address width" line (the LAKE excerpt starts at the dmar0 line), so this is the
46-bit physical address width of Skylake-SP/Cascade Lake-SP, which these platforms'
BIOSes report there; the units' own CAP.MGAW is 48."""

XEON_SP_CAP = "0x8d2078c106f0466"
"""Xeon Scalable (Skylake-SP/Cascade Lake-SP) CAP: ND 6, PLMR/PHMR, SAGAW 4-level, MGAW 48,
ZLR, FRO 0x100, 2 MiB/1 GiB pages, PSI, 8 fault records, MAMV 18, DRD/DWD, PI."""


def _xeon_s2600wf() -> dict[str, Any]:
    """Intel Server Board S2600WF (two-socket Xeon Scalable), from the boot log at
    https://pastebin.com/HKn5d9Sk: four DRHDs at 0xc5ffc000, 0xe0ffc000, 0xfbffc000 and
    0xaaffc000 (INCLUDE_PCI_ALL), each ``cap 8d2078c106f0466 ecap f020de``: QI, device-TLB,
    interrupt remapping with x2APIC (EIM, MHMV 15), pass-through, snoop control, page
    walks not coherent (ECAP.C=0)."""
    return _real_server(
        "xeon-s2600wf",
        (0xC5FF_C000, 0xE0FF_C000, 0xFBFF_C000, 0xAAFF_C000),
        XEON_SP_CAP,
        "0xf020de",
        "https://pastebin.com/HKn5d9Sk",
        "Intel S2600WF Xeon Scalable server",
    )


def _xeon_8drhd() -> dict[str, Any]:
    """A Xeon Scalable server with eight DRHDs, from the boot log in
    https://github.com/utcs-scea/LAKE/issues/10: units at 0xd37fc000, 0xe0ffc000,
    0xee7fc000, 0xfbffc000, 0xaaffc000, 0xb87fc000, 0xc5ffc000 and 0x9d7fc000
    (INCLUDE_PCI_ALL), each ``cap 8d2078c106f0466 ecap f020df``: as the S2600WF's but with
    coherent page walks (ECAP.C=1)."""
    return _real_server(
        "xeon-8drhd",
        (
            0xD37F_C000,
            0xE0FF_C000,
            0xEE7F_C000,
            0xFBFF_C000,
            0xAAFF_C000,
            0xB87F_C000,
            0xC5FF_C000,
            0x9D7F_C000,
        ),
        XEON_SP_CAP,
        "0xf020df",
        "https://github.com/utcs-scea/LAKE/issues/10",
        "eight-unit Xeon Scalable server",
    )


PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "name": "default",
        "doc": "256 MiB RAM, one VT-d unit covering all PCI devices, one DSA and one edu device",
        "ram": "256M",
        "iommus": [{"kind": "vtd", "name": "dmar0", "scope": "all"}],
        "devices": [
            {"kind": "dsa", "bdf": DSA_BDF},
            {"kind": "edu", "bdf": EDU_BDF},
        ],
    },
    "no-iommu": {
        "name": "no-iommu",
        "doc": "64 MiB RAM and an edu device, no IOMMU: every DMA goes straight to RAM",
        "ram": "64M",
        "devices": [{"kind": "edu", "bdf": EDU_BDF}],
    },
    "no-iommu-dsa": {
        "name": "no-iommu-dsa",
        "doc": "256 MiB RAM, one DSA and one edu device, no IOMMU (dma-direct, no PASID)",
        "ram": "256M",
        "devices": [
            {"kind": "dsa", "bdf": DSA_BDF},
            {"kind": "edu", "bdf": EDU_BDF},
        ],
    },
    "smmuv3": {
        "name": "smmuv3",
        "ram": "256M",
        "iommus": [{"kind": "smmuv3", "name": "smmu0", "scope": "all"}],
        "devices": [
            {"kind": "dsa", "bdf": DSA_BDF},
            {"kind": "edu", "bdf": EDU_BDF},
        ],
        "doc": (
            "One ARM SMMUv3 (IORT, StreamID = requester ID) in front of an Intel DSA and the "
            "edu toy device. DSA behind SMMUv3 does not exist in silicon (the idxd driver is "
            "x86-only): this is a simulation pairing for the IOMMU-vendor swap under an "
            "unchanged idxd driver."
        ),
    },
    "server": _server(),
    "qemu-7.2-sm": _qemu_72_sm(),
    "xeon-s2600wf": _xeon_s2600wf(),
    "xeon-8drhd": _xeon_8drhd(),
}


def preset(name: str) -> MachineSpec:
    try:
        return MachineSpec.from_dict(PRESETS[name])
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown machine preset {name!r} (known: {known})") from None


_TOML_AT = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def load_machine_file(path: str | Path) -> MachineSpec:
    """A machine description from ``.toml`` or ``.json`` (top-level table = machine).

    Every problem is a ``ValueError`` whose message starts with the file's name: a
    file that cannot be read, a syntax error (``FILE:LINE:COLUMN: ...``), or a field
    the description does not accept."""
    p = Path(path)
    if p.suffix not in (".toml", ".json"):
        raise ValueError(f"{p}: machine files are .toml or .json")
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read the machine file ({exc.strerror})") from None
    data: Mapping[str, Any]
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = _TOML_AT.match(str(exc))
        where = f"{p}:{at['line']}:{at['col']}" if at else str(p)
        raise ValueError(f"{where}: TOML syntax error: {at['msg'] if at else exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}:{exc.lineno}:{exc.colno}: JSON syntax error: {exc.msg}") from None
    try:
        return MachineSpec.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None
