"""kernel.bitfield behaves as include/linux/bits.h and bitfield.h do on a 64-bit kernel.

Expected values are written out by hand (hex literals), never computed with the
helpers under test; the property test compares against a bit-by-bit reference.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.bitfield import (
    BIT,
    BIT_ULL,
    FIELD_FIT,
    FIELD_GET,
    FIELD_MAX,
    FIELD_PREP,
    GENMASK,
    GENMASK_ULL,
)


@pytest.mark.parametrize(
    ("h", "l", "expected"),
    [
        (0, 0, 0x1),
        (7, 4, 0xF0),
        (28, 27, 0x1800_0000),
        (47, 12, 0x0000_FFFF_FFFF_F000),
        (63, 63, 0x8000_0000_0000_0000),
        (63, 0, 0xFFFF_FFFF_FFFF_FFFF),
    ],
)
def test_genmask_sets_bits_h_down_to_l(h: int, l: int, expected: int) -> None:  # noqa: E741
    assert GENMASK(h, l) == expected
    assert GENMASK_ULL(h, l) == expected


@pytest.mark.parametrize(("h", "l"), [(3, 4), (64, 0), (70, 65), (5, -1)])
def test_genmask_rejects_what_c_rejects_at_build_time(h: int, l: int) -> None:  # noqa: E741
    with pytest.raises(ValueError, match=rf"GENMASK\({h}, {l}\)"):
        GENMASK(h, l)


def test_bit_is_one_bit_of_a_64_bit_word() -> None:
    assert BIT(0) == 0x1
    assert BIT(31) == 0x8000_0000
    assert BIT_ULL(63) == 0x8000_0000_0000_0000
    for bad in (-1, 64):
        with pytest.raises(ValueError, match=rf"BIT\({bad}\)"):
            BIT(bad)


def test_field_prep_shifts_the_value_into_the_field() -> None:
    assert FIELD_PREP(0xF0, 0xA) == 0xA0
    # IDR0_ST_LVL (bits 28:27) = 2-level
    assert FIELD_PREP(0x1800_0000, 1) == 0x0800_0000
    assert FIELD_PREP(0xFFFF_0000_0000_0000, 0x1234) == 0x1234_0000_0000_0000


def test_field_prep_of_a_value_that_does_not_fit_is_truncated_to_the_field() -> None:
    """C's run-time FIELD_PREP masks: 0x1A into a 4-bit field keeps 0xA."""
    assert FIELD_PREP(0xF0, 0x1A) == 0xA0
    assert FIELD_FIT(0xF0, 0x1A) is False
    assert FIELD_FIT(0xF0, 0xF) is True
    assert FIELD_FIT(0xF0, 0x10) is False


def test_field_prep_of_a_negative_value_takes_its_twos_complement() -> None:
    assert FIELD_PREP(0xF00, -1) == 0xF00
    assert FIELD_FIT(0xF00, -1) is False


def test_field_fit_ignores_bits_shifted_past_bit_63() -> None:
    """In C the value is shifted as a u64: 0x1F << 60 loses bit 64, so it "fits"."""
    assert FIELD_FIT(0xF000_0000_0000_0000, 0x1F) is True
    assert FIELD_FIT(0x2000_0000_0000_0000, 0x8) is True
    assert FIELD_FIT(0x2000_0000_0000_0000, 0x2) is False
    assert FIELD_PREP(0xF000_0000_0000_0000, 0x1F) == 0xF000_0000_0000_0000


def test_field_get_extracts_and_shifts_down() -> None:
    assert FIELD_GET(0xF0, 0xABCD) == 0xC
    assert FIELD_GET(0x1800_0000, 0xFFFF_FFFF) == 0x3
    assert FIELD_GET(0x8000_0000_0000_0000, 0x8000_0000_0000_0001) == 1


def test_field_max_is_the_largest_value_of_the_field() -> None:
    assert FIELD_MAX(0xF0) == 0xF
    assert FIELD_MAX(0x0000_FFFF_FFFF_F000) == 0xF_FFFF_FFFF


@pytest.mark.parametrize("mask", [0, -0x10, 1 << 64])
def test_field_helpers_reject_a_zero_or_oversized_mask(mask: int) -> None:
    """C refuses these at build time ("mask is zero", a mask wider than its type)."""
    for name, call in (
        ("FIELD_GET", lambda: FIELD_GET(mask, 1)),
        ("FIELD_PREP", lambda: FIELD_PREP(mask, 1)),
        ("FIELD_MAX", lambda: FIELD_MAX(mask)),
        ("FIELD_FIT", lambda: FIELD_FIT(mask, 1)),
    ):
        with pytest.raises(ValueError, match=rf"^{name}: mask .* is zero or wider than 64 bits"):
            call()


def _ref_mask(h: int, l: int) -> int:  # noqa: E741
    return sum(1 << b for b in range(l, h + 1))


@given(st.integers(0, 63), st.integers(0, 63), st.integers(0, (1 << 64) - 1))
def test_field_get_of_field_prep_round_trips_against_a_bitwise_reference(
    a: int, b: int, value: int
) -> None:
    h, l = max(a, b), min(a, b)  # noqa: E741
    mask = GENMASK(h, l)
    assert mask == _ref_mask(h, l)
    width = h - l + 1
    kept = value & ((1 << width) - 1)
    placed = sum(1 << (l + i) for i in range(width) if value >> i & 1)
    assert FIELD_PREP(mask, value) == placed
    assert FIELD_GET(mask, placed) == kept
    # C shifts in 64 bits: a value bit that lands past bit 63 is lost, not a misfit
    lands_outside_field = [i for i in range(width, 64 - l) if value >> i & 1]
    assert FIELD_FIT(mask, value) is (not lands_outside_field)
