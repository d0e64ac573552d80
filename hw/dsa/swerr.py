"""SWERR: errors that cannot be reported in a completion record (facts B6).

Error codes in SWERR share the completion-status space (0x1A CRA_XLAT, 0x1B
CRA_ALIGN, any status of a descriptor without a completion record ...). Portal
errors have no documented code; the model uses the values below, chosen in the
device-error range next to Intel's VDCM codes 0x51/0x52 (all unverified).
"""

from __future__ import annotations

from attrs import frozen

SWERR_BME_DISABLED = 0x51
"""Bus mastering turned off while the device was enabled (VDCM; halts, FLR needed)."""
SWERR_CMD_ACTIVE = 0x52
"""CMD written while a command was active (VDCM); the new command is dropped."""
SWERR_PORTAL_WQ = 0x53
"""Portal write to a nonexistent, disabled or IMS portal of a WQ (model code)."""
SWERR_DWQ_FULL = 0x54
"""MOVDIR64B to a dedicated WQ that already holds wq_size descriptors (model code)."""
SWERR_PORTAL_MODE = 0x55
"""MOVDIR64B to a shared WQ, or ENQCMD(S) to a dedicated WQ (model code)."""


@frozen
class SwErr:
    """One SWERR report; ``None`` fields leave the matching valid bits clear."""

    error: int
    wq: int | None = None
    opcode: int | None = None
    pasid: int = 0
    priv: bool = False
    batch_idx: int | None = None
    fault_rw: bool = False
    invalid_flags: int = 0
    fault_addr: int = 0

    def words(self) -> tuple[int, int, int]:
        qw0 = 1 | (self.error & 0xFF) << 8
        if self.opcode is not None:
            qw0 |= 1 << 2 | (self.opcode & 0xFF) << 32 | (self.pasid & 0xFFFFF) << 40
            qw0 |= int(self.priv) << 6
        if self.wq is not None:
            qw0 |= 1 << 3 | (self.wq & 0xFF) << 16
        qw0 |= int(self.fault_rw) << 5
        qw1 = (self.invalid_flags & 0xFFFFFFFF) << 32
        if self.batch_idx is not None:
            qw0 |= 1 << 4
            qw1 |= self.batch_idx & 0xFFFF
        return qw0, qw1, self.fault_addr
