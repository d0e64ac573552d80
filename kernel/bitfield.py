"""Bit and bit-field helpers (include/linux/bits.h, include/linux/bitfield.h).

The one home of ``BIT``/``BIT_ULL``, ``GENMASK``/``GENMASK_ULL`` and the
``FIELD_*`` accessors; drivers declare their register and table fields as masks
(``IDR0_ST_LVL = GENMASK(28, 27)``) and read and build values with ``FIELD_GET`` /
``FIELD_PREP``, as the C headers they mirror do.

Every value is a 64-bit quantity, as on a 64-bit kernel, where ``unsigned long``
and ``unsigned long long`` are both 64 bits wide: ``BIT`` and ``BIT_ULL`` (and
``GENMASK`` and ``GENMASK_ULL``) are the same function under the kernel's two names.
``U64_MAX`` (include/linux/limits.h) is kept here as the width they work in.

Differences from Linux: what C rejects at build time (``GENMASK`` with ``l > h``
or a bit past 63, a ``BIT`` past 63, a ``FIELD_*`` with a zero mask) raises
``ValueError`` naming the problem. A value too wide for its field is truncated by
``FIELD_PREP`` (C's run-time behaviour; C refuses it only for compile-time
constants); ``FIELD_FIT`` tells whether it would be.
"""

from __future__ import annotations

BITS_PER_LONG = 64
U64_MAX = (1 << BITS_PER_LONG) - 1


def BIT(nr: int) -> int:
    """``BIT(nr)``: bit ``nr`` of an ``unsigned long``."""
    if not 0 <= nr < BITS_PER_LONG:
        raise ValueError(f"BIT({nr}): bit outside 0..{BITS_PER_LONG - 1}")
    return 1 << nr


BIT_ULL = BIT
"""``BIT_ULL(nr)``: bit ``nr`` of an ``unsigned long long`` (64 bits, as ``BIT``)."""


def GENMASK(h: int, l: int) -> int:  # noqa: E741 - the kernel's parameter name
    """``GENMASK(h, l)``: bits ``h`` down to ``l`` set (``GENMASK(7, 4)`` is ``0xf0``)."""
    if not 0 <= l <= h < BITS_PER_LONG:
        raise ValueError(f"GENMASK({h}, {l}): needs 0 <= l <= h <= {BITS_PER_LONG - 1}")
    return ((1 << (h - l + 1)) - 1) << l


GENMASK_ULL = GENMASK
"""``GENMASK_ULL(h, l)``: the 64-bit mask (the same as ``GENMASK`` here)."""


def _bad_mask(what: str, mask: int) -> ValueError:
    return ValueError(f"{what}: mask {mask:#x} is zero or wider than 64 bits")


# The shift (C's ``__bf_shf``, the mask's lowest set bit) is computed inline in each
# accessor: they run on driver command and table paths, where a helper call costs.


def FIELD_PREP(mask: int, val: int) -> int:
    """``FIELD_PREP(mask, val)``: ``val`` shifted into the field ``mask``; bits of
    ``val`` that do not fit are dropped (a negative ``val`` is taken as its 64-bit
    two's complement, as C's cast to the mask's type does)."""
    if mask <= 0 or mask > U64_MAX:
        raise _bad_mask("FIELD_PREP", mask)
    return (val << ((mask & -mask).bit_length() - 1)) & mask


def FIELD_GET(mask: int, reg: int) -> int:
    """``FIELD_GET(mask, reg)``: the field ``mask`` of ``reg``, shifted down to bit 0."""
    if mask <= 0 or mask > U64_MAX:
        raise _bad_mask("FIELD_GET", mask)
    return (reg & mask) >> ((mask & -mask).bit_length() - 1)


def FIELD_MAX(mask: int) -> int:
    """``FIELD_MAX(mask)``: the largest value the field ``mask`` holds."""
    if mask <= 0 or mask > U64_MAX:
        raise _bad_mask("FIELD_MAX", mask)
    return mask >> ((mask & -mask).bit_length() - 1)


def FIELD_FIT(mask: int, val: int) -> bool:
    """``FIELD_FIT(mask, val)``: whether ``FIELD_PREP(mask, val)`` keeps every bit of
    ``val``. Computed as C computes it, in 64 bits: bits of ``val`` shifted past
    bit 63 are lost before the check, so only the bits that land below bit 64 can
    make it fail (``FIELD_FIT(BIT(61), 0x8)`` is true)."""
    if mask <= 0 or mask > U64_MAX:
        raise _bad_mask("FIELD_FIT", mask)
    return not ((val << ((mask & -mask).bit_length() - 1)) & ~mask & U64_MAX)
