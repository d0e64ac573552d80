"""Typed register and field descriptors with access policies, and a register file.

A register *definition* is a class whose attributes are :class:`Field` descriptors
declared ``Field(msb, lsb, access, reset)`` next to the spec's names::

    class GSTS(Register):
        WIDTH = 32
        TES = Field(31, 31, Access.RO)

A :class:`RegisterFile` places definitions at offsets and is the MMIO target of a
device model. ``read``/``write`` never raise: accesses the register does not accept
(misaligned, wrong width, unmapped offset) read as zero / are dropped and are
recorded in :attr:`RegisterFile.violations`, as are writes of 1 to RsvdZ bits.

Access policies (VT-d spec 10.4 / DSA spec 9 naming):

RO      read-only; writes ignored.
RW      read/write.
RW1C    write 1 to clear; writing 0 has no effect.
RW1CS   RW1C, sticky across resets (modelled as RW1C; reset() keeps the value).
RW1S    write 1 to set; software cannot clear.
WO      write-only; the written value goes to the side effect, reads return 0.
RsvdP   reserved-and-preserved: software must write back what it read; ignored.
RsvdZ   reserved-and-zero: software must write 0; a 1 is flagged, ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import ClassVar, overload

from attrs import define, field, frozen


class Access(enum.Enum):
    RO = "RO"
    RW = "RW"
    RW1C = "RW1C"
    RW1CS = "RW1CS"
    RW1S = "RW1S"
    WO = "WO"
    RsvdP = "RsvdP"
    RsvdZ = "RsvdZ"


def genmask(msb: int, lsb: int) -> int:
    """``GENMASK(msb, lsb)``: bits msb..lsb set."""
    if msb < lsb or lsb < 0:
        raise ValueError(f"bad bit range {msb}:{lsb}")
    return ((1 << (msb - lsb + 1)) - 1) << lsb


class Field:
    """One field of a register or in-memory entry: bits ``msb..lsb``."""

    __slots__ = ("access", "doc", "lsb", "mask", "msb", "name", "reset", "width")

    def __init__(
        self, msb: int, lsb: int, access: Access = Access.RW, reset: int = 0, doc: str = ""
    ) -> None:
        self.msb = msb
        self.lsb = lsb
        self.mask = genmask(msb, lsb)
        self.width = msb - lsb + 1
        if reset >> self.width:
            raise ValueError(f"reset value {reset:#x} does not fit {self.width} bits")
        self.access = access
        self.reset = reset
        self.doc = doc
        self.name = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def get(self, value: int) -> int:
        return (value & self.mask) >> self.lsb

    def put(self, value: int, field_value: int) -> int:
        """Return ``value`` with this field replaced; ValueError if it does not fit."""
        if field_value < 0 or field_value >> self.width:
            raise ValueError(f"{self.name}={field_value:#x} does not fit in {self.width} bits")
        return (value & ~self.mask) | (field_value << self.lsb)

    def __repr__(self) -> str:
        return f"Field({self.name} {self.msb}:{self.lsb} {self.access.value})"


class Register:
    """Base of register definitions; subclasses declare :class:`Field` attributes.

    ``WIDTH`` is the register width in bits; ``SIZES`` the access sizes in bytes it
    accepts (a 64-bit register may be accessed as two dwords unless it says not);
    ``UNDECLARED`` is the policy of bits no field covers.
    """

    WIDTH: ClassVar[int] = 32
    SIZES: ClassVar[frozenset[int]] = frozenset({4})
    UNDECLARED: ClassVar[Access] = Access.RsvdZ

    FIELDS: ClassVar[tuple[Field, ...]] = ()
    RESET: ClassVar[int] = 0
    RW_MASK: ClassVar[int] = 0
    W1C_MASK: ClassVar[int] = 0
    W1S_MASK: ClassVar[int] = 0
    WO_MASK: ClassVar[int] = 0
    RSVDZ_MASK: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "SIZES" not in cls.__dict__ and cls.WIDTH == 64:
            cls.SIZES = frozenset({4, 8})
        fields: list[Field] = []
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                if isinstance(value, Field) and value not in fields:
                    fields.append(value)
        fields.sort(key=lambda f: f.lsb)
        full = genmask(cls.WIDTH - 1, 0)
        covered = 0
        masks = {a: 0 for a in Access}
        reset = 0
        for f in fields:
            if f.msb >= cls.WIDTH:
                raise ValueError(f"{cls.__name__}.{f.name} bit {f.msb} beyond width {cls.WIDTH}")
            if covered & f.mask:
                raise ValueError(f"{cls.__name__}.{f.name} overlaps another field")
            covered |= f.mask
            masks[f.access] |= f.mask
            reset |= f.reset << f.lsb
        masks[cls.UNDECLARED] |= full & ~covered
        cls.FIELDS = tuple(fields)
        cls.RESET = reset
        cls.RW_MASK = masks[Access.RW]
        cls.W1C_MASK = masks[Access.RW1C] | masks[Access.RW1CS]
        cls.W1S_MASK = masks[Access.RW1S]
        cls.WO_MASK = masks[Access.WO]
        cls.RSVDZ_MASK = masks[Access.RsvdZ]

    @classmethod
    def decode(cls, value: int) -> dict[str, int]:
        return {f.name: f.get(value) for f in cls.FIELDS}

    @classmethod
    def encode(cls, **fields: int) -> int:
        value = 0
        names = {f.name: f for f in cls.FIELDS}
        for name, v in fields.items():
            if name not in names:
                raise ValueError(f"{cls.__name__} has no field {name}")
            value = names[name].put(value, v)
        return value


class ViolationKind(enum.Enum):
    UNMAPPED = "unmapped offset"
    MISALIGNED = "misaligned access"
    WIDTH = "access width not accepted by register"
    RSVDZ = "1 written to RsvdZ bits"


@frozen
class RegViolation:
    """A register access the hardware ignored, kept for tests and dumps."""

    kind: ViolationKind
    offset: int
    size: int
    value: int
    register: str


WriteHook = Callable[["RegSlot", int, int, int], None]
"""``hook(slot, old_value, written_value, touched_mask)``; runs after the policy."""
ReadHook = Callable[["RegSlot"], int]


@define(slots=True, eq=False)
class RegSlot:
    """A register definition placed at an offset, with its current value."""

    name: str
    offset: int
    reg: type[Register]
    value: int
    reset_value: int
    on_write: WriteHook | None = None
    on_read: ReadHook | None = None
    nbytes: int = field(init=False)
    """Width in bytes (fixed by ``reg``; kept on the slot for the MMIO path)."""
    mask: int = field(init=False)
    """All ``reg.WIDTH`` bits set."""

    def __attrs_post_init__(self) -> None:
        self.nbytes = self.reg.WIDTH // 8
        self.mask = (1 << self.reg.WIDTH) - 1


_Plan = tuple[RegSlot, int, int, int, int, int, int, int]
"""A checked write's slot, shift and masks (:attr:`RegisterFile._plans`)."""


class RegisterFile:
    """The register window of one device function (a BAR or a DRHD unit)."""

    __slots__ = ("_by_dword", "_by_name", "_plans", "name", "size", "violations")

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._by_name: dict[str, RegSlot] = {}
        self._by_dword: dict[int, RegSlot] = {}
        self._plans: dict[tuple[int, int], _Plan] = {}
        """(offset, size) of an accepted write -> slot, shift, touched bits, RsvdZ
        mask, bits kept (all but the writable ones touched), writable bits touched,
        RW1C bits, RW1S bits (a layout only grows, and a slot's register class is
        fixed, so a plan stays right)."""
        self.violations: list[RegViolation] = []

    # -- layout -------------------------------------------------------------
    def add(
        self,
        reg: type[Register],
        offset: int,
        *,
        name: str | None = None,
        reset: int | None = None,
        on_write: WriteHook | None = None,
        on_read: ReadHook | None = None,
    ) -> RegSlot:
        name = name or reg.__name__
        nbytes = reg.WIDTH // 8
        if offset % 4 or offset < 0 or offset + nbytes > self.size:
            raise ValueError(f"{self.name}: {name} at {offset:#x} outside or misaligned")
        if name in self._by_name:
            raise ValueError(f"{self.name}: register {name} declared twice")
        value = reg.RESET if reset is None else reset
        slot = RegSlot(name, offset, reg, value, value, on_write, on_read)
        for dw in range(offset, offset + nbytes, 4):
            if dw in self._by_dword:
                raise ValueError(f"{self.name}: {name} overlaps {self._by_dword[dw].name}")
            self._by_dword[dw] = slot
        self._by_name[name] = slot
        return slot

    def slots(self) -> Iterator[RegSlot]:
        return iter(sorted(self._by_name.values(), key=lambda s: s.offset))

    def slot(self, name: str) -> RegSlot:
        return self._by_name[name]

    def reset(self) -> None:
        for slot in self._by_name.values():
            sticky = 0
            for f in slot.reg.FIELDS:
                if f.access is Access.RW1CS:
                    sticky |= f.mask
            slot.value = (slot.reset_value & ~sticky) | (slot.value & sticky)

    # -- model-side access (no policy) -------------------------------------
    def __getitem__(self, name: str) -> int:
        return self._by_name[name].value

    def __setitem__(self, name: str, value: int) -> None:
        slot = self._by_name[name]
        slot.value = value & slot.mask

    @overload
    def field(self, name: str, f: Field) -> int: ...
    @overload
    def field(self, name: str, f: Field, value: int) -> None: ...
    def field(self, name: str, f: Field, value: int | None = None) -> int | None:
        slot = self._by_name[name]
        if value is None:
            return f.get(slot.value)
        slot.value = f.put(slot.value, value)
        return None

    # -- bus-side access (policy applied, never raises) ---------------------
    def _locate(self, offset: int, size: int, value: int) -> tuple[RegSlot, int] | None:
        slot = self._by_dword.get(offset & ~3)
        if slot is None:
            self._flag(ViolationKind.UNMAPPED, offset, size, value, "")
            return None
        if size not in (1, 2, 4, 8) or offset % size:
            self._flag(ViolationKind.MISALIGNED, offset, size, value, slot.name)
            return None
        rel = offset - slot.offset
        if size not in slot.reg.SIZES or rel + size > slot.nbytes:
            self._flag(ViolationKind.WIDTH, offset, size, value, slot.name)
            return None
        return slot, rel * 8

    def _flag(self, kind: ViolationKind, offset: int, size: int, value: int, reg: str) -> None:
        self.violations.append(RegViolation(kind, offset, size, value, reg))

    def read(self, offset: int, size: int) -> int:
        where = self._locate(offset, size, 0)
        if where is None:
            return 0
        slot, shift = where
        value = slot.on_read(slot) if slot.on_read is not None else slot.value
        return (value >> shift) & ((1 << (size * 8)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        """A bus write: the access is checked (:meth:`_locate`) once per offset and
        size, then its slot, shift and masks are taken from :attr:`_plans` (every
        doorbell and command write comes here)."""
        plan = self._plans.get((offset, size))
        if plan is None:
            where = self._locate(offset, size, value)
            if where is None:
                return
            slot, shift = where
            reg = slot.reg
            touched = ((1 << (size * 8)) - 1) << shift
            rw = reg.RW_MASK & touched
            plan = (slot, shift, touched, reg.RSVDZ_MASK, ~rw, rw, reg.W1C_MASK, reg.W1S_MASK)
            self._plans[(offset, size)] = plan
        slot, shift, touched, rsvdz, keep, rw, w1c, w1s = plan
        written = (value << shift) & touched
        if written & rsvdz:
            self._flag(ViolationKind.RSVDZ, offset, size, value, slot.name)
        old = slot.value
        new = ((old & keep) | (written & rw)) & ~(written & w1c) | (written & w1s)
        slot.value = new
        if slot.on_write is not None:
            slot.on_write(slot, old, written, touched)
