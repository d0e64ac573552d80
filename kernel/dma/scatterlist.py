"""Scatterlists (include/linux/scatterlist.h, lib/scatterlist.c).

A scatterlist is a Python list of :class:`Scatterlist` entries (``sg_init_table``
returns one); ``sg_next`` is list iteration. ``dma_address``/``dma_length`` are
filled by ``dma_map_sg``.
"""

from __future__ import annotations

from attrs import define

from kernel.mm import PAGE_SIZE, Page, offset_in_page, virt_to_page


@define(eq=False)
class Scatterlist:
    """``struct scatterlist``."""

    page: Page | None = None
    offset: int = 0
    length: int = 0
    dma_address: int = 0
    dma_length: int = 0

    @property
    def phys(self) -> int:
        assert self.page is not None
        return self.page.phys + self.offset


@define(eq=False)
class SgTable:
    """``struct sg_table``: ``nents`` mapped entries of ``orig_nents``."""

    sgl: list[Scatterlist]
    nents: int = 0
    orig_nents: int = 0


def sg_init_table(nents: int) -> list[Scatterlist]:
    return [Scatterlist() for _ in range(nents)]


def sg_set_page(sg: Scatterlist, page: Page, length: int, offset: int) -> None:
    sg.page = page
    sg.length = length
    sg.offset = offset


def sg_set_buf(sg: Scatterlist, buf: int, buflen: int) -> None:
    """``sg_set_buf``: a direct-mapped buffer (it must not cross into another
    physically discontiguous page)."""
    sg_set_page(sg, virt_to_page(buf), buflen, offset_in_page(buf))


def sg_init_one(buf: int, buflen: int) -> list[Scatterlist]:
    sgl = sg_init_table(1)
    sg_set_buf(sgl[0], buf, buflen)
    return sgl


def sg_alloc_table(nents: int) -> SgTable:
    return SgTable(sg_init_table(nents), 0, nents)


def sg_dma_address(sg: Scatterlist) -> int:
    return sg.dma_address


def sg_dma_len(sg: Scatterlist) -> int:
    return sg.dma_length


__all__ = ["PAGE_SIZE", "Scatterlist", "SgTable"]
