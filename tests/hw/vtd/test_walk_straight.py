"""The straight-line 4-level second-stage walk (``Walker.walk_sl``'s first branch) gives
what the general level loop gives: the same leaf (frame, size, rights, leaf address,
granules read, memo left behind) or the same fault, over randomized tables whose
entries are mostly valid table pointers and leaves but also not present, large pages,
reserved or high bits set, SNP set, a bit of 11:3 set, and tables outside RAM. The
general loop is the same walker with the straight branch switched off (``haw_top`` 0:
no entry passes its range test)."""

from __future__ import annotations

import random

import pytest

from hw.memory import Memory
from hw.vtd.config import VtdConfig
from hw.vtd.faults import TranslationFault
from hw.vtd.walk import KIND_SL, Stage, Walker, WalkMemo

RAM = 1 << 20
"""RAM of the walker: 256 pages, a few of them tables."""
TABLES = [0x10_000 + (i << 12) for i in range(8)]


def _entry(rng: random.Random, leaf: bool) -> int:
    """A second-stage entry: usually a good pointer (or leaf), sometimes broken."""
    target = rng.choice(TABLES) if not leaf else rng.randrange(0, 1 << 28) & ~0xFFF
    e = target | rng.choice((1, 2, 3, 3, 3, 7))
    roll = rng.random()
    if roll < 0.05:
        e &= ~3  # not present
    elif roll < 0.10:
        e |= 1 << 7  # PS
    elif roll < 0.13:
        e |= 1 << rng.randrange(46, 52)  # reserved address bit
    elif roll < 0.16:
        e |= 1 << rng.randrange(52, 64)  # a high bit
    elif roll < 0.19:
        e |= 1 << 11  # SNP
    elif roll < 0.22 and not leaf:
        e = (RAM + (rng.randrange(4) << 12)) | 3  # a table outside RAM
    elif roll < 0.30:
        e |= 1 << rng.randrange(3, 12)  # an ignored, A, D or reserved low bit
    return e


def _walk(
    w: Walker, st: Stage, addr: int, write: bool, scalable: bool, memo: WalkMemo | None
) -> tuple[object, ...]:
    try:
        lf = w.walk_sl(st, addr, write, scalable, False, True, memo, False)
    except TranslationFault as f:
        return ("fault", int(f.reason))
    mem = None if memo is None else (memo.region, memo.table, memo.perms, memo.slots)
    return (lf.vpn, lf.shift, lf.phys, lf.perms, lf.pte_addr, list(lf.slots), lf.src, mem)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("sc", [True, False], ids=["sc", "no-sc"])
def test_the_straight_walk_gives_what_the_level_loop_gives(seed: int, sc: bool) -> None:
    rng = random.Random(seed)
    mem = Memory(RAM)
    cfg = VtdConfig.from_mapping({"sc": sc})
    fast, slow = Walker(mem, cfg), Walker(mem, cfg)
    slow.haw_top = 0
    for table in TABLES:
        for i in range(512):
            mem.write_u64(table + 8 * i, _entry(rng, leaf=table == TABLES[-1] or i % 5 == 0))
    straight = 0
    for _ in range(1500):
        st = Stage(KIND_SL, rng.choice(TABLES), 4)
        addr = rng.randrange(0, 1 << 48) & ~rng.choice((0, 0xFFF))
        write, scalable = rng.random() < 0.5, rng.random() < 0.5
        with_memo = rng.random() < 0.3
        got = _walk(fast, st, addr, write, scalable, WalkMemo() if with_memo else None)
        want = _walk(slow, st, addr, write, scalable, WalkMemo() if with_memo else None)
        assert got == want, (hex(addr), st)
        straight += fast.walk_sl4(st, addr, scalable, None) is not None
    assert straight > 50  # the straight branch was exercised, not only its fallbacks
