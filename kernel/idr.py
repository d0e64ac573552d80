"""IDA: small-integer ID allocation (lib/idr.c ``ida_alloc_range`` ...).

Backed by a sorted list of allocated IDs; the lowest free ID in the range is
returned, as the kernel's IDA does. Allocation is a fault-injection site.
"""

from __future__ import annotations

from attrs import define, field
from sortedcontainers import SortedList

from kernel.bug import WARN
from kernel.errno import EINVAL, ENOMEM, ENOSPC
from kernel.fault_inject import should_fail

INT_MAX = (1 << 31) - 1


@define(eq=False)
class IDA:
    name: str = ""
    ids: SortedList[int] = field(factory=SortedList)

    def __len__(self) -> int:
        return len(self.ids)


def ida_alloc_range(ida: IDA, min_id: int, max_id: int) -> int:
    """Lowest free ID in ``[min_id, max_id]``; ENOSPC when full, EINVAL on a bad range."""
    if min_id < 0 or max_id < min_id:
        raise EINVAL(f"ida_alloc_range({min_id}, {max_id})")
    if should_fail("ida_alloc"):
        raise ENOMEM(f"ida {ida.name}: allocation failed")
    candidate = min_id
    for used in ida.ids.irange(min_id, max_id):
        if used != candidate:
            break
        candidate += 1
    if candidate > max_id:
        raise ENOSPC(f"ida {ida.name}: no free id in [{min_id}, {max_id}]")
    ida.ids.add(candidate)
    return candidate


def ida_alloc(ida: IDA) -> int:
    return ida_alloc_range(ida, 0, INT_MAX)


def ida_alloc_min(ida: IDA, min_id: int) -> int:
    return ida_alloc_range(ida, min_id, INT_MAX)


def ida_alloc_max(ida: IDA, max_id: int) -> int:
    return ida_alloc_range(ida, 0, max_id)


def ida_free(ida: IDA, id_: int) -> None:
    """Freeing an ID that is not allocated WARNs in Linux (``ida_free called for id=%d
    which is not allocated``); here it raises EINVAL so the bug cannot pass silently."""
    if id_ not in ida.ids:
        WARN(True, f"ida_free called for id={id_} which is not allocated.")
        raise EINVAL(f"ida {ida.name}: id {id_} not allocated")
    ida.ids.remove(id_)


def ida_exists(ida: IDA, id_: int) -> bool:
    return id_ in ida.ids


def ida_is_empty(ida: IDA) -> bool:
    return not ida.ids
