"""VT-d register offsets, capability decoders, command bits, in-memory entry bits and
queued-invalidation descriptor fields, as the driver knows them
(include/linux/intel-iommu.h, drivers/iommu/intel/iommu.h).

The driver keeps its own definitions, as Linux does: it never looks at the hardware
model. Names and values follow the C macros (``DMAR_GCMD_REG``, ``DMA_GSTS_RTPS``,
``cap_sagaw``, ``QI_EIOTLB_PASID`` ...), written as Python constants and functions.
"""

from __future__ import annotations

VTD_PAGE_SHIFT = 12
VTD_PAGE_SIZE = 1 << VTD_PAGE_SHIFT
VTD_PAGE_MASK = ((1 << 64) - 1) & ~(VTD_PAGE_SIZE - 1)
VTD_STRIDE_SHIFT = 9
VTD_STRIDE_LOW = (1 << VTD_STRIDE_SHIFT) - 1
MAX_AGAW_WIDTH = 64
MAX_AGAW_PFN_WIDTH = MAX_AGAW_WIDTH - VTD_PAGE_SHIFT

# -- register offsets (VT-d spec 10.4; facts A1) -------------------------------------------
DMAR_VER_REG = 0x0
DMAR_CAP_REG = 0x8
DMAR_ECAP_REG = 0x10
DMAR_GCMD_REG = 0x18
DMAR_GSTS_REG = 0x1C
DMAR_RTADDR_REG = 0x20
DMAR_CCMD_REG = 0x28
DMAR_FSTS_REG = 0x34
DMAR_FECTL_REG = 0x38
DMAR_FEDATA_REG = 0x3C
DMAR_FEADDR_REG = 0x40
DMAR_FEUADDR_REG = 0x44
DMAR_AFLOG_REG = 0x58
DMAR_PMEN_REG = 0x64
DMAR_PLMBASE_REG = 0x68
DMAR_PLMLIMIT_REG = 0x6C
DMAR_PHMBASE_REG = 0x70
DMAR_PHMLIMIT_REG = 0x78
DMAR_IQH_REG = 0x80
DMAR_IQT_REG = 0x88
DMAR_IQ_SHIFT = 4
DMAR_IQA_REG = 0x90
DMAR_ICS_REG = 0x9C
DMAR_IECTL_REG = 0xA0
DMAR_IEDATA_REG = 0xA4
DMAR_IEADDR_REG = 0xA8
DMAR_IEUADDR_REG = 0xAC
DMAR_IQER_REG = 0xB0
DMAR_IRTA_REG = 0xB8
DMAR_PQH_REG = 0xC0
DMAR_PQT_REG = 0xC8
DMAR_PQA_REG = 0xD0
DMAR_PRS_REG = 0xDC
DMAR_PECTL_REG = 0xE0
DMAR_PEDATA_REG = 0xE4
DMAR_PEADDR_REG = 0xE8
DMAR_PEUADDR_REG = 0xEC
DMA_PRS_PPR = 1 << 0
DMA_PRS_PRO = 1 << 1

# Registers a debugfs ``iommu_regset`` dump lists (32-bit, then 64-bit).
REGSET_32 = (
    ("VER", DMAR_VER_REG),
    ("GCMD", DMAR_GCMD_REG),
    ("GSTS", DMAR_GSTS_REG),
    ("FSTS", DMAR_FSTS_REG),
    ("FECTL", DMAR_FECTL_REG),
    ("FEDATA", DMAR_FEDATA_REG),
    ("FEADDR", DMAR_FEADDR_REG),
    ("FEUADDR", DMAR_FEUADDR_REG),
    ("ICS", DMAR_ICS_REG),
)
REGSET_64 = (
    ("CAP", DMAR_CAP_REG),
    ("ECAP", DMAR_ECAP_REG),
    ("RTADDR", DMAR_RTADDR_REG),
    ("CCMD", DMAR_CCMD_REG),
    ("IQH", DMAR_IQH_REG),
    ("IQT", DMAR_IQT_REG),
    ("IQA", DMAR_IQA_REG),
    ("IQER", DMAR_IQER_REG),
)


def DMAR_VER_MAJOR(v: int) -> int:
    return (v & 0xF0) >> 4


def DMAR_VER_MINOR(v: int) -> int:
    return v & 0x0F


# -- CAP_REG decoders (facts A2) -------------------------------------------------------------
def cap_esrtps(c: int) -> int:
    return (c >> 63) & 1


def cap_fl5lp_support(c: int) -> int:
    return (c >> 60) & 1


def cap_fl1gp_support(c: int) -> int:
    return (c >> 56) & 1


def cap_read_drain(c: int) -> int:
    return (c >> 55) & 1


def cap_write_drain(c: int) -> int:
    return (c >> 54) & 1


def cap_max_amask_val(c: int) -> int:
    return (c >> 48) & 0x3F


def cap_num_fault_regs(c: int) -> int:
    return ((c >> 40) & 0xFF) + 1


def cap_pgsel_inv(c: int) -> int:
    return (c >> 39) & 1


def cap_super_page_val(c: int) -> int:
    return (c >> 34) & 0xF


def cap_fault_reg_offset(c: int) -> int:
    return ((c >> 24) & 0x3FF) * 16


def cap_max_fault_reg_offset(c: int) -> int:
    return cap_fault_reg_offset(c) + cap_num_fault_regs(c) * 16


def cap_mgaw(c: int) -> int:
    return ((c >> 16) & 0x3F) + 1


def cap_sagaw(c: int) -> int:
    return (c >> 8) & 0x1F


def cap_caching_mode(c: int) -> int:
    return (c >> 7) & 1


def cap_rwbf(c: int) -> int:
    return (c >> 4) & 1


def cap_ndoms(c: int) -> int:
    return 1 << (4 + 2 * (c & 0x7))


# -- ECAP_REG decoders (facts A3) ------------------------------------------------------------
def ecap_smpwc(e: int) -> int:
    return (e >> 48) & 1


def ecap_flts(e: int) -> int:
    return (e >> 47) & 1


def ecap_slts(e: int) -> int:
    return (e >> 46) & 1


def ecap_slads(e: int) -> int:
    return (e >> 45) & 1


def ecap_nest(e: int) -> int:
    return (e >> 26) & 1


def ecap_smts(e: int) -> int:
    return (e >> 43) & 1


def ecap_dit(e: int) -> int:
    return (e >> 41) & 1


def ecap_pasid(e: int) -> int:
    return (e >> 40) & 1


def ecap_pss(e: int) -> int:
    return (e >> 35) & 0x1F


def ecap_srs(e: int) -> int:
    return (e >> 31) & 1


def ecap_prs(e: int) -> int:
    return (e >> 29) & 1


def ecap_pds(e: int) -> int:
    return (e >> 42) & 1


def ecap_iotlb_offset(e: int) -> int:
    return ((e >> 8) & 0x3FF) * 16


def ecap_max_iotlb_offset(e: int) -> int:
    return ecap_iotlb_offset(e) + 16


def ecap_sc_support(e: int) -> int:
    return (e >> 7) & 1


def ecap_pass_through(e: int) -> int:
    return (e >> 6) & 1


def ecap_dev_iotlb_support(e: int) -> int:
    return (e >> 2) & 1


def ecap_qis(e: int) -> int:
    return (e >> 1) & 1


def ecap_coherent(e: int) -> int:
    return e & 1


def ecap_ir_support(e: int) -> int:
    return (e >> 3) & 1


def ecap_eim_support(e: int) -> int:
    return (e >> 4) & 1


def ecap_max_handle_mask(e: int) -> int:
    return (e >> 20) & 0xF


def cap_plmr(c: int) -> int:
    return (c >> 5) & 1


def cap_phmr(c: int) -> int:
    return (c >> 6) & 1


DMA_PMEN_EPM = 1 << 31
DMA_PMEN_PRS = 1 << 0


def cap_esirtps(c: int) -> int:
    return (c >> 62) & 1


def cap_pi_support(c: int) -> int:
    return (c >> 59) & 1


# -- GCMD/GSTS (facts A4) -----------------------------------------------------------------------
DMA_GCMD_TE = 1 << 31
DMA_GCMD_SRTP = 1 << 30
DMA_GCMD_SFL = 1 << 29
DMA_GCMD_EAFL = 1 << 28
DMA_GCMD_WBF = 1 << 27
DMA_GCMD_QIE = 1 << 26
DMA_GCMD_SIRTP = 1 << 24
DMA_GCMD_IRE = 1 << 25
DMA_GCMD_CFI = 1 << 23

DMA_GSTS_TES = 1 << 31
DMA_GSTS_RTPS = 1 << 30
DMA_GSTS_FLS = 1 << 29
DMA_GSTS_AFLS = 1 << 28
DMA_GSTS_WBFS = 1 << 27
DMA_GSTS_QIES = 1 << 26
DMA_GSTS_IRTPS = 1 << 24
DMA_GSTS_IRES = 1 << 25
DMA_GSTS_CFIS = 1 << 23

DMA_RTADDR_SMT = 1 << 10

# -- CCMD (facts A6) ---------------------------------------------------------------------------
DMA_CCMD_ICC = 1 << 63
DMA_CCMD_INVL_GRANU_OFFSET = 61
DMA_CCMD_GLOBAL_INVL = 1 << 61
DMA_CCMD_DOMAIN_INVL = 2 << 61
DMA_CCMD_DEVICE_INVL = 3 << 61
DMA_CCMD_MASK_NOBIT = 0


def DMA_CCMD_FM(m: int) -> int:
    return (m & 0x3) << 32


def DMA_CCMD_SID(s: int) -> int:
    return (s & 0xFFFF) << 16


def DMA_CCMD_DID(d: int) -> int:
    return d & 0xFFFF


# -- IOTLB_REG (facts A6) -------------------------------------------------------------------------
DMA_TLB_FLUSH_GRANU_OFFSET = 60
DMA_TLB_GLOBAL_FLUSH = 1 << 60
DMA_TLB_DSI_FLUSH = 2 << 60
DMA_TLB_PSI_FLUSH = 3 << 60
DMA_TLB_READ_DRAIN = 1 << 49
DMA_TLB_WRITE_DRAIN = 1 << 48
DMA_TLB_IVT = 1 << 63


def DMA_TLB_IIRG(type: int) -> int:
    return (type >> 60) & 3


def DMA_TLB_IAIG(val: int) -> int:
    return (val >> 57) & 3


def DMA_TLB_DID(did: int) -> int:
    return (did & 0xFFFF) << 32


# -- fault reporting (facts A7) -------------------------------------------------------------------
DMA_FECTL_IM = 1 << 31

DMA_FSTS_PFO = 1 << 0
DMA_FSTS_PPF = 1 << 1
DMA_FSTS_IQE = 1 << 4
DMA_FSTS_ICE = 1 << 5
DMA_FSTS_ITE = 1 << 6
DMA_FSTS_PRO = 1 << 7


def dma_fsts_fault_record_index(s: int) -> int:
    return (s >> 8) & 0xFF


DMA_FRCD_F = 1 << 31


def dma_frcd_type(d: int) -> int:
    return (d >> 30) & 1


def dma_frcd_fault_reason(c: int) -> int:
    return c & 0xFF


def dma_frcd_source_id(c: int) -> int:
    return c & 0xFFFF


def dma_frcd_pasid_value(c: int) -> int:
    return (c >> 8) & 0xFFFFF


def dma_frcd_pasid_present(c: int) -> int:
    return (c >> 31) & 1


def dma_frcd_page_addr(d: int) -> int:
    return d & VTD_PAGE_MASK


# -- root and context entries (facts A5, A10.1, A10.2) --------------------------------------------
ROOT_ENTRY_SIZE = 16
CONTEXT_ENTRY_SIZE = 16
ROOT_ENTRY_NR = VTD_PAGE_SIZE // ROOT_ENTRY_SIZE

CONTEXT_TT_MULTI_LEVEL = 0
CONTEXT_TT_DEV_IOTLB = 1
CONTEXT_TT_PASS_THROUGH = 2
CONTEXT_PRESENT = 1 << 0
CONTEXT_FPD = 1 << 1
CONTEXT_DTE = 1 << 2
CONTEXT_PASIDE = 1 << 3
CONTEXT_PRE = 1 << 4
CONTEXT_PRE = 1 << 4


def context_pdts(pds: int) -> int:
    return (pds & 0x7) << 9


def context_tt(tt: int) -> int:
    return (tt & 3) << 2


def context_aw(aw: int) -> int:
    return aw & 7


def context_did(did: int) -> int:
    return (did & 0xFFFF) << 8


def context_domain_id(hi: int) -> int:
    return (hi >> 8) & 0xFFFF


# Domain IDs: 0 is what caching-mode hardware tags not-present entries with;
# FLPT_DEFAULT_DID tags pass-through and SVA PASID entries (iommu.h).
FLPT_DEFAULT_DID = 1
IDA_START_DID = 2

# -- paging entries (facts A11) -------------------------------------------------------------------
DMA_PTE_READ = 1 << 0
DMA_PTE_WRITE = 1 << 1
DMA_PTE_LARGE_PAGE = 1 << 7
DMA_PTE_SNP = 1 << 11
DMA_FL_PTE_PRESENT = 1 << 0
DMA_FL_PTE_US = 1 << 2
DMA_FL_PTE_ACCESS = 1 << 5
DMA_FL_PTE_DIRTY = 1 << 6
DMA_PTE_ADDR_MASK = ((1 << 52) - 1) & ~(VTD_PAGE_SIZE - 1)


def dma_pte_present(pte: int) -> bool:
    """``dma_pte_present``: R or W set (first-stage P is bit 0, the same as R)."""
    return bool(pte & 3)


def dma_pte_superpage(pte: int) -> bool:
    return bool(pte & DMA_PTE_LARGE_PAGE)


def dma_pte_addr(pte: int) -> int:
    return pte & DMA_PTE_ADDR_MASK


def agaw_to_level(agaw: int) -> int:
    return agaw + 2


def agaw_to_width(agaw: int) -> int:
    width = 30 + agaw * 9  # min_t(int, ..., MAX_AGAW_WIDTH) without the min() call
    return width if width < MAX_AGAW_WIDTH else MAX_AGAW_WIDTH


def width_to_agaw(width: int) -> int:
    return (width - 30 + 8) // 9


# -- queued invalidation descriptors (facts A8, A9) -----------------------------------------------
QI_LENGTH = 256
QI_MAX_BATCHED_DESC_COUNT = 16

QI_CC_TYPE = 0x1
QI_IOTLB_TYPE = 0x2
QI_DIOTLB_TYPE = 0x3
QI_IEC_TYPE = 0x4
QI_IWD_TYPE = 0x5
QI_EIOTLB_TYPE = 0x6
QI_PC_TYPE = 0x7
QI_DEIOTLB_TYPE = 0x8
QI_PGRP_RESP_TYPE = 0x9

QI_IEC_SELECTIVE = 1 << 4


def QI_IEC_IIDEX(index: int) -> int:
    return index << 32


def QI_IEC_IM(mask: int) -> int:
    return mask << 27


QI_DESC_TYPE_NAMES = {
    QI_CC_TYPE: "cc_inv",
    QI_IOTLB_TYPE: "iotlb_inv",
    QI_DIOTLB_TYPE: "dev_tlb_inv",
    QI_IEC_TYPE: "iec_inv",
    QI_IWD_TYPE: "inv_wait",
    QI_EIOTLB_TYPE: "p_iotlb_inv",
    QI_PC_TYPE: "pc_inv",
    QI_DEIOTLB_TYPE: "p_dev_tlb_inv",
    QI_PGRP_RESP_TYPE: "page_grp_resp",
}

# desc_status values (dmar.c)
QI_FREE = 0
QI_IN_USE = 1
QI_DONE = 2
QI_ABORT = 3

QI_OPT_WAIT_DRAIN = 1 << 0


def QI_IWD_STATUS_DATA(d: int) -> int:
    return (d & 0xFFFF_FFFF) << 32


QI_IWD_STATUS_WRITE = 1 << 5
QI_IWD_FENCE = 1 << 6
QI_IWD_PRQ_DRAIN = 1 << 7

# Page group response (type 9) and its response codes.
QI_RESP_SUCCESS = 0x0
QI_RESP_INVALID = 0x1
QI_RESP_FAILURE = 0xF


def QI_PGRP_PASID_P(p: int) -> int:
    return (p & 1) << 4


def QI_PGRP_RESP_CODE(res: int) -> int:
    return (res & 0xF) << 12


def QI_PGRP_DID(rid: int) -> int:
    return (rid & 0xFFFF) << 16


def QI_PGRP_PASID(pasid: int) -> int:
    return (pasid & 0xFFFFF) << 32


def QI_PGRP_IDX(idx: int) -> int:
    return (idx & 0x1FF) << 3


def QI_PGRP_LPIG(x: int) -> int:
    return (x & 1) << 2


def QI_IOTLB_DID(did: int) -> int:
    return (did & 0xFFFF) << 16


def QI_IOTLB_DR(dr: int) -> int:
    return dr << 7


def QI_IOTLB_DW(dw: int) -> int:
    return dw << 6


def QI_IOTLB_GRAN(gran: int) -> int:
    return gran >> (DMA_TLB_FLUSH_GRANU_OFFSET - 4)


def QI_IOTLB_ADDR(addr: int) -> int:
    return addr & VTD_PAGE_MASK


def QI_IOTLB_IH(ih: int) -> int:
    return ih << 6


def QI_IOTLB_AM(am: int) -> int:
    return am


def QI_CC_FM(fm: int) -> int:
    return fm << 48


def QI_CC_SID(sid: int) -> int:
    return sid << 32


def QI_CC_DID(did: int) -> int:
    return did << 16


def QI_CC_GRAN(gran: int) -> int:
    return gran >> (DMA_CCMD_INVL_GRANU_OFFSET - 4)


def QI_DEV_IOTLB_SID(sid: int) -> int:
    return sid << 32


def QI_DEV_IOTLB_QDEP(qdep: int) -> int:
    return (qdep & 0x1F) << 16


def QI_DEV_IOTLB_ADDR(addr: int) -> int:
    return addr & VTD_PAGE_MASK


def QI_DEV_IOTLB_PFSID(pfsid: int) -> int:
    return ((pfsid & 0xF) << 12) | ((pfsid & 0xFFF0) << 48)


QI_DEV_IOTLB_SIZE = 1
QI_DEV_IOTLB_MAX_INVS = 32


def QI_PC_PASID(pasid: int) -> int:
    return pasid << 32


def QI_PC_DID(did: int) -> int:
    return did << 16


def QI_PC_GRAN(gran: int) -> int:
    return gran << 4


QI_PC_ALL_PASIDS = 0
QI_PC_PASID_SEL = 1
QI_PC_GLOBAL = 3


def QI_EIOTLB_ADDR(addr: int) -> int:
    return addr & VTD_PAGE_MASK


def QI_EIOTLB_IH(ih: int) -> int:
    return ih << 6


def QI_EIOTLB_AM(am: int) -> int:
    return am & 0x3F


def QI_EIOTLB_PASID(pasid: int) -> int:
    return pasid << 32


def QI_EIOTLB_DID(did: int) -> int:
    return (did & 0xFFFF) << 16


def QI_EIOTLB_GRAN(gran: int) -> int:
    return gran << 4


QI_GRAN_NONG_PASID = 2
QI_GRAN_PSI_PASID = 3


def QI_DEV_EIOTLB_ADDR(a: int) -> int:
    return a & VTD_PAGE_MASK


QI_DEV_EIOTLB_SIZE = 1 << 11


def QI_DEV_EIOTLB_PASID(p: int) -> int:
    return (p & 0xFFFFF) << 32


def QI_DEV_EIOTLB_SID(sid: int) -> int:
    return (sid & 0xFFFF) << 16


def QI_DEV_EIOTLB_QDEP(qd: int) -> int:
    return (qd & 0x1F) << 4


QI_DEV_EIOTLB_PFSID = QI_DEV_IOTLB_PFSID
