"""Page allocator, kmalloc, vmalloc and the direct map (mm/page_alloc.c, mm/slab_common.c,
mm/vmalloc.c, arch/x86 ``__pa``/``__va``), with leak accounting.

Kernel virtual addresses are ints. RAM is direct-mapped at :data:`PAGE_OFFSET`
(``virt_to_phys``/``phys_to_virt``); ``vmalloc`` areas live at
:data:`VMALLOC_START` and are not physically contiguous; task stacks are vmalloc'd
(``CONFIG_VMAP_STACK``), which is what DMA-API debug's stack check relies on. A
vmalloc takes the lowest free address range (a freed one is reused), and keeps
``init_mm``'s page tables in step when they exist (kernel/init_mm.py).
Allocation functions return ``None`` on failure, as C returns ``NULL``, and each
is a fault-injection site. Every live allocation records its call site so leaks
can be listed by who made them.

Pages know what they were allocated for: :attr:`MemoryManager.pgtable` holds the
frames allocated as IOMMU page-table pages (:mod:`kernel.iommu.iommu_pages`, as
6.12's ``iommu_alloc_pages`` accounts them), and a frame leaves it when freed. IOMMU
drivers store page-table entries with :func:`pgtable_write64`, which is the
page-table ownership sanitizer: a store into any other page (a data page a walk ran
into, a freed table page) is refused and reported as a ``pt-owner`` finding with the
call chain (:mod:`kernel.findings`), as KASAN reports a bad access, so no data page
changes silently.

Differences from Linux: the page allocator is first-fit over free extents rather
than a buddy allocator (orders are honoured as alignment); kmalloc size classes
are carved from pages that stay with their class (as slab caches keep slabs); the
ownership sanitizer has no counterpart in Linux.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Protocol

from attrs import define, field, frozen
from sortedcontainers import SortedDict

from hw.bus import Finding, PhysMemory
from kernel.context import current
from kernel.errno import EFAULT, EINVAL, KernelError
from kernel.fault_inject import should_fail
from kernel.findings import call_chain, inline, report_finding

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
PAGE_OFFSET = 0xFFFF_8880_0000_0000
VMALLOC_START = 0xFFFF_C900_0000_0000
VMALLOC_SIZE = 1 << 45
THREAD_SIZE = 4 * PAGE_SIZE
RESERVED_LOW = 1 << 20
MAX_PAGE_ORDER = 10
KMALLOC_MAX_CACHE_SIZE = 8192
KMALLOC_SIZES = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)

GFP_KERNEL = 0x1
GFP_ATOMIC = 0x2
GFP_NOWAIT = 0x4
GFP_DMA32 = 0x8
__GFP_ZERO = 0x100
__GFP_NOWARN = 0x200
_ZERO = __GFP_ZERO  # usable inside classes (no name mangling)


def PAGE_ALIGN(x: int) -> int:
    return (x + PAGE_SIZE - 1) & PAGE_MASK


def get_order(size: int) -> int:
    order = 0
    while (PAGE_SIZE << order) < size:
        order += 1
    return order


@frozen(order=True)
class Page:
    """``struct page``, identified by its page frame number."""

    pfn: int

    @property
    def phys(self) -> int:
        return self.pfn << PAGE_SHIFT


@frozen
class Allocation:
    kind: str
    addr: int
    size: int
    site: str


@define
class VmArea:
    addr: int
    size: int
    pages: list[Page]
    site: str


def _caller(depth: int = 3) -> str:
    f = sys._getframe(depth)
    return f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno} {f.f_code.co_name}"


def _extent_take(free: SortedDict[int, int], n: int, align: int) -> int | None:
    """First fit of ``n`` units aligned to ``align`` from ``free`` (start -> length);
    the page allocator's free pages and vmalloc's free address space both use it."""
    for start, length in free.items():
        aligned = (start + align - 1) & ~(align - 1)
        if aligned + n <= start + length:
            del free[start]
            if aligned > start:
                free[start] = aligned - start
            end = aligned + n
            if end < start + length:
                free[end] = start + length - end
            return aligned
    return None


def _extent_give(free: SortedDict[int, int], start: int, n: int) -> None:
    """Return ``[start, start+n)`` to ``free``, merged with its neighbours."""
    end = start + n
    idx = free.bisect_left(start)
    if idx < len(free):
        nxt = free.keys()[idx]
        if nxt == end:
            n += free.pop(nxt)
    if idx > 0:
        prev = free.keys()[idx - 1]
        if prev + free[prev] == start:
            free[prev] += n
            return
    free[start] = n


class KernelPageTables(Protocol):
    """The kernel's page tables in RAM when something needs them (kernel/init_mm.py):
    vmalloc and vfree keep them in step, as ``vmap_pages_range`` and
    ``vunmap_range`` do."""

    def vmap(self, addr: int, pfns: list[int]) -> None: ...

    def vunmap(self, addr: int, size: int) -> None: ...


class WordView(Protocol):
    """RAM indexed by 64-bit word (:attr:`MemoryManager.words`)."""

    def __getitem__(self, index: int, /) -> int: ...


class _WordsByRead:
    """:attr:`MemoryManager.words` over a memory without a word view: each index is
    a ``read_u64``."""

    __slots__ = ("mem",)

    def __init__(self, mem: PhysMemory) -> None:
        self.mem = mem

    def __getitem__(self, index: int, /) -> int:
        return self.mem.read_u64(index << 3)


@define(eq=False)
class MemoryManager:
    mem: PhysMemory
    free: SortedDict[int, int] = field(factory=SortedDict)
    """Free extents: start pfn -> number of pages."""
    pages: dict[int, tuple[int, str]] = field(factory=dict)
    """Allocated blocks: first pfn -> (number of pages, call site)."""
    slab_free: dict[int, list[int]] = field(factory=dict)
    slab_pages: int = 0
    objects: dict[int, tuple[int, int, str]] = field(factory=dict)
    """Live kmalloc objects: vaddr -> (requested size, size class, site)."""
    vmalloc_areas: dict[int, VmArea] = field(factory=dict)
    vmalloc_free: SortedDict[int, int] = field(
        factory=lambda: SortedDict({VMALLOC_START >> PAGE_SHIFT: VMALLOC_SIZE >> PAGE_SHIFT})
    )
    """Free vmalloc address space in pages: start -> length (``free_vmap_area_root``)."""
    vmalloc_pfn: dict[int, int] = field(factory=dict)
    """vmalloc virtual page -> physical pfn."""
    pgtable: set[int] = field(factory=set)
    """Page frames allocated as IOMMU page-table pages (what :func:`pgtable_write64`
    accepts)."""
    total_pages: int = 0
    ram: tuple[tuple[int, int], ...] = ()
    """Usable RAM (base, size) from firmware's e820 map; empty = ``[0, mem.size)``."""
    kernel_pgtables: KernelPageTables | None = None
    """``init_mm``'s page tables once built (only the kernel-sva generation needs them)."""
    words: WordView = field(init=False)
    """RAM as 64-bit words by physical address: ``words[phys >> 3]`` is the aligned
    quadword at ``phys`` (:func:`pgtable_words`)."""

    def __attrs_post_init__(self) -> None:
        """``memblock`` from e820 (``e820__memblock_setup``), then the free lists:
        every usable page except the first megabyte; nothing in a hole."""
        words = getattr(self.mem, "qwords", None)
        self.words = words if words is not None else _WordsByRead(self.mem)
        if not self.ram:
            self.ram = ((0, self.mem.size),)
        first = RESERVED_LOW >> PAGE_SHIFT
        for base, size in self.ram:
            lo = max(base >> PAGE_SHIFT, first)
            hi = (base + size) >> PAGE_SHIFT
            if hi > lo:
                self.free[lo] = hi - lo
                self.total_pages += hi - lo

    def e820_reserve(self, first: int, last: int) -> None:
        """Keep the pages of ``[first, last]`` (E820 reserved: firmware's, such as
        RMRR memory) out of the page allocator, as memblock does at boot."""
        lo, hi = first >> PAGE_SHIFT, (last >> PAGE_SHIFT) + 1
        for start, n in list(self.free.items()):
            end = start + n
            if end <= lo or start >= hi:
                continue
            del self.free[start]
            if start < lo:
                self.free[start] = lo - start
            if end > hi:
                self.free[hi] = end - hi
            self.total_pages -= min(end, hi) - max(start, lo)

    # -- page allocator --------------------------------------------------------
    def _take(self, npages: int, align: int) -> int | None:
        return _extent_take(self.free, npages, align)

    def _give(self, pfn: int, npages: int) -> None:
        _extent_give(self.free, pfn, npages)

    def alloc_pages_n(self, npages: int, align: int, gfp: int, site: str) -> Page | None:
        if npages <= 0:
            return None
        if should_fail("alloc_pages"):
            return None
        pfn = self._take(npages, align)
        if pfn is None:
            return None
        self.pages[pfn] = (npages, site)
        if gfp & _ZERO:
            self.mem.fill(pfn << PAGE_SHIFT, npages << PAGE_SHIFT, 0)
        return Page(pfn)

    def free_pages_n(self, page: Page, npages: int) -> None:
        got = self.pages.get(page.pfn)
        if got is None or got[0] != npages:
            raise EINVAL(f"freeing pfn {page.pfn:#x} x{npages} that was not allocated as such")
        del self.pages[page.pfn]
        if self.pgtable:
            self.pgtable.difference_update(range(page.pfn, page.pfn + npages))
        self._give(page.pfn, npages)

    @property
    def free_page_count(self) -> int:
        return sum(self.free.values())

    # -- kmalloc -------------------------------------------------------------
    def kmalloc(self, size: int, gfp: int, site: str) -> int | None:
        if size <= 0:
            return None
        if size > KMALLOC_MAX_CACHE_SIZE:
            if should_fail("kmalloc"):
                return None
            order = get_order(size)
            page = self.alloc_pages_n(1 << order, 1 << order, gfp, site)
            if page is None:
                return None
            vaddr = PAGE_OFFSET + page.phys
            self.objects[vaddr] = (size, -(1 << order), site)
            return vaddr
        cls = next(c for c in KMALLOC_SIZES if c >= size)
        if should_fail("kmalloc"):
            return None
        free = self.slab_free.setdefault(cls, [])
        if not free:
            slab = max(PAGE_SIZE, cls)
            pfn = self._take(slab >> PAGE_SHIFT, 1)
            if pfn is None:
                return None
            self.pages[pfn] = (slab >> PAGE_SHIFT, "slab")
            self.slab_pages += slab >> PAGE_SHIFT
            base = PAGE_OFFSET + (pfn << PAGE_SHIFT)
            free.extend(range(base + slab - cls, base - 1, -cls))
        vaddr = free.pop()
        self.objects[vaddr] = (size, cls, site)
        if gfp & _ZERO:
            self.mem.fill(vaddr - PAGE_OFFSET, cls, 0)
        return vaddr

    def kfree(self, vaddr: int) -> None:
        obj = self.objects.pop(vaddr, None)
        if obj is None:
            raise EINVAL(f"kfree of {vaddr:#x}: not a live kmalloc object (double free?)")
        _, cls, _ = obj
        if cls < 0:
            self.free_pages_n(Page((vaddr - PAGE_OFFSET) >> PAGE_SHIFT), -cls)
        else:
            self.slab_free[cls].append(vaddr)

    # -- vmalloc ---------------------------------------------------------------
    def vmalloc(self, size: int, gfp: int, site: str) -> int | None:
        """``__vmalloc_node_range``: pages one by one, the lowest free address range
        with a guard page after it (``alloc_vmap_area``), then the kernel page
        tables when they exist (``vmap_pages_range``); everything is undone when a
        step fails."""
        if size <= 0 or should_fail("vmalloc"):
            return None
        npages = PAGE_ALIGN(size) >> PAGE_SHIFT
        pages: list[Page] = []
        for _ in range(npages):
            pg = self.alloc_pages_n(1, 1, gfp, site)
            if pg is None:
                for p in pages:
                    self.free_pages_n(p, 1)
                return None
            pages.append(pg)
        vpn = _extent_take(self.vmalloc_free, npages + 1, 1)
        assert vpn is not None, "vmalloc space exhausted"  # 32 TiB: more than any RAM
        addr = vpn << PAGE_SHIFT
        if self.kernel_pgtables is not None:
            try:
                self.kernel_pgtables.vmap(addr, [p.pfn for p in pages])
            except KernelError:
                _extent_give(self.vmalloc_free, vpn, npages + 1)
                for p in pages:
                    self.free_pages_n(p, 1)
                return None
        for i, p in enumerate(pages):
            self.vmalloc_pfn[vpn + i] = p.pfn
        self.vmalloc_areas[addr] = VmArea(addr, npages << PAGE_SHIFT, pages, site)
        return addr

    def vfree(self, addr: int) -> None:
        """``vfree``: unmap from the kernel page tables (``vunmap_range``: the CPU's
        TLB is flushed, nothing else is told), free the pages, and the address range
        becomes free for the next vmalloc.

        Difference from Linux: the range is reusable at once; Linux frees it lazily
        (``free_vmap_area_noflush``) and reuses it after ``purge_vmap_area_lazy``,
        whose flush is again the CPU's only."""
        area = self.vmalloc_areas.pop(addr, None)
        if area is None:
            raise EINVAL(f"vfree of {addr:#x}: not a vmalloc area")
        if self.kernel_pgtables is not None:
            self.kernel_pgtables.vunmap(addr, area.size)
        vpn = addr >> PAGE_SHIFT
        for i, p in enumerate(area.pages):
            del self.vmalloc_pfn[vpn + i]
            self.free_pages_n(p, 1)
        _extent_give(self.vmalloc_free, vpn, len(area.pages) + 1)

    # -- address translation -------------------------------------------------------
    def virt_to_phys(self, vaddr: int) -> int:
        """``__pa`` for the direct map, page walk for vmalloc space."""
        off = vaddr - PAGE_OFFSET
        if 0 <= off < self.mem.size:
            return off
        pfn = self.vmalloc_pfn.get(vaddr >> PAGE_SHIFT)
        if pfn is not None:
            return (pfn << PAGE_SHIFT) | (vaddr & (PAGE_SIZE - 1))
        raise EFAULT(f"BUG: unable to handle page fault for address: {vaddr:#018x}")

    def chunks(self, vaddr: int, size: int) -> Iterator[tuple[int, int]]:
        """Physically contiguous (phys, len) pieces of a virtual range."""
        off = vaddr - PAGE_OFFSET
        if 0 <= off and off + size <= self.mem.size:
            yield off, size
            return
        while size > 0:
            n = min(size, PAGE_SIZE - (vaddr & (PAGE_SIZE - 1)))
            yield self.virt_to_phys(vaddr), n
            vaddr += n
            size -= n

    def read(self, vaddr: int, size: int) -> bytes:
        return b"".join(self.mem.read(pa, n) for pa, n in self.chunks(vaddr, size))

    def write(self, vaddr: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        done = 0
        for pa, n in self.chunks(vaddr, len(view)):
            self.mem.write(pa, view[done : done + n])
            done += n

    def describe(self, phys: int) -> str:
        """What the page at ``phys`` is, for a report: a page-table page, a kmalloc
        object, pages (with who allocated them), a free page or reserved memory."""
        pfn = phys >> PAGE_SHIFT
        if pfn in self.pgtable:
            return "an IOMMU page-table page"
        for v, (size, _, site) in self.objects.items():
            if v - PAGE_OFFSET <= phys < v - PAGE_OFFSET + size:
                return f"kmalloc({size}) object {v:#x} allocated at {site}"
        for first, (n, site) in self.pages.items():
            if first <= pfn < first + n:
                if site == "slab":
                    return "a slab page"
                return f"{n} page(s) from {first << PAGE_SHIFT:#x} allocated at {site}"
        usable = any(b <= phys < b + n for b, n in self.ram)
        if not usable or phys < RESERVED_LOW:
            return "memory the kernel does not allocate (reserved, or below 1 MiB)"
        return "a free page"

    def live(self) -> list[Allocation]:
        out = [Allocation("kmalloc", v, s, site) for v, (s, _, site) in self.objects.items()]
        out += [Allocation("vmalloc", a.addr, a.size, a.site) for a in self.vmalloc_areas.values()]
        kmalloc_pages = {
            (v - PAGE_OFFSET) >> PAGE_SHIFT for v, (_, c, _) in self.objects.items() if c < 0
        }
        vm_pages = {p.pfn for a in self.vmalloc_areas.values() for p in a.pages}
        out += [
            Allocation("pages", PAGE_OFFSET + (pfn << PAGE_SHIFT), n << PAGE_SHIFT, site)
            for pfn, (n, site) in self.pages.items()
            if site != "slab" and pfn not in kmalloc_pages and pfn not in vm_pages
        ]
        return out


# --------------------------------------------------------------------------- C-named API


def current_mm() -> MemoryManager:
    """The current kernel's page allocator and slab (``RuntimeError`` when none is booted)."""
    return current.kernel.mm


def alloc_pages(gfp: int, order: int) -> Page | None:
    if not 0 <= order <= MAX_PAGE_ORDER:
        return None
    return current.kernel.mm.alloc_pages_n(1 << order, 1 << order, gfp, _caller(2))


def __free_pages(page: Page, order: int) -> None:
    current.kernel.mm.free_pages_n(page, 1 << order)


def __get_free_pages(gfp: int, order: int) -> int | None:
    if not 0 <= order <= MAX_PAGE_ORDER:
        return None
    page = current.kernel.mm.alloc_pages_n(1 << order, 1 << order, gfp, _caller(2))
    return None if page is None else PAGE_OFFSET + page.phys


def get_zeroed_page(gfp: int) -> int | None:
    page = current.kernel.mm.alloc_pages_n(1, 1, gfp | __GFP_ZERO, _caller(2))
    return None if page is None else PAGE_OFFSET + page.phys


def free_pages(addr: int, order: int) -> None:
    current.kernel.mm.free_pages_n(virt_to_page(addr), 1 << order)


def free_page(addr: int) -> None:
    current.kernel.mm.free_pages_n(virt_to_page(addr), 1)


def alloc_pages_exact(size: int, gfp: int) -> int | None:
    """Physically contiguous, page-aligned ``size`` bytes (beyond MAX_PAGE_ORDER too)."""
    npages = PAGE_ALIGN(size) >> PAGE_SHIFT
    page = current.kernel.mm.alloc_pages_n(npages, 1, gfp, _caller(2))
    return None if page is None else PAGE_OFFSET + page.phys


def free_pages_exact(addr: int, size: int) -> None:
    current.kernel.mm.free_pages_n(virt_to_page(addr), PAGE_ALIGN(size) >> PAGE_SHIFT)


def kmalloc(size: int, gfp: int = GFP_KERNEL) -> int | None:
    return current.kernel.mm.kmalloc(size, gfp, _caller(2))


def kzalloc(size: int, gfp: int = GFP_KERNEL) -> int | None:
    return current.kernel.mm.kmalloc(size, gfp | __GFP_ZERO, _caller(2))


def kcalloc(n: int, size: int, gfp: int = GFP_KERNEL) -> int | None:
    if n < 0 or size < 0:
        return None
    return current.kernel.mm.kmalloc(n * size, gfp | __GFP_ZERO, _caller(2))


def kfree(vaddr: int | None) -> None:
    """``kfree(NULL)`` is a no-op, as in C."""
    if vaddr:
        current.kernel.mm.kfree(vaddr)


def ksize(vaddr: int) -> int:
    _, cls, _ = current.kernel.mm.objects[vaddr]
    return cls if cls > 0 else (-cls) << PAGE_SHIFT


def vmalloc(size: int) -> int | None:
    return current.kernel.mm.vmalloc(size, GFP_KERNEL, _caller(2))


def vzalloc(size: int) -> int | None:
    return current.kernel.mm.vmalloc(size, GFP_KERNEL | __GFP_ZERO, _caller(2))


def vfree(addr: int | None) -> None:
    if addr:
        current.kernel.mm.vfree(addr)


def is_vmalloc_addr(addr: int) -> bool:
    return VMALLOC_START <= addr < VMALLOC_START + VMALLOC_SIZE


def virt_addr_valid(addr: int) -> bool:
    """True for direct-map addresses backed by RAM (not vmalloc, not stack, not a
    hole between e820 RAM ranges)."""
    mm = current.kernel.mm
    off = addr - PAGE_OFFSET
    if not 0 <= off < mm.mem.size:
        return False
    ram = mm.ram
    return len(ram) == 1 or any(b <= off < b + n for b, n in ram)


def virt_to_phys(vaddr: int) -> int:
    return current.kernel.mm.virt_to_phys(vaddr)


def phys_to_virt(paddr: int) -> int:
    return PAGE_OFFSET + paddr


def vmalloc_to_page(vaddr: int) -> Page:
    """``vmalloc_to_page``: the page backing a vmalloc address (EFAULT if none)."""
    if not is_vmalloc_addr(vaddr):
        raise EINVAL(f"vmalloc_to_page of {vaddr:#x}: not a vmalloc address")
    return Page(current.kernel.mm.virt_to_phys(vaddr) >> PAGE_SHIFT)


def virt_to_page(vaddr: int) -> Page:
    return Page(current.kernel.mm.virt_to_phys(vaddr) >> PAGE_SHIFT)


def page_to_phys(page: Page) -> int:
    return page.phys


def page_address(page: Page) -> int:
    return PAGE_OFFSET + page.phys


def offset_in_page(addr: int) -> int:
    return addr & (PAGE_SIZE - 1)


@inline
def memset(vaddr: int, byte: int, size: int) -> None:
    mm = current.kernel.mm
    for pa, n in mm.chunks(vaddr, size):
        mm.mem.fill(pa, n, byte)


@inline
def memcpy(dst: int, src: int, size: int) -> None:
    mm = current.kernel.mm
    mm.write(dst, mm.read(src, size))


def memory_read(vaddr: int, size: int) -> bytes:
    """Read kernel memory (what dereferencing a pointer does in C)."""
    return current.kernel.mm.read(vaddr, size)


@inline
def memory_write(vaddr: int, data: bytes | bytearray | memoryview) -> None:
    current.kernel.mm.write(vaddr, data)


def read32(vaddr: int) -> int:
    mm = current.kernel.mm
    mem = mm.mem
    off = vaddr - PAGE_OFFSET  # the direct map (virt_to_phys's first case) inline
    return mem.read_u32(off if 0 <= off < mem.size else mm.virt_to_phys(vaddr))


def read64(vaddr: int) -> int:
    mm = current.kernel.mm
    mem = mm.mem
    off = vaddr - PAGE_OFFSET  # the direct map (virt_to_phys's first case) inline
    return mem.read_u64(off if 0 <= off < mem.size else mm.virt_to_phys(vaddr))


@inline
def write32(vaddr: int, value: int) -> None:
    mm = current.kernel.mm
    mem = mm.mem
    off = vaddr - PAGE_OFFSET  # the direct map (virt_to_phys's first case) inline
    mem.write_u32(off if 0 <= off < mem.size else mm.virt_to_phys(vaddr), value)


@inline
def write64(vaddr: int, value: int) -> None:
    """A 64-bit store to kernel memory (``WRITE_ONCE(*p, v)`` on a u64)."""
    mm = current.kernel.mm
    mem = mm.mem
    off = vaddr - PAGE_OFFSET  # the direct map (virt_to_phys's first case) inline
    mem.write_u64(off if 0 <= off < mem.size else mm.virt_to_phys(vaddr), value)


@inline
def pgtable_write64(vaddr: int, value: int) -> bool:
    """Store one IOMMU page-table entry (C: ``WRITE_ONCE(*ptep, v)`` or the
    ``cmpxchg64`` that installs a table): the page-table ownership sanitizer. A
    store into a page allocated as an IOMMU page-table page is done; any other is
    refused and reported as a ``pt-owner`` finding naming the page and the call
    chain (the model departs from Linux here, which would corrupt the page).
    Returns whether the store was done."""
    mm = current.kernel.mm
    phys = vaddr - PAGE_OFFSET
    if phys >> PAGE_SHIFT in mm.pgtable:
        mm.mem.write_u64(phys, value)
        return True
    page = phys & PAGE_MASK
    what = mm.describe(phys)
    report_finding(
        Finding(
            "pt-owner",
            f"IOMMU page-table entry written into data page {page:#x} ({what})",
            chain=tuple(call_chain(2).lines()),
            detail=f"store of {value:#018x} to {phys:#x} refused: the page was not "
            "allocated as an IOMMU page-table page (iommu_alloc_pages)",
            time_ns=current.kernel.machine.clock.now,
        )
    )
    return False


def pgtable_words() -> WordView:
    """RAM by 64-bit word for an IOMMU driver's walk of its own page tables (C reads
    ``pte->val`` through the direct map): ``pgtable_words()[phys >> 3]`` is the entry
    at physical address ``phys``, as ``read64(phys_to_virt(phys))``, without a call
    per entry. Hot walks read ``current.kernel.mm.words`` once and index it.
    Differences from ``read64``: a hole reads as zeros and an index past the top of
    RAM raises ``IndexError``, so it is only for addresses the walk took from tables
    the kernel allocated (stores still go through :func:`pgtable_write64`)."""
    return current.kernel.mm.words


@define
class TaskStack:
    """The current task's vmalloc'd stack; :meth:`alloca` hands out on-stack buffers."""

    base: int
    top: int

    def alloca(self, size: int) -> int:
        """A buffer on the stack (what ``char buf[N]`` is in a C function)."""
        new_top = (self.top - size) & ~0xF
        if new_top < self.base:
            raise EINVAL("kernel stack overflow")
        self.top = new_top
        return new_top


def current_stack() -> TaskStack:
    """The current kernel's init task stack."""
    stack = current.kernel.stack
    if stack is None:
        raise RuntimeError("no kernel is booted")
    return stack


def object_is_on_stack(addr: int) -> bool:
    st = current.kernel.stack
    return st is not None and st.base <= addr < st.base + THREAD_SIZE
