"""Issue 9, C4: a DSA descriptor whose PASID is beyond what the stream's CD table
holds (SSID >= 2^S1CDMax) is stopped by the SMMU with C_BAD_SUBSTREAMID, which the
driver's event-queue handler logs, and the DSA reports its own error.

The descriptor goes in the way the CPU sends it: ENQCMDS to the shared WQ's portal,
PASID and privilege taken from the descriptor.
"""

from __future__ import annotations

from drivers.idxd.init import idxd_devices
from hw.bus import DmaResult
from hw.smmuv3.entries import Evt
from kernel.io import enqcmds
from kernel.uapi.idxd import DSA_OPCODE_MEMMOVE, IDXD_OP_FLAG_CRAV, IDXD_OP_FLAG_RCR, DsaHwDesc
from tests.drivers.arm_smmu_v3.conftest import Boot, unit
from tests.drivers.arm_smmu_v3.machines import DSA_SID

SSIDSIZE = 8
BAD_PASID = (1 << SSIDSIZE) + 5


def test_pasid_beyond_s1cdmax_is_c_bad_substreamid_and_a_dsa_error(smmu_boot: Boot) -> None:
    k = smmu_boot("", {"ssidsize": SSIDSIZE}, builtins=("drivers.arm_smmu_v3", "drivers.idxd"))
    idxd = idxd_devices()[0]
    assert idxd.pasid_enabled
    wq = next(w for w in idxd.wqs if not w.dedicated and w.portal is not None)
    seen: list[tuple[int, int | None, DmaResult]] = []
    smmu = unit(k)
    orig = smmu.translate

    def spy(rid: int, pasid: int | None, priv: bool, addr: int, size: int, w: bool) -> DmaResult:
        res = orig(rid, pasid, priv, addr, size, w)
        seen.append((rid, pasid, res))
        return res

    smmu.translate = spy  # type: ignore[method-assign]
    desc = DsaHwDesc(
        pasid=BAD_PASID,
        priv=0,
        opcode=DSA_OPCODE_MEMMOVE,
        flags=IDXD_OP_FLAG_CRAV | IDXD_OP_FLAG_RCR,
        src_addr=0x1000,
        dst_addr=0x2000,
        xfer_size=64,
        completion_addr=0x3000,
    )
    assert wq.portal is not None
    assert enqcmds(wq.portal, desc.to_bytes()) == 0
    k.machine.clock.advance(1_000_000)

    bad = [(r, p, res) for r, p, res in seen if p == BAD_PASID]
    assert bad and all(r == DSA_SID for r, _, _ in bad)
    assert all(
        res.fault is not None and res.fault.reason == Evt.C_BAD_SUBSTREAMID for *_, res in bad
    )
    assert all(not res.runs for *_, res in bad)  # not one byte reached RAM
    log = k.dmesg()
    assert (
        f"event: C_BAD_SUBSTREAMID client: 0000:00:02.0 sid: {DSA_SID:#x} ssid: {BAD_PASID:#x}"
        in log
    )
    assert "idxd: software error" in log  # the completion record could not be written
    assert idxd.swerr_count == 1
