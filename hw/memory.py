"""Physical RAM: one anonymous memory mapping, bounds-checked, little-endian accessors.

The backing store is ``mmap`` of anonymous, unreserved memory: the host hands out a
zero page only when a byte of it is first written, so building a machine costs the
same for 64 MiB as for 64 GiB, and untouched RAM reads as zeros exactly as a
``bytearray`` would.

RAM is a list of ranges, as firmware's e820 map describes it: a server has low RAM up
to the top of low usable DRAM (TOLUD), the PCI/MMIO hole up to 4 GiB, and the rest of
its RAM from 4 GiB up. One mapping spans ``[0, size)`` (the hole costs nothing, it is
never touched); accesses to a hole are refused like accesses above ``size``.

Out-of-range accesses (above the top of RAM, or in a hole) raise :class:`BusError` (a
model-level bus error), never a Python ``IndexError``. Devices and the IOMMU turn a
``BusError`` into their own status code; the CPU side (the kernel) treats it as a
machine check.

Pages can be *watched*: a write that touches a watched page frame calls the
watchers with the frame number. IOMMU models use this to learn cheaply that a
table page they cached changed, so the shadow walk that detects stale cached
translations only runs when something could be stale.
"""

from __future__ import annotations

import bisect
import mmap
import struct
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from attrs import frozen

if TYPE_CHECKING:
    from hw.bus import CallChain

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

WatchCallback = Callable[[int], None]

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_M64 = (1 << 64) - 1
_QWORDS: dict[int, struct.Struct] = {}
# Linux's MAP_NORESERVE: no swap reserved up front, so RAM larger than the host's
# commit limit can still be described (only touched pages cost host memory).
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_LITTLE_ENDIAN = sys.byteorder == "little"
"""Whether the host's native quadword is RAM's (little-endian): then an aligned
quadword is one index into a ``Q`` view of the mapping, without struct."""


def _anonymous(size: int) -> mmap.mmap:
    """Zero-filled, demand-paged backing for ``size`` bytes of RAM."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    try:
        return mmap.mmap(-1, size, flags=flags | _MAP_NORESERVE)
    except OSError:  # pragma: no cover - a host that refuses MAP_NORESERVE
        return mmap.mmap(-1, size, flags=flags)


def _qwords(count: int) -> struct.Struct:
    """The packer of ``count`` little-endian quadwords, made once per count."""
    return _QWORDS.setdefault(count, struct.Struct(f"<{count}Q"))


class QwordView(Protocol):
    """RAM indexed by quadword (:attr:`Memory.qwords`)."""

    def __getitem__(self, index: int, /) -> int: ...


class _LeQwords:
    """:attr:`Memory.qwords` on a big-endian host: each index unpacks a little-endian
    quadword."""

    __slots__ = ("view",)

    def __init__(self, view: memoryview) -> None:
        self.view = view

    def __getitem__(self, index: int, /) -> int:  # pragma: no cover - big-endian hosts
        if index < 0 or 8 * index + 8 > len(self.view):
            raise IndexError(f"quadword {index} is outside RAM")
        v: int = _U64.unpack_from(self.view, 8 * index)[0]
        return v


@frozen
class BusError(Exception):
    """A physical access outside RAM (master abort on the memory bus)."""

    addr: int
    size: int
    write: bool

    def __str__(self) -> str:
        kind = "write" if self.write else "read"
        return f"bus error: {kind} of {self.size} bytes at {self.addr:#x} is outside RAM"


RamRanges = tuple[tuple[int, int], ...]
"""(base, size) of each RAM range, ascending and disjoint: the usable e820 entries."""


def ram_ranges(layout: int | Sequence[tuple[int, int]]) -> RamRanges:
    """Validate a RAM layout: one size from address 0, or (base, size) ranges.

    Raises ``ValueError`` naming the problem (unaligned, empty, overlapping,
    out of order); adjacent ranges are merged.
    """
    raw = [(0, layout)] if isinstance(layout, int) else list(layout)
    if not raw:
        raise ValueError("ram: no RAM ranges")
    out: list[tuple[int, int]] = []
    for base, size in raw:
        if size <= 0 or size % PAGE_SIZE or base < 0 or base % PAGE_SIZE:
            raise ValueError(
                f"ram range base {base:#x} size {size:#x}: base and size must be "
                f"multiples of {PAGE_SIZE} and the size positive"
            )
        if out and base < out[-1][0] + out[-1][1]:
            raise ValueError(f"ram range at {base:#x} overlaps or precedes the one before it")
        if out and base == out[-1][0] + out[-1][1]:
            out[-1] = (out[-1][0], out[-1][1] + size)
        else:
            out.append((base, size))
    return tuple(out)


class Memory:
    """Physical RAM: ``Memory(size)`` from address 0, or ``Memory([(base, size), ...])``.

    ``size`` is the top of RAM (one past its highest byte); ``total`` the bytes of
    RAM; ``ranges`` the (base, size) ranges. A layout with a hole builds a
    :class:`HoledMemory`, whose scalar accessors also refuse the holes; RAM in one
    piece from 0 keeps the plain accessors, which test only ``0 <= addr`` and the top.
    """

    __slots__ = (
        "_hole_hi",
        "_hole_lo",
        "_l",
        "_q",
        "_starts",
        "_watch",
        "data",
        "holes",
        "qwords",
        "ranges",
        "size",
        "view",
        "write_origin",
    )

    def __new__(cls, layout: int | Sequence[tuple[int, int]]) -> Memory:
        if cls is Memory and not isinstance(layout, int):
            ranges = ram_ranges(layout)
            if len(ranges) > 1 or ranges[0][0] != 0:
                cls = HoledMemory
        return object.__new__(cls)

    def __init__(self, layout: int | Sequence[tuple[int, int]]) -> None:
        if isinstance(layout, int) and (layout <= 0 or layout % PAGE_SIZE):
            raise ValueError(f"ram size must be a positive multiple of {PAGE_SIZE}, got {layout}")
        self.ranges = ram_ranges(layout)
        base, size = self.ranges[-1]
        self.size = base + size
        self._starts = [b for b, _ in self.ranges]
        self._hole_lo = self._hole_hi = 0
        if self.ranges[0][0] != 0 or len(self.ranges) > 1:
            self._hole_lo = 0 if self.ranges[0][0] else self.ranges[0][1]
            self._hole_hi = base
        self.holes = self._hole_hi != 0
        """Whether some address below ``size`` is not RAM."""
        self.data = _anonymous(self.size)
        self.view = memoryview(self.data)
        self._q = self.view.cast("Q")
        """The mapping as native quadwords (aligned accesses on a little-endian host)."""
        self._l = self.view.cast("I")
        """The mapping as native doublewords (aligned stores on a little-endian host)."""
        self.qwords: QwordView = (
            self.view.toreadonly().cast("Q") if _LITTLE_ENDIAN else _LeQwords(self.view)
        )
        """RAM as read-only little-endian quadwords: ``qwords[addr >> 3]`` is the
        aligned quadword at ``addr``, read without a call. For a reader that knows its
        address is RAM (the kernel walking page tables it allocated); unlike
        :meth:`read_u64` a hole reads as zeros and an index past the top raises
        ``IndexError``. Stores go through the write accessors (watchers hear of them)."""
        self._watch: dict[int, list[WatchCallback]] = {}
        self.write_origin: Callable[[], CallChain] | None = None
        """What the platform's software captures for a write a model wants to blame
        (:class:`hw.findings.CallChain`); called only on models' cold paths."""

    @property
    def total(self) -> int:
        """Bytes of RAM (the sum of the ranges; holes excluded)."""
        return sum(n for _, n in self.ranges)

    # -- bounds -------------------------------------------------------------
    def ram_run(self, addr: int, size: int) -> int:
        """How many bytes from ``addr`` (at most ``size``) are RAM, without a hole."""
        if addr < 0 or size <= 0 or addr >= self.size:
            return 0
        if not self._hole_hi:
            return min(size, self.size - addr)
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0:
            return 0
        base, n = self.ranges[i]
        return max(0, min(size, base + n - addr))

    def contains(self, addr: int, size: int) -> bool:
        if addr < 0 or size < 0 or addr + size > self.size:
            return False
        return size == 0 or self.ram_run(addr, size) == size

    def _in_hole(self, addr: int, size: int) -> bool:
        """Slow half of the hole test, for an access that meets the span from the first
        hole's start to the last hole's end (``_hole_lo``..``_hole_hi``)."""
        return self.ram_run(addr, size) != size

    def _check(self, addr: int, size: int, write: bool) -> None:
        if (
            addr < 0
            or size < 0
            or addr + size > self.size
            or (addr < self._hole_hi and addr + size > self._hole_lo and self._in_hole(addr, size))
        ):
            raise BusError(addr, size, write)

    # -- bulk ---------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        self._check(addr, size, False)
        return bytes(self.view[addr : addr + size])

    def slice(self, addr: int, size: int) -> memoryview:
        """A zero-copy view for the device data path (read side)."""
        self._check(addr, size, False)
        return self.view[addr : addr + size]

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        end = addr + size
        if (addr < 0 or end > self.size) or (
            addr < self._hole_hi and end > self._hole_lo and self._in_hole(addr, size)
        ):
            raise BusError(addr, size, True)
        self.view[addr:end] = data
        if self._watch:
            self._notify(addr, size)

    def fill(self, addr: int, size: int, byte: int = 0) -> None:
        self._check(addr, size, True)
        self.view[addr : addr + size] = bytes([byte]) * size if byte else bytes(size)
        if self._watch:
            self._notify(addr, size)

    def copy(self, dst: int, src: int, size: int) -> None:
        """memmove within RAM (overlap-safe, like ``memmove``)."""
        self._check(src, size, False)
        self._check(dst, size, True)
        self.view[dst : dst + size] = bytes(self.view[src : src + size])
        if self._watch:
            self._notify(dst, size)

    # -- scalar (little-endian) --------------------------------------------
    # struct reads/writes straight from the mapping: no slice object per access.
    # The bounds test is written out in each (not ``_check``) because table walks and
    # queue processing call these per entry; negative addresses must be refused
    # before struct sees them, as it would index from the end.
    def read_u8(self, addr: int) -> int:
        if addr < 0 or addr + 1 > self.size:
            raise BusError(addr, 1, False)
        return self.data[addr]

    def read_u16(self, addr: int) -> int:
        if addr < 0 or addr + 2 > self.size:
            raise BusError(addr, 2, False)
        v: int = _U16.unpack_from(self.data, addr)[0]
        return v

    def read_u32(self, addr: int) -> int:
        if addr < 0 or addr + 4 > self.size:
            raise BusError(addr, 4, False)
        v: int = _U32.unpack_from(self.data, addr)[0]
        return v

    def _read_u64_any(self, addr: int) -> int:
        if addr < 0 or addr + 8 > self.size:
            raise BusError(addr, 8, False)
        v: int = _U64.unpack_from(self.data, addr)[0]
        return v

    if _LITTLE_ENDIAN:
        # Page-table walks read aligned quadwords: one index into the Q view (the
        # size is a multiple of 8, so an aligned address below it is in range).
        def read_u64(self, addr: int) -> int:
            if addr & 7 or addr < 0 or addr >= self.size:
                return self._read_u64_any(addr)
            v: int = self._q[addr >> 3]
            return v

    else:  # pragma: no cover - big-endian hosts
        read_u64 = _read_u64_any

    def read_u64s(self, addr: int, count: int) -> tuple[int, ...]:
        """``count`` consecutive quadwords (a descriptor, a table entry)."""
        if addr < 0 or count < 0 or addr + 8 * count > self.size:
            raise BusError(addr, 8 * count, False)
        fmt = _QWORDS.get(count) or _qwords(count)
        return fmt.unpack_from(self.data, addr)

    def write_u8(self, addr: int, value: int) -> None:
        self._write_scalar(_U8, 1, addr, value & 0xFF)

    def write_u16(self, addr: int, value: int) -> None:
        self._write_scalar(_U16, 2, addr, value & 0xFFFF)

    def _write_u32_any(self, addr: int, value: int) -> None:
        if addr < 0 or addr + 4 > self.size:
            raise BusError(addr, 4, True)
        _U32.pack_into(self.data, addr, value & 0xFFFF_FFFF)
        if self._watch and (addr >> PAGE_SHIFT in self._watch or addr & 0xFFF > 0xFFC):
            self._notify(addr, 4)

    if _LITTLE_ENDIAN:
        # Status words and completion fields: an aligned doubleword is one index and
        # stays in its page (no struct call, whose buffer argument is parsed per call).
        def write_u32(self, addr: int, value: int) -> None:
            if addr & 3 or addr < 0 or addr >= self.size:
                self._write_u32_any(addr, value)
                return
            self._l[addr >> 2] = value & 0xFFFF_FFFF
            if self._watch and addr >> PAGE_SHIFT in self._watch:
                self._notify(addr, 4)

    else:  # pragma: no cover - big-endian hosts
        write_u32 = _write_u32_any

    def _write_u64_any(self, addr: int, value: int) -> None:
        if addr < 0 or addr + 8 > self.size:
            raise BusError(addr, 8, True)
        _U64.pack_into(self.data, addr, value & _M64)
        if self._watch and (addr >> PAGE_SHIFT in self._watch or addr & 0xFFF > 0xFF8):
            self._notify(addr, 8)

    if _LITTLE_ENDIAN:
        # Page-table stores: an aligned quadword is one index and stays in its page.
        def write_u64(self, addr: int, value: int) -> None:
            if addr & 7 or addr < 0 or addr >= self.size:
                self._write_u64_any(addr, value)
                return
            self._q[addr >> 3] = value & _M64
            if self._watch and addr >> PAGE_SHIFT in self._watch:
                self._notify(addr, 8)

    else:  # pragma: no cover - big-endian hosts
        write_u64 = _write_u64_any

    def write_u64s(self, addr: int, values: Sequence[int]) -> None:
        """Consecutive quadwords (a queue descriptor), each truncated to 64 bits."""
        count = len(values)
        if addr < 0 or addr + 8 * count > self.size:
            raise BusError(addr, 8 * count, True)
        fmt = _QWORDS.get(count) or _qwords(count)
        # packed, then stored by a slice of the view (pack_into parses its buffer
        # argument on every call, a cold path in the interpreter)
        try:
            self.view[addr : addr + 8 * count] = fmt.pack(*values)
        except struct.error:  # a value outside 0..2**64-1: store its low 64 bits
            self.view[addr : addr + 8 * count] = fmt.pack(*[v & _M64 for v in values])
        if self._watch:
            self._notify(addr, 8 * count)

    def _write_scalar(self, fmt: struct.Struct, size: int, addr: int, value: int) -> None:
        if addr < 0 or addr + size > self.size:
            raise BusError(addr, size, True)
        fmt.pack_into(self.data, addr, value)
        if self._watch:
            self._notify(addr, size)

    # -- watches ------------------------------------------------------------
    def watch(self, pfn: int, callback: WatchCallback) -> None:
        """Call ``callback(pfn)`` after any write touching page frame ``pfn``."""
        cbs = self._watch.setdefault(pfn, [])
        if callback not in cbs:
            cbs.append(callback)

    def unwatch(self, pfn: int, callback: WatchCallback) -> None:
        cbs = self._watch.get(pfn)
        if cbs and callback in cbs:
            cbs.remove(callback)
            if not cbs:
                del self._watch[pfn]

    def watched(self, pfn: int) -> bool:
        return pfn in self._watch

    def _notify(self, addr: int, size: int) -> None:
        if size <= 0:
            return
        first = addr >> PAGE_SHIFT
        last = (addr + size - 1) >> PAGE_SHIFT
        watch = self._watch
        if first == last:  # a store inside one page (every table entry): one lookup
            cbs = watch.get(first)
            if cbs:
                for cb in tuple(cbs):  # a callback may unwatch
                    cb(first)
            return
        if last - first + 1 <= len(watch):
            pfns = [p for p in range(first, last + 1) if p in watch]
        else:
            pfns = sorted(p for p in watch if first <= p <= last)
        for pfn in pfns:
            for cb in list(watch.get(pfn, ())):
                cb(pfn)


class HoledMemory(Memory):
    """RAM with holes (``Memory(ranges)`` builds it when the ranges leave one).

    Each scalar accessor first refuses an access that touches a hole, then does what
    :class:`Memory`'s does. The test costs two comparisons for an access in low RAM
    or above the last hole, and a range lookup only between the first hole's start
    and the last hole's end.
    """

    __slots__ = ()

    def _hole(self, addr: int, size: int, write: bool) -> None:
        if addr < self._hole_hi and addr + size > self._hole_lo and self._in_hole(addr, size):
            raise BusError(addr, size, write)

    def read_u8(self, addr: int) -> int:
        self._hole(addr, 1, False)
        return Memory.read_u8(self, addr)

    def read_u16(self, addr: int) -> int:
        self._hole(addr, 2, False)
        return Memory.read_u16(self, addr)

    def read_u32(self, addr: int) -> int:
        self._hole(addr, 4, False)
        return Memory.read_u32(self, addr)

    # The quadword accessors (table walks, queue entries) test in line, without the
    # extra call to Memory's: that call cost them ~40% on a machine with holes.
    def read_u64(self, addr: int) -> int:
        end = addr + 8
        if (addr < 0 or end > self.size) or (
            end > self._hole_lo and addr < self._hole_hi and self._in_hole(addr, 8)
        ):
            raise BusError(addr, 8, False)
        v: int = _U64.unpack_from(self.data, addr)[0]
        return v

    def read_u64s(self, addr: int, count: int) -> tuple[int, ...]:
        end = addr + 8 * count
        if (addr < 0 or count < 0 or end > self.size) or (
            end > self._hole_lo and addr < self._hole_hi and self._in_hole(addr, 8 * count)
        ):
            raise BusError(addr, 8 * count, False)
        fmt = _QWORDS.get(count) or _qwords(count)
        return fmt.unpack_from(self.data, addr)

    def write_u32(self, addr: int, value: int) -> None:
        self._hole(addr, 4, True)
        Memory.write_u32(self, addr, value)

    def write_u64(self, addr: int, value: int) -> None:
        end = addr + 8
        if (addr < 0 or end > self.size) or (
            end > self._hole_lo and addr < self._hole_hi and self._in_hole(addr, 8)
        ):
            raise BusError(addr, 8, True)
        _U64.pack_into(self.data, addr, value & _M64)
        if self._watch and (addr >> PAGE_SHIFT in self._watch or addr & 0xFFF > 0xFF8):
            self._notify(addr, 8)

    def write_u64s(self, addr: int, values: Sequence[int]) -> None:
        self._hole(addr, 8 * len(values), True)
        Memory.write_u64s(self, addr, values)

    def _write_scalar(self, fmt: struct.Struct, size: int, addr: int, value: int) -> None:
        self._hole(addr, size, True)
        Memory._write_scalar(self, fmt, size, addr, value)
