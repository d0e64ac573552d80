"""Machine presets: named, documented machine descriptions (``--machine NAME``).

Each preset is a plain description dict validated by ``hw.machine.MachineSpec``;
``--machine-file`` loads the same shape from TOML or JSON.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hw.machine import MachineSpec

DSA_BDF = "0000:00:02.0"
EDU_BDF = "0000:00:03.0"

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
}


def preset(name: str) -> MachineSpec:
    try:
        return MachineSpec.from_dict(PRESETS[name])
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown machine preset {name!r} (known: {known})") from None


def load_machine_file(path: str | Path) -> MachineSpec:
    """A machine description from ``.toml`` or ``.json`` (top-level table = machine)."""
    p = Path(path)
    text = p.read_text()
    data: Mapping[str, Any]
    if p.suffix == ".toml":
        data = tomllib.loads(text)
    elif p.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"{p}: machine files are .toml or .json")
    return MachineSpec.from_dict(data)
