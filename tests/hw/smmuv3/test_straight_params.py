"""The straight fill's tests (:meth:`~hw.smmuv3.slow_path.S1MissPath._params`) drop
the high part of a descriptor test only where it cannot fail: checked against the
full tests :func:`~hw.smmuv3.walk.straight` derives from the CD (Address Size bits at
or above the IPS and in 51:48), over random descriptors, for RAM below and above the
lowest bit those tests look for; and its VA test (one comparison for a lower-half
address) against the general slow path at the edges of the lower half."""

from __future__ import annotations

import random

import pytest

from hw.smmuv3.slow_path import LEAF_OUT, S1MissPath
from hw.smmuv3.walk import (
    _OA_HIGH_LEAF,
    AP2,
    LEAF_OK,
    OA_MASK,
    TABLE_OK,
    Straight,
    _half_params,
    straight,
)
from tests.hw.smmuv3.test_straight_miss import IOVA, PAGES, SSIDS, Side, _req


def _half(ips: int) -> Straight:
    """The straight parameters of a 48-bit VA half under an ``ips``-bit IPS, with
    the full tests (as :meth:`hw.smmuv3.walk.Walker.cd` derives them)."""
    above_ips = OA_MASK & ~((1 << ips) - 1)
    half = straight(
        _half_params(0x10_0000, 48, False, False, False, above_ips), _OA_HIGH_LEAF | above_ips
    )
    assert half is not None
    return half


def _descriptor(rnd: random.Random, below: int) -> int:
    """A random descriptor: mostly valid low bits, some high bits set at random."""
    low = rnd.choice((3, 3, rnd.randrange(4096)))
    if rnd.random() < 0.2:
        low |= LEAF_OK
    addr = rnd.randrange(below) & ~0xFFF
    if rnd.random() < 0.3:
        addr |= 1 << rnd.randrange(12, 64)
    return addr | low


@pytest.mark.parametrize("ips", [32, 36, 40, 42, 44, 48])
@pytest.mark.parametrize("ram_bits", [26, 32, 33, 36, 41, 48])
def test_reduced_tests_agree_with_the_full_ones(ips: int, ram_bits: int) -> None:
    ram = 1 << ram_bits
    half = _half(ips)
    table_full, leaf_full = half[4], half[5]
    _, _, _, _, table_test, leaf_test, _ = S1MissPath._params(half, False, ram)
    reduced = ram <= 1 << ips
    assert (table_test < 4096, leaf_test < 4096) == (reduced, reduced)
    rnd = random.Random(ips * 100 + ram_bits)
    for _ in range(3000):
        # A table descriptor the fill tests indexed RAM: it lies below it.
        p = _descriptor(rnd, ram) % ram
        assert (p & table_test == TABLE_OK) == (p & table_full == TABLE_OK), hex(p)
        # A leaf: any value; the fill also needs its output's page inside RAM.
        pte = _descriptor(rnd, 1 << 52)
        full = pte & leaf_full == LEAF_OK and pte & OA_MASK <= ram - 4096
        fast = pte & leaf_test == LEAF_OK and pte & LEAF_OUT <= ram - 4096
        assert fast == full, hex(pte)
        if full:
            assert pte & LEAF_OUT == pte & OA_MASK


def test_write_kind_also_tests_ap2() -> None:
    half = _half(40)
    read = S1MissPath._params(half, False, 64 << 20)
    write = S1MissPath._params(half, True, 64 << 20)
    assert write[5] == read[5] | AP2 and read[5] == LEAF_OK
    assert S1MissPath._params(half, True, 1 << 41)[5] == half[5] | AP2
    assert S1MissPath._params(None, True, 64 << 20)[3] == -1  # no address passes


def test_va_checks_around_the_lower_half_limit() -> None:
    """Addresses at and past the lower half's VA size (with TBI0 random, top-byte
    tags, bit 55, the half's last page): a unit whose one-page misses go straight
    (:attr:`S1MissPath.plain0` first) gives what the general slow path gives. Not
    vacuous: over the seeds, the straight path served misses."""
    served = 0
    for seed in range(12):
        fast, ref = Side(seed, False), Side(seed, True)
        pages = [IOVA + (i << 12) for i in range(PAGES)]
        rnd = random.Random(seed)
        for _ in range(40):
            base = rnd.choice(pages)
            high = rnd.choice((0, 0, 47, 48, 50, 54, 55, 56, 60, 63))
            addr = base | (1 << high if high else 0)
            if rnd.random() < 0.2:
                addr = (1 << 48) - 4096 + rnd.randrange(4096)
            ssid, write = rnd.choice(list(SSIDS)), rnd.random() < 0.4
            got = [_req(s, ssid, addr, 64, False, write) for s in (fast, ref)]
            assert got[0] == got[1], hex(addr)
            assert fast.state() == ref.state()
            if rnd.random() < 0.5:
                for s in (fast, ref):
                    s.rig.unit.caches.flush_tlb()
        served += ref.fills - fast.fills
    assert served > 20, "the straight path served (almost) no miss"
