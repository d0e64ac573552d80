"""Reference counts of user pages (include/linux/page_ref.h, include/linux/mm.h's
``get_page``/``put_page``, mm/swap.c's ``__folio_put``).

An anonymous page a process faults in starts with one reference, its page-table
mapping's. GUP's FOLL_PIN adds ``GUP_PIN_COUNTING_BIAS`` (``try_grab_folio``), so
a page that is pinned for DMA stays allocated when ``munmap`` drops the mapping's
reference, and goes back to the allocator with the last ``put_page`` /
``unpin_user_page``.

Differences from Linux: the count lives in a per-kernel table holding only pages
whose count is not 1 (``struct page`` here is just a frame number); only order-0
pages are counted (user memory is faulted in 4 KiB at a time).
"""

from __future__ import annotations

from kernel.bug import WARN_ON
from kernel.context import KernelSlot
from kernel.mm import Page, __free_pages

GUP_PIN_COUNTING_BIAS = 1 << 10
"""What one FOLL_PIN adds to a small page's reference count."""

_REFS: KernelSlot[dict[int, int]] = KernelSlot("page_ref", dict)


def page_ref_count(page: Page) -> int:
    """``page_ref_count`` of an allocated user page."""
    return _REFS.get().get(page.pfn, 1)


def page_ref_add(page: Page, nr: int) -> None:
    """``page_ref_add``."""
    refs = _REFS.get()
    refs[page.pfn] = refs.get(page.pfn, 1) + nr


def put_page_refs(page: Page, nr: int) -> None:
    """Drop ``nr`` references; the last one frees the page (``folio_put_refs``)."""
    refs = _REFS.get()
    left = refs.pop(page.pfn, 1) - nr
    if WARN_ON(left < 0, f"page {page.pfn:#x}: reference count underflow"):
        return
    if left == 1:
        return
    if left:
        refs[page.pfn] = left
    else:
        __free_pages(page, 0)


def pages_ref_add(pages: list[Page], nr: int) -> None:
    """``page_ref_add`` of ``nr`` on each of ``pages`` (GUP grabbing a batch)."""
    refs = _REFS.get()
    get = refs.get
    for page in pages:
        pfn = page.pfn
        refs[pfn] = get(pfn, 1) + nr


def folios_put_refs(pages: list[Page], nr: int) -> None:
    """``folios_put_refs``: drop ``nr`` references from each of ``pages``; pages
    left without any are freed."""
    refs = _REFS.get()
    pop = refs.pop
    for page in pages:
        left = pop(page.pfn, 1) - nr
        if left > 1:
            refs[page.pfn] = left
        elif left == 0:
            __free_pages(page, 0)
        elif left < 0:
            WARN_ON(True, f"page {page.pfn:#x}: reference count underflow")


def get_page(page: Page) -> None:
    """``get_page``."""
    page_ref_add(page, 1)


def put_page(page: Page) -> None:
    """``put_page``: the page is freed with its last reference."""
    put_page_refs(page, 1)


def page_maybe_dma_pinned(page: Page) -> bool:
    """``folio_maybe_dma_pinned`` of a small page: its count holds a pin bias."""
    return page_ref_count(page) >= GUP_PIN_COUNTING_BIAS
