"""The DMAR sub-tables a machine description may declare besides its VT-d units:
RMRR, ATSR and SATC structures (VT-d spec 8.4-8.8), under the machine's ``dmar`` key::

    dmar = {
        "host_address_width": 48,
        "rmrr": [{"base": 0x3E000000, "end": 0x3E0FFFFF, "devices": ["00:03.0"]}],
        "atsr": [{"all_ports": True}],
        "satc": [{"atc_required": True, "devices": ["00:02.0"]}],
    }

``host_address_width`` is the table header's HAW as dmesg prints it ("DMAR: Host
address width 48"; the table's byte holds HAW - 1, so 1..256). Without it the machine
says 46, the model's physical address width.

Only the form is checked here (field names and types, BDF syntax); whether an RMRR
makes sense (alignment, inside firmware-reserved memory) is what the kernel checks
when it parses the table, printing Linux's firmware-bug messages. Firmware reserves
every RMRR that lies inside RAM (an E820 reserved range), as a BIOS does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from hw.bus import DmarAtsr, DmarRmrr, DmarSatc, PciAddr

DEFAULT_HOST_ADDRESS_WIDTH = 46


@frozen
class DmarSpec:
    host_address_width: int = DEFAULT_HOST_ADDRESS_WIDTH
    rmrrs: tuple[DmarRmrr, ...] = ()
    atsrs: tuple[DmarAtsr, ...] = ()
    satcs: tuple[DmarSatc, ...] = ()

    def reserved_memory(self, ram: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        """The parts of the RMRRs inside RAM (``ram``: (base, size) ranges): what
        firmware marks reserved in its E820 map."""
        out = []
        for r in self.rmrrs:
            for base, size in ram:
                first, last = max(r.base, base), min(r.end, base + size - 1)
                if first <= last:
                    out.append((first, last))
        return tuple(sorted(out))


def _entries(raw: Any, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(raw, list | tuple):
        raise ValueError(f"{where}: expected a list")
    out = []
    for i, e in enumerate(raw):
        if not isinstance(e, Mapping):
            raise ValueError(f"{where}[{i}]: expected a table")
        out.append(e)
    return out


def _check(e: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(e) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")


def _scope(e: Mapping[str, Any], where: str) -> tuple[PciAddr, ...]:
    raw = e.get("devices", [])
    if not isinstance(raw, list | tuple) or not all(isinstance(s, str) for s in raw):
        raise ValueError(f"{where}.devices: expected a list of BDF strings")
    try:
        return tuple(PciAddr.parse(s) for s in raw)
    except ValueError as exc:
        raise ValueError(f"{where}.devices: {exc}") from exc


def _int(e: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    v = e.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 1 << 64:
        raise ValueError(f"{where}.{key}: expected a 64-bit unsigned integer")
    return v


def _flag(e: Mapping[str, Any], key: str, where: str) -> bool:
    v = e.get(key, False)
    if not isinstance(v, bool):
        raise ValueError(f"{where}.{key}: expected true or false")
    return v


def parse_dmar(raw: Any) -> DmarSpec:
    """Validate the ``dmar`` key of a machine description (absent: nothing declared)."""
    if raw is None:
        return DmarSpec()
    if not isinstance(raw, Mapping):
        raise ValueError(
            "machine.dmar: expected a table with host_address_width and rmrr/atsr/satc lists"
        )
    _check(raw, {"host_address_width", "rmrr", "atsr", "satc"}, "machine.dmar")
    haw = raw.get("host_address_width", DEFAULT_HOST_ADDRESS_WIDTH)
    if not isinstance(haw, int) or isinstance(haw, bool) or not 1 <= haw <= 256:
        raise ValueError(
            "machine.dmar.host_address_width: expected 1..256 (the DMAR header's HAW; "
            "its byte holds HAW - 1)"
        )
    rmrrs, atsrs, satcs = [], [], []
    for i, e in enumerate(_entries(raw.get("rmrr", []), "machine.dmar.rmrr")):
        where = f"machine.dmar.rmrr[{i}]"
        _check(e, {"base", "end", "devices", "segment"}, where)
        seg = _int(e, "segment", where, 0)
        rmrrs.append(DmarRmrr(_int(e, "base", where), _int(e, "end", where), _scope(e, where), seg))
    for i, e in enumerate(_entries(raw.get("atsr", []), "machine.dmar.atsr")):
        where = f"machine.dmar.atsr[{i}]"
        _check(e, {"all_ports", "devices", "segment"}, where)
        atsrs.append(
            DmarAtsr(_flag(e, "all_ports", where), _scope(e, where), _int(e, "segment", where, 0))
        )
    for i, e in enumerate(_entries(raw.get("satc", []), "machine.dmar.satc")):
        where = f"machine.dmar.satc[{i}]"
        _check(e, {"atc_required", "devices", "segment"}, where)
        satcs.append(
            DmarSatc(
                _flag(e, "atc_required", where), _scope(e, where), _int(e, "segment", where, 0)
            )
        )
    return DmarSpec(haw, tuple(rmrrs), tuple(atsrs), tuple(satcs))
