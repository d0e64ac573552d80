"""Device configuration: the knobs a machine description may set, and the
capability register values derived from them (DSA spec ch. 9, facts B1-B3).

Unknown keys and out-of-range values raise ``ValueError`` naming the key; this is
the only place the DSA model raises (at machine build time, never at run time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from hw.devconfig import check_range, from_mapping
from hw.uapi import idxd

# PCI identity (facts B1; 0x0B25 = Sapphire Rapids DSA, confirmed against Linux
# drivers/dma/idxd/registers.h PCI_DEVICE_ID_INTEL_DSA_SPR0).
PCI_VENDOR_ID_INTEL = 0x8086
PCI_DEVICE_ID_INTEL_DSA_SPR0 = 0x0B25
PCI_CLASS_SYSTEM_OTHER = 0x088000

DSA_OPCODES_V1 = (
    idxd.DSA_OPCODE_NOOP,
    idxd.DSA_OPCODE_BATCH,
    idxd.DSA_OPCODE_DRAIN,
    idxd.DSA_OPCODE_MEMMOVE,
    idxd.DSA_OPCODE_MEMFILL,
    idxd.DSA_OPCODE_COMPARE,
    idxd.DSA_OPCODE_COMPVAL,
    idxd.DSA_OPCODE_CR_DELTA,
    idxd.DSA_OPCODE_AP_DELTA,
    idxd.DSA_OPCODE_DUALCAST,
    idxd.DSA_OPCODE_CRCGEN,
    idxd.DSA_OPCODE_COPY_CRC,
    idxd.DSA_OPCODE_DIF_CHECK,
    idxd.DSA_OPCODE_DIF_INS,
    idxd.DSA_OPCODE_DIF_STRP,
    idxd.DSA_OPCODE_DIF_UPDT,
    idxd.DSA_OPCODE_CFLUSH,
)


@frozen
class DsaConfig:
    """Sizes and capabilities of one DSA instance (defaults resemble one SPR DSA)."""

    device_id: int = PCI_DEVICE_ID_INTEL_DSA_SPR0
    version: int = 0x100
    num_wqs: int = 8
    num_engines: int = 4
    num_groups: int = 4
    total_wq_size: int = 128
    max_xfer_shift: int = 31
    max_batch_shift: int = 10
    shared_wq: bool = True
    dedicated_wq: bool = True
    block_on_fault: bool = True
    overlap_copy: bool = True
    cache_control: bool = True
    config_en: bool = True
    int_handles: bool = False
    wq_op_config: bool = False
    wq_prs_disable: bool = False
    pri_capacity: int = 512
    """PRI Outstanding Page Request Capacity."""
    read_buffers: int = 96
    pasid_width: int = 20
    pasid_priv: bool = True
    cmd_latency_ns: int = 1_000
    desc_latency_ns: int = 200
    bytes_per_ns: int = 30

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | None) -> DsaConfig:
        cfg = from_mapping(cls, config, "dsa config")
        cfg._validate()
        return cfg

    def _validate(self) -> None:
        limits = {
            "device_id": (0, 0xFFFF),
            "version": (0x100, 0x100),
            "num_wqs": (1, 64),
            "num_engines": (1, 64),
            "num_groups": (1, 16),
            "total_wq_size": (1, 0xFFFF),
            "max_xfer_shift": (12, 31),
            "max_batch_shift": (1, 15),
            "read_buffers": (0, 255),
            "pasid_width": (1, 20),
            "pri_capacity": (0, 0xFFFF_FFFF),
            "cmd_latency_ns": (0, 10**9),
            "desc_latency_ns": (0, 10**9),
            "bytes_per_ns": (1, 10**6),
        }
        for key, (lo, hi) in limits.items():
            check_range("dsa config", key, getattr(self, key), lo, hi)
        if not (self.shared_wq or self.dedicated_wq):
            raise ValueError("dsa config: shared_wq and dedicated_wq cannot both be false")
        if not self.config_en and not self.dedicated_wq:
            raise ValueError("dsa config: config_en=false needs dedicated_wq (preconfigured WQ 0)")

    # -- derived ------------------------------------------------------------
    @property
    def msix_vectors(self) -> int:
        """Vector 0 = misc; one completion vector per WQ (facts B1)."""
        return self.num_wqs + 1

    @property
    def wqcfg_size(self) -> int:
        return 64 if self.wq_op_config else 32

    @property
    def max_xfer(self) -> int:
        return 1 << self.max_xfer_shift

    @property
    def max_batch(self) -> int:
        return 1 << self.max_batch_shift

    @property
    def gencap(self) -> int:
        """GENCAP (0x10), facts B3."""
        v = int(self.block_on_fault) | int(self.overlap_copy) << 1
        v |= int(self.cache_control) << 2 | int(self.cache_control) << 3 | 1 << 4
        v |= self.max_xfer_shift << 16 | self.max_batch_shift << 21
        return v | int(self.config_en) << 31

    @property
    def wqcap(self) -> int:
        """WQCAP (0x20): no ATS-disable, priority or occupancy support."""
        v = self.total_wq_size | self.num_wqs << 16 | int(self.wq_op_config) << 24
        v |= int(self.shared_wq) << 48 | int(self.dedicated_wq) << 49
        return v | int(self.wq_op_config) << 54 | int(self.wq_prs_disable) << 55

    @property
    def grpcap(self) -> int:
        return self.num_groups | self.read_buffers << 8

    @property
    def engcap(self) -> int:
        return self.num_engines

    @property
    def opcap(self) -> int:
        return sum(1 << op for op in DSA_OPCODES_V1)

    @property
    def cmdcap(self) -> int:
        """CMDCAP (0xB0): commands 1-12, plus 13/14 when interrupt handles are used."""
        v = sum(1 << c for c in range(1, 13))
        if self.int_handles:
            v |= 1 << 13 | 1 << 14
        return v
