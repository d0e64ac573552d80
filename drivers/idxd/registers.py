"""drivers/dma/idxd/registers.h: BAR0 register offsets, bit fields, command and
status codes of the DSA device, as the driver knows them.

The driver's own copy (it never imports the hardware model), as Linux keeps its
own ``registers.h``. Bit fields are :class:`Bits` descriptors (``msb, lsb``, read
and built with :mod:`kernel.bitfield`) instead of C bitfield unions; values come
from the DSA specification as recorded in the facts (B2-B11).
"""

from __future__ import annotations

from attrs import frozen

from kernel.bitfield import BIT, FIELD_GET, FIELD_PREP, GENMASK_ULL

PCI_VENDOR_ID_INTEL = 0x8086
PCI_DEVICE_ID_INTEL_DSA_SPR0 = 0x0B25

IDXD_MMIO_BAR = 0
IDXD_WQ_BAR = 2
IDXD_PORTAL_SIZE = 0x1000
IDXD_PORTAL_UNLIMITED = 0
IDXD_PORTAL_LIMITED = 1
IDXD_IRQ_MSIX = 0
IDXD_IRQ_IMS = 1

DEVICE_VERSION_1 = 0x100
DEVICE_VERSION_2 = 0x200

IDXD_VER_OFFSET = 0x00
IDXD_GENCAP_OFFSET = 0x10
IDXD_WQCAP_OFFSET = 0x20
IDXD_GRPCAP_OFFSET = 0x30
IDXD_ENGCAP_OFFSET = 0x38
IDXD_OPCAP_OFFSET = 0x40
IDXD_OPCAP_NOREAD = 4
IDXD_TABLE_OFFSET = 0x60
IDXD_TABLE_MULT = 0x100
IDXD_GENCFG_OFFSET = 0x80
IDXD_GENCTRL_OFFSET = 0x88
IDXD_GENSTATS_OFFSET = 0x90
IDXD_INTCAUSE_OFFSET = 0x98
IDXD_CMD_OFFSET = 0xA0
IDXD_CMDSTS_OFFSET = 0xA8
IDXD_CMDCAP_OFFSET = 0xB0
IDXD_SWERR_OFFSET = 0xC0

GRPCFG_SIZE = 64
MSIX_PERM_STRIDE = 8
WQCFG_STRIDES_32 = 8
IDXD_OPCAP_MEMMOVE = 1 << 3

# GENSTS.state
IDXD_DEVICE_STATE_DISABLED = 0
IDXD_DEVICE_STATE_ENABLED = 1
IDXD_DEVICE_STATE_DRAIN = 2
IDXD_DEVICE_STATE_HALT = 3
# GENSTS.reset_type
IDXD_DEVICE_RESET_SOFTWARE = 0
IDXD_DEVICE_RESET_FLR = 1
IDXD_DEVICE_RESET_WARM = 2
IDXD_DEVICE_RESET_COLD = 3

# INTCAUSE
IDXD_INTC_ERR = 0x01
IDXD_INTC_CMD = 0x02
IDXD_INTC_OCCUPY = 0x04
IDXD_INTC_PERFMON_OVFL = 0x08
IDXD_INTC_HALT_STATE = 0x10
IDXD_INTC_EVL = 0x20
IDXD_INTC_INT_HANDLE_REVOKED = 0x80000000

# CMD codes
IDXD_CMD_ENABLE_DEVICE = 1
IDXD_CMD_DISABLE_DEVICE = 2
IDXD_CMD_DRAIN_ALL = 3
IDXD_CMD_ABORT_ALL = 4
IDXD_CMD_RESET_DEVICE = 5
IDXD_CMD_ENABLE_WQ = 6
IDXD_CMD_DISABLE_WQ = 7
IDXD_CMD_DRAIN_WQ = 8
IDXD_CMD_ABORT_WQ = 9
IDXD_CMD_RESET_WQ = 10
IDXD_CMD_DRAIN_PASID = 11
IDXD_CMD_ABORT_PASID = 12
IDXD_CMD_REQUEST_INT_HANDLE = 13
IDXD_CMD_RELEASE_INT_HANDLE = 14

CMD_NAMES = {
    1: "enable device",
    2: "disable device",
    3: "drain all",
    4: "abort all",
    5: "reset device",
    6: "enable wq",
    7: "disable wq",
    8: "drain wq",
    9: "abort wq",
    10: "reset wq",
    11: "drain pasid",
    12: "abort pasid",
    13: "request int handle",
    14: "release int handle",
}

# CMDSTS error codes
IDXD_CMDSTS_SUCCESS = 0x00
IDXD_CMDSTS_INVAL_CMD = 0x01
IDXD_CMDSTS_INVAL_WQIDX = 0x02
IDXD_CMDSTS_HW_ERR = 0x03
IDXD_CMDSTS_ERR_DEV_ENABLED = 0x10
IDXD_CMDSTS_ERR_CONFIG = 0x11
IDXD_CMDSTS_ERR_BUSMASTER_EN = 0x12
IDXD_CMDSTS_ERR_PASID_INVAL = 0x13
IDXD_CMDSTS_ERR_WQ_SIZE_ERANGE = 0x14
IDXD_CMDSTS_ERR_GRP_CONFIG = 0x15
IDXD_CMDSTS_ERR_GRP_CONFIG2 = 0x16
IDXD_CMDSTS_ERR_GRP_CONFIG3 = 0x17
IDXD_CMDSTS_ERR_GRP_CONFIG4 = 0x18
IDXD_CMDSTS_ERR_DEV_NOTEN = 0x20
IDXD_CMDSTS_ERR_WQ_ENABLED = 0x21
IDXD_CMDSTS_ERR_WQ_SIZE = 0x22
IDXD_CMDSTS_ERR_WQ_PRIOR = 0x23
IDXD_CMDSTS_ERR_WQ_MODE = 0x24
IDXD_CMDSTS_ERR_BOF_EN = 0x25
IDXD_CMDSTS_ERR_PASID_EN = 0x26
IDXD_CMDSTS_ERR_MAX_BATCH_SIZE = 0x27
IDXD_CMDSTS_ERR_MAX_XFER_SIZE = 0x28
IDXD_CMDSTS_ERR_DIS_DEV_EN = 0x31
IDXD_CMDSTS_ERR_DEV_NOT_EN = 0x32
IDXD_CMDSTS_ERR_INVAL_INT_IDX = 0x41
IDXD_CMDSTS_ERR_NO_HANDLE = 0x42

IDXD_CMD_TIMEOUT_US = 500_000
"""Model choice: a command not done after 500 ms of virtual time is a timeout."""


@frozen
class Bits:
    """One bit field of a register: ``msb``..``lsb`` inclusive."""

    msb: int
    lsb: int

    @property
    def mask(self) -> int:
        """``GENMASK_ULL(msb, lsb)``."""
        return GENMASK_ULL(self.msb, self.lsb)

    def get(self, value: int) -> int:
        """``FIELD_GET`` of this field."""
        return FIELD_GET(self.mask, value)

    def put(self, value: int, field: int) -> int:
        """``value`` with this field replaced by ``FIELD_PREP(mask, field)`` (a
        ``field`` too wide for it is truncated, as FIELD_PREP does)."""
        mask = self.mask
        return (value & ~mask) | FIELD_PREP(mask, field)


# GENCAP (union gen_cap_reg)
GENCAP_BLOCK_ON_FAULT = Bits(0, 0)
GENCAP_OVERLAP_COPY = Bits(1, 1)
GENCAP_CACHE_CONTROL_MEM = Bits(2, 2)
GENCAP_CACHE_CONTROL_CACHE = Bits(3, 3)
GENCAP_CMD_CAP = Bits(4, 4)
GENCAP_MAX_XFER_SHIFT = Bits(20, 16)
GENCAP_MAX_BATCH_SHIFT = Bits(24, 21)
GENCAP_CONFIG_EN = Bits(31, 31)

# WQCAP (union wq_cap_reg)
WQCAP_TOTAL_WQ_SIZE = Bits(15, 0)
WQCAP_NUM_WQS = Bits(23, 16)
WQCAP_WQCFG_SIZE = Bits(27, 24)
WQCAP_SHARED_MODE = Bits(48, 48)
WQCAP_DEDICATED_MODE = Bits(49, 49)
WQCAP_PRIORITY = Bits(51, 51)
WQCAP_OCCUPANCY = Bits(52, 52)
WQCAP_OP_CONFIG = Bits(54, 54)
WQCAP_WQ_PRS_SUPPORT = Bits(55, 55)

# GRPCAP / ENGCAP
GRPCAP_NUM_GROUPS = Bits(7, 0)
GRPCAP_TOTAL_RDBUFS = Bits(15, 8)
ENGCAP_NUM_ENGINES = Bits(7, 0)

# TABLE_OFFSETS (first qword)
TABLE_GRPCFG = Bits(15, 0)
TABLE_WQCFG = Bits(31, 16)
TABLE_MSIX_PERM = Bits(47, 32)
TABLE_IMS = Bits(63, 48)

# GENCFG / GENCTRL / GENSTS
GENCFG_RDBUF_LIMIT = Bits(7, 0)
GENCFG_USER_INT_EN = Bits(12, 12)
GENCTRL_SOFTERR_INT_EN = Bits(0, 0)
GENCTRL_HALT_INT_EN = Bits(1, 1)
GENSTS_STATE = Bits(1, 0)
GENSTS_RESET_TYPE = Bits(3, 2)

# CMD / CMDSTS
CMD_OPERAND = Bits(19, 0)
CMD_CMD = Bits(24, 20)
CMD_INT_REQ = Bits(31, 31)
CMDSTS_ERR = Bits(7, 0)
CMDSTS_RESULT = Bits(23, 8)
CMDSTS_ACTIVE = Bits(31, 31)

# SWERR qword 0
SWERR_VALID = Bits(0, 0)
SWERR_OVERFLOW = Bits(1, 1)
SWERR_DESC_VALID = Bits(2, 2)
SWERR_WQ_IDX_VALID = Bits(3, 3)
SWERR_BATCH = Bits(4, 4)
SWERR_FAULT_RW = Bits(5, 5)
SWERR_PRIV = Bits(6, 6)
SWERR_ERROR = Bits(15, 8)
SWERR_WQ_IDX = Bits(23, 16)
SWERR_OPERATION = Bits(39, 32)
SWERR_PASID = Bits(59, 40)

# WQCFG dwords (union wqcfg)
WQCFG_SIZE_IDX = 0
WQCFG_THRESH_IDX = 1
WQCFG_PASID_IDX = 2
WQCFG_PRIVL_IDX = 2
WQCFG_SHIFTS_IDX = 3
WQCFG_OCCUP_IDX = 6
WQCFG_WQ_SIZE = Bits(15, 0)
WQCFG_WQ_THRESH = Bits(15, 0)
WQCFG_MODE = Bits(0, 0)
WQCFG_BOF = Bits(1, 1)
WQCFG_PRS_DISABLE = Bits(3, 3)
WQCFG_PRIORITY = Bits(7, 4)
WQCFG_PASID = Bits(27, 8)
WQCFG_PASID_EN = Bits(28, 28)
WQCFG_PRIV = Bits(29, 29)
WQCFG_MAX_XFER_SHIFT = Bits(4, 0)
WQCFG_MAX_BATCH_SHIFT = Bits(8, 5)
WQCFG_OCCUPANCY = Bits(15, 0)
WQCFG_WQ_STATE = Bits(31, 30)

# GRPFLAGS
GRPFLAGS_TC_A = Bits(2, 0)
GRPFLAGS_TC_B = Bits(5, 3)
GRPFLAGS_USE_RDBUF_LIMIT = Bits(7, 7)
GRPFLAGS_RDBUFS_RESERVED = Bits(15, 8)
GRPFLAGS_RDBUFS_ALLOWED = Bits(27, 20)
GRPFLAGS_DESC_PROGRESS_LIMIT = Bits(33, 32)
GRPFLAGS_BATCH_PROGRESS_LIMIT = Bits(37, 36)

# MSIX_PERM (union msix_perm)
MSIX_PERM_IGNORE = Bits(2, 2)
MSIX_PERM_PASID_EN = Bits(3, 3)
MSIX_PERM_PASID = Bits(31, 12)


def idxd_get_wq_portal_offset(prot: int, irq_type: int = IDXD_IRQ_MSIX) -> int:
    """``idxd_get_wq_portal_offset``: page within a WQ's four portal pages."""
    return prot * IDXD_PORTAL_SIZE + irq_type * 2 * IDXD_PORTAL_SIZE


def idxd_get_wq_portal_full_offset(wq_id: int, prot: int, irq_type: int = IDXD_IRQ_MSIX) -> int:
    """``idxd_get_wq_portal_full_offset``: BAR2 offset of a WQ's portal page."""
    return (wq_id * 4) * IDXD_PORTAL_SIZE + idxd_get_wq_portal_offset(prot, irq_type)


def wq_cmd_operand(wq_id: int) -> int:
    """Operand of the WQ bitmask commands: ``BIT(id % 16) | (id / 16) << 16``."""
    return BIT(wq_id % 16) | ((wq_id // 16) << 16)
