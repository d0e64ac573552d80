"""Property tests: valid streams complete exactly once and correctly; random
64-byte descriptors always get a status and write nothing outside what they name."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hw.uapi import idxd
from hw.uapi.idxd import DsaHwDesc
from tests.hw.dsa.dsa_helpers import BUF, CR_BASE, Dsa, desc

SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from([3, 4]), st.integers(0, 4096), st.integers(0, 255)),
        min_size=1,
        max_size=20,
    )
)
def test_valid_streams_complete_once_with_correct_results(ops: list[tuple[int, int, int]]) -> None:
    t = Dsa(ram="8M")
    t.bring_up()
    events: list[int] = []
    t.m.set_hw_trace_sink(
        lambda n, ts, f: events.append(1) if n == "hw_dsa:descriptor_complete" else None
    )
    expect: dict[int, bytes] = {}
    for i, (op, size, byte) in enumerate(ops):
        src, dst = BUF + i * 0x2000, BUF + 0x100000 + i * 0x2000
        data = bytes([byte]) * size
        t.m.memory.write(src, data)
        d = desc(op, cr=CR_BASE + 32 * i, dst_addr=dst, xfer_size=size)
        d.src_addr = src if op == 3 else int.from_bytes(bytes([byte]) * 8, "little")
        t.submit(d)
        t.run() if i % 15 == 14 else None
        expect[dst] = data
    t.run()
    assert len(events) == len(ops)
    for i, (dst, data) in enumerate(expect.items()):
        assert t.record(CR_BASE + 32 * i).status == 1
        assert t.m.memory.read(dst, len(data)) == data


@SETTINGS
@given(
    st.binary(min_size=64, max_size=64),
    st.sampled_from([0, 1, 2, 3, 4, 5, 7, 9, 0x10, 0x12, 0x15, 0x20]),
)
def test_random_descriptors_get_a_status_and_stay_in_bounds(raw: bytes, op: int) -> None:
    t = Dsa(ram="8M")
    t.bring_up(((0, True), (1, False)))
    d = DsaHwDesc.from_bytes(raw)
    d.opcode = op
    d.flags |= idxd.IDXD_OP_FLAG_CRAV | idxd.IDXD_OP_FLAG_RCR
    d.completion_addr = CR_BASE
    # keep addresses inside a 1 MiB window so "outside what it names" is checkable
    for name in ("src_addr", "dst_addr"):
        setattr(d, name, BUF + getattr(d, name) % 0x40000)
    d.xfer_size %= 0x20000
    before = t.m.memory.read(0, 4 << 20)
    t.submit(d)
    t.m.enqcmds(t.portal(1), d.to_bytes())
    t.run()
    rec = t.record()
    assert rec.status != 0 or t.swerr()[0] & 1
    after = t.m.memory.read(0, 4 << 20)
    changed = [
        i // 4096 for i in range(0, len(after), 4096) if after[i : i + 4096] != before[i : i + 4096]
    ]
    allowed = {CR_BASE // 4096} | set(range(BUF // 4096, (BUF + 0x80000) // 4096))
    assert set(changed) <= allowed
