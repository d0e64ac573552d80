"""CRC engines of the DSA data path.

* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) for CRCGEN / COPY_CRC
  (DSA spec 8.3.x "CRC Generation"): the device starts from the seed inverted and
  inverts the result unless the descriptor asks to bypass inversion.
* CRC-16 T10-DIF (polynomial 0x8BB7, not reflected) for the DIF guard tag.

Table-driven, processed a chunk at a time; no per-call object churn.
"""

from __future__ import annotations


def _table32() -> tuple[int, ...]:
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return tuple(out)


def _table16() -> tuple[int, ...]:
    out = []
    for n in range(256):
        c = n << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x8BB7) & 0xFFFF if c & 0x8000 else (c << 1) & 0xFFFF
        out.append(c)
    return tuple(out)


_T32 = _table32()
_T16 = _table16()


def crc32c_update(crc: int, data: bytes | bytearray | memoryview) -> int:
    """Raw reflected CRC-32C register update (no pre/post inversion)."""
    t = _T32
    for b in bytes(data):
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def crc32c(data: bytes | bytearray | memoryview, seed: int = 0, invert: bool = True) -> int:
    """CRC-32C as CRCGEN computes it: with ``invert`` the register starts at
    ``~seed`` and the result is inverted (standard CRC-32C for seed 0)."""
    if invert:
        return crc32c_update(seed ^ 0xFFFFFFFF, data) ^ 0xFFFFFFFF
    return crc32c_update(seed, data)


def crc16_t10dif(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16 T10-DIF register update, starting from ``crc``."""
    t = _T16
    for b in bytes(data):
        crc = ((crc << 8) & 0xFFFF) ^ t[((crc >> 8) ^ b) & 0xFF]
    return crc
