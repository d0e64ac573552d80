"""MMU notifiers (mm/mmu_notifier.c): secondary MMUs that cache an mm's page tables
— an IOMMU walking ``mm->pgd`` for an SVA PASID — are told when the tables change
and when the address space goes away.

A subscriber is an :class:`MmuNotifier` with an ``ops`` object providing any of
``arch_invalidate_secondary_tlbs(mn, mm, start, end)`` (called with the CPU TLB
flush, after PTEs were cleared or downgraded, before their pages are freed),
``release(mn, mm)`` (``exit_mmap``: the tables are about to be torn down) and
``free_notifier(mn)`` (the last ``mmu_notifier_put``).

Differences from Linux: a subscription does not pin the mm (``mmgrab``): its
owner does (the SVA domain holds the mm for as long as the notifier lives); no
SRCU and no ``invalidate_range_start/end`` pair (no subscriber here mirrors pages,
as KVM does); ``mmu_notifier_put`` frees at once
instead of after a grace period.
"""

from __future__ import annotations

from typing import Any

from attrs import define

from kernel.bug import WARN_ON
from kernel.mm_types import MmStruct

ULONG_MAX = (1 << 64) - 1


@define(eq=False)
class MmuNotifier:
    """``struct mmu_notifier``; ``container`` is the object embedding it (what
    ``container_of`` finds in C)."""

    ops: Any
    container: Any = None
    mm: MmStruct | None = None
    users: int = 0


def mmu_notifier_register(subscription: MmuNotifier, mm: MmStruct) -> None:
    """``mmu_notifier_register``: subscribe to ``mm``."""
    subscription.mm = mm
    subscription.users = 1
    mm.notifier_subscriptions.append(subscription)


def mmu_notifier_unregister(subscription: MmuNotifier, mm: MmStruct) -> None:
    """``mmu_notifier_unregister``: unsubscribe; ``release`` runs first if the mm has
    not released its subscribers yet (as ``__mmu_notifier_release`` would)."""
    if subscription in mm.notifier_subscriptions:
        mm.notifier_subscriptions.remove(subscription)
        release = getattr(subscription.ops, "release", None)
        if release is not None:
            release(subscription, mm)
    subscription.mm = None


def mmu_notifier_put(subscription: MmuNotifier) -> None:
    """``mmu_notifier_put``: drop a reference; the last one unsubscribes without
    ``release`` and calls ``free_notifier``."""
    if WARN_ON(subscription.users <= 0, "mmu_notifier_put of a free notifier"):
        return
    subscription.users -= 1
    if subscription.users:
        return
    mm = subscription.mm
    if mm is not None:
        if subscription in mm.notifier_subscriptions:
            mm.notifier_subscriptions.remove(subscription)
        subscription.mm = None
    free = getattr(subscription.ops, "free_notifier", None)
    if free is not None:
        free(subscription)


def mmu_notifier_arch_invalidate_secondary_tlbs(mm: MmStruct, start: int, end: int) -> None:
    """``mmu_notifier_arch_invalidate_secondary_tlbs``: ``[start, end)`` changed
    (``start=0, end=ULONG_MAX`` for the whole address space)."""
    for sub in list(mm.notifier_subscriptions):
        fn = getattr(sub.ops, "arch_invalidate_secondary_tlbs", None)
        if fn is not None:
            fn(sub, mm, start, end)


def __mmu_notifier_release(mm: MmStruct) -> None:
    """``__mmu_notifier_release`` (from ``exit_mmap``): every subscriber's ``release``
    runs and is unhooked so later table teardown no longer calls it."""
    subs = list(mm.notifier_subscriptions)
    mm.notifier_subscriptions.clear()
    for sub in subs:
        release = getattr(sub.ops, "release", None)
        if release is not None:
            release(sub, mm)
