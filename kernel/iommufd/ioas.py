"""drivers/iommu/iommufd/ioas.c (Linux 6.12): the IOAS object and its ioctls
(IOMMU_IOAS_ALLOC, _MAP, _UNMAP, _COPY, _IOVA_RANGES, _ALLOW_IOVAS, and the
IOMMU_OPTION_HUGE_PAGES option).

Checks and errnos follow upstream in its order: non-zero reserved fields and
unknown flags are EOPNOTSUPP, an IOVA or length of ``ULONG_MAX`` or more is
EOVERFLOW, a map that is neither readable nor writable is EINVAL, an unknown IOAS
is ENOENT, a writable copy of read-only pages is EPERM; the io_pagetable answers
the rest (see :mod:`kernel.iommufd.io_pagetable`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import define, field

from kernel.errno import EINVAL, EMSGSIZE, ENOMEM, EOPNOTSUPP, EOVERFLOW, EPERM, KernelError
from kernel.fault_inject import should_fail
from kernel.iommu.iommu_h import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE, ULONG_MAX
from kernel.iommufd import user
from kernel.iommufd.io_pagetable import (
    IoPagetable,
    IoptPagesList,
    iopt_disable_large_pages,
    iopt_enable_large_pages,
    iopt_get_pages,
    iopt_map_pages,
    iopt_set_allow_iova,
    iopt_unmap_all,
    iopt_unmap_iova,
)
from kernel.iommufd.main import (
    IOMMUFD_OBJ_IOAS,
    IOPT_PAGES_ACCOUNT_MM,
    IOPT_PAGES_ACCOUNT_NONE,
    IommufdCtx,
    IommufdObject,
    IommufdUcmd,
    get_ioas,
    iommufd_object_abort_and_destroy,
    iommufd_object_alloc,
    iommufd_object_finalize,
    iommufd_put_object,
    iommufd_ucmd_respond,
)
from kernel.iommufd.pages import iopt_alloc_pages, iopt_release_pages
from kernel.uapi import iommufd as uapi

if TYPE_CHECKING:
    from kernel.iommufd.hw_pagetable import IommufdHwptPaging

U64_MAX = (1 << 64) - 1
MAP_FLAGS = (
    uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_WRITEABLE | uapi.IOMMU_IOAS_MAP_READABLE
)


@define(eq=False)
class IommufdIoas(IommufdObject):
    """``struct iommufd_ioas``: an io_pagetable and the paging HWPTs made from it."""

    iopt: IoPagetable = field(factory=IoPagetable, repr=False)
    hwpt_list: list[IommufdHwptPaging] = field(factory=list, repr=False)

    def destroy(self) -> None:
        """``iommufd_ioas_destroy``: unmap everything (the HWPTs, which hold the IOAS,
        are gone already)."""
        iopt_unmap_all(self.iopt)


def iommufd_ioas_alloc(ictx: IommufdCtx) -> IommufdIoas:
    """``iommufd_ioas_alloc``: an IOAS whose id is reserved, not yet finalized."""
    return iommufd_object_alloc(ictx, lambda: IommufdIoas(ictx, IOMMUFD_OBJ_IOAS))


def iommufd_ioas_alloc_ioctl(ucmd: IommufdUcmd) -> None:
    """``iommufd_ioas_alloc_ioctl`` (IOMMU_IOAS_ALLOC)."""
    cmd: uapi.iommu_ioas_alloc = ucmd.cmd
    if cmd.flags:
        raise EOPNOTSUPP(f"IOAS_ALLOC flags {cmd.flags:#x}")
    ioas = iommufd_ioas_alloc(ucmd.ictx)
    cmd.out_ioas_id = ioas.id
    try:
        iommufd_ucmd_respond(ucmd, uapi.iommu_ioas_alloc.SIZE)
    except KernelError:
        iommufd_object_abort_and_destroy(ucmd.ictx, ioas)
        raise
    iommufd_object_finalize(ucmd.ictx, ioas)


def iommufd_ioas_iova_ranges(ucmd: IommufdUcmd) -> None:
    """``iommufd_ioas_iova_ranges`` (IOMMU_IOAS_IOVA_RANGES): the holes between the
    reserved ranges, as many as fit in the user's array; EMSGSIZE (after updating
    ``num_iovas`` to the count needed) when they do not all fit."""
    cmd: uapi.iommu_ioas_iova_ranges = ucmd.cmd
    if cmd.reserved:
        raise EOPNOTSUPP("iova_ranges.__reserved is not zero")
    ioas = get_ioas(ucmd.ictx, cmd.ioas_id)
    try:
        iopt = ioas.iopt
        max_iovas = cmd.num_iovas
        cmd.num_iovas = 0
        cmd.out_iova_alignment = iopt.iova_alignment
        at = 0
        holes: list[tuple[int, int]] = []
        for r in sorted(iopt.reserved, key=lambda r: r.start):
            if r.start > at:
                holes.append((at, r.start - 1))
            at = max(at, r.last + 1) if r.last < ULONG_MAX else ULONG_MAX + 1
        if at <= ULONG_MAX:
            holes.append((at, ULONG_MAX))
        size = uapi.iommu_iova_range.SIZE
        for start, last in holes:
            if cmd.num_iovas < max_iovas:
                user.copy_to_user(
                    cmd.allowed_iovas + cmd.num_iovas * size,
                    uapi.iommu_iova_range(start, last).to_bytes(),
                )
            cmd.num_iovas += 1
        iommufd_ucmd_respond(ucmd, uapi.iommu_ioas_iova_ranges.SIZE)
        if cmd.num_iovas > max_iovas:
            raise EMSGSIZE(f"{cmd.num_iovas} ranges, room for {max_iovas}")
    finally:
        iommufd_put_object(ucmd.ictx, ioas)


def iommufd_ioas_allow_iovas(ucmd: IommufdUcmd) -> None:
    """``iommufd_ioas_allow_iovas`` (IOMMU_IOAS_ALLOW_IOVAS): replace the allowed
    ranges (an empty list allows everything again)."""
    cmd: uapi.iommu_ioas_allow_iovas = ucmd.cmd
    if cmd.reserved:
        raise EOPNOTSUPP("allow_iovas.__reserved is not zero")
    ioas = get_ioas(ucmd.ictx, cmd.ioas_id)
    try:
        size = uapi.iommu_iova_range.SIZE
        ranges: list[tuple[int, int]] = []
        for i in range(cmd.num_iovas):
            r = uapi.iommu_iova_range.from_bytes(
                user.copy_from_user(cmd.allowed_iovas + i * size, size)
            )
            if r.start > r.last:
                raise EINVAL(f"allowed range {r.start:#x}-{r.last:#x} is inverted")
            if should_fail("kmalloc"):
                raise ENOMEM("allowed range node (injected)")
            ranges.append((r.start, r.last))
        iopt_set_allow_iova(ioas.iopt, ranges)
    finally:
        iommufd_put_object(ucmd.ictx, ioas)


def conv_iommu_prot(flags: int) -> int:
    """``conv_iommu_prot``: IOMMU_CACHE always, plus the access the flags grant."""
    prot = IOMMU_CACHE
    if flags & uapi.IOMMU_IOAS_MAP_WRITEABLE:
        prot |= IOMMU_WRITE
    if flags & uapi.IOMMU_IOAS_MAP_READABLE:
        prot |= IOMMU_READ
    return prot


def iopt_map_user_pages(
    ictx: IommufdCtx, ioas: IommufdIoas, iova: int | None, uptr: int, length: int, prot: int
) -> int:
    """``iopt_map_user_pages``: pages for the user range, mapped at ``iova`` (None:
    allocated); the pages are freed again if the map fails."""
    if not length:
        raise EINVAL("map of length 0")
    if uptr + length - 1 > ULONG_MAX:
        raise EOVERFLOW(f"user range {uptr:#x} + {length:#x} wraps")
    pages, offset = iopt_alloc_pages(uptr, length, bool(prot & IOMMU_WRITE))
    if ictx.account_mode == IOPT_PAGES_ACCOUNT_MM and pages.account_mode != IOPT_PAGES_ACCOUNT_NONE:
        pages.account_mode = IOPT_PAGES_ACCOUNT_MM
    try:
        return iopt_map_pages(ioas.iopt, [IoptPagesList(pages, offset, length)], length, iova, prot)
    finally:
        if not pages.users:  # the map failed: the list's reference was the last
            iopt_release_pages(pages)


def iommufd_ioas_map(ucmd: IommufdUcmd) -> None:
    """``iommufd_ioas_map`` (IOMMU_IOAS_MAP)."""
    cmd: uapi.iommu_ioas_map = ucmd.cmd
    if cmd.flags & ~MAP_FLAGS or cmd.reserved:
        raise EOPNOTSUPP(f"IOAS_MAP flags {cmd.flags:#x}")
    if cmd.iova >= ULONG_MAX or cmd.length >= ULONG_MAX:
        raise EOVERFLOW("IOAS_MAP iova or length")
    if not cmd.flags & (uapi.IOMMU_IOAS_MAP_WRITEABLE | uapi.IOMMU_IOAS_MAP_READABLE):
        raise EINVAL("IOAS_MAP grants neither read nor write")
    ioas = get_ioas(ucmd.ictx, cmd.ioas_id)
    try:
        fixed = cmd.iova if cmd.flags & uapi.IOMMU_IOAS_MAP_FIXED_IOVA else None
        cmd.iova = iopt_map_user_pages(
            ucmd.ictx, ioas, fixed, cmd.user_va, cmd.length, conv_iommu_prot(cmd.flags)
        )
        iommufd_ucmd_respond(ucmd, uapi.iommu_ioas_map.SIZE)
    finally:
        iommufd_put_object(ucmd.ictx, ioas)


def iommufd_ioas_copy(ucmd: IommufdUcmd) -> None:
    """``iommufd_ioas_copy`` (IOMMU_IOAS_COPY): map the pages behind a source range
    into a destination IOAS, sharing the pin."""
    cmd: uapi.iommu_ioas_copy = ucmd.cmd
    if cmd.length >= ULONG_MAX or cmd.src_iova >= ULONG_MAX or cmd.dst_iova >= ULONG_MAX:
        raise EOVERFLOW("IOAS_COPY iova or length")
    if cmd.flags & ~MAP_FLAGS:
        raise EOPNOTSUPP(f"IOAS_COPY flags {cmd.flags:#x}")
    src = get_ioas(ucmd.ictx, cmd.src_ioas_id)
    try:
        pages_list = iopt_get_pages(src.iopt, cmd.src_iova, cmd.length)
    finally:
        iommufd_put_object(ucmd.ictx, src)
    prot = conv_iommu_prot(cmd.flags)
    if prot & IOMMU_WRITE and not all(p.pages.writable for p in pages_list):
        raise EPERM("writable copy of read-only pages")
    dst = get_ioas(ucmd.ictx, cmd.dst_ioas_id)
    try:
        fixed = cmd.dst_iova if cmd.flags & uapi.IOMMU_IOAS_MAP_FIXED_IOVA else None
        cmd.dst_iova = iopt_map_pages(dst.iopt, pages_list, cmd.length, fixed, prot)
        iommufd_ucmd_respond(ucmd, uapi.iommu_ioas_copy.SIZE)
    finally:
        iommufd_put_object(ucmd.ictx, dst)


def iommufd_ioas_unmap(ucmd: IommufdUcmd) -> None:
    """``iommufd_ioas_unmap`` (IOMMU_IOAS_UNMAP): ``iova`` 0 with ``length``
    U64_MAX unmaps everything; ``length`` returns the bytes unmapped."""
    cmd: uapi.iommu_ioas_unmap = ucmd.cmd
    ioas = get_ioas(ucmd.ictx, cmd.ioas_id)
    try:
        if cmd.iova == 0 and cmd.length == U64_MAX:
            unmapped = iopt_unmap_all(ioas.iopt)
        else:
            if cmd.iova >= ULONG_MAX or cmd.length >= ULONG_MAX:
                raise EOVERFLOW("IOAS_UNMAP iova or length")
            unmapped = iopt_unmap_iova(ioas.iopt, cmd.iova, cmd.length)
        cmd.length = unmapped
        iommufd_ucmd_respond(ucmd, uapi.iommu_ioas_unmap.SIZE)
    finally:
        iommufd_put_object(ucmd.ictx, ioas)


def iommufd_ioas_option(ucmd: IommufdUcmd) -> None:
    """``iommufd_ioas_option`` (IOMMU_OPTION_HUGE_PAGES on an IOAS): 1 = large pages
    allowed (the default), 0 = map single pages only (needed to split areas)."""
    cmd: uapi.iommu_option = ucmd.cmd
    ioas = get_ioas(ucmd.ictx, cmd.object_id)
    try:
        if cmd.op == uapi.IOMMU_OPTION_OP_SET:
            if cmd.val64 == 0:
                iopt_disable_large_pages(ioas.iopt)
            elif cmd.val64 == 1:
                iopt_enable_large_pages(ioas.iopt)
            else:
                raise EINVAL(f"HUGE_PAGES value {cmd.val64}")
        elif cmd.op == uapi.IOMMU_OPTION_OP_GET:
            cmd.val64 = int(not ioas.iopt.disable_large_pages)
        else:
            raise EOPNOTSUPP(f"option op {cmd.op}")
    finally:
        iommufd_put_object(ucmd.ictx, ioas)
