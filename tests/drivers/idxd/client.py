"""A dmaengine test client: maps buffers against the DSA device, prepares memcpy
descriptors on an idxd channel and collects the callbacks (what a kernel user of
dmaengine, say NTB or a crypto driver, does)."""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field

from drivers.idxd.idxd import IdxdDesc
from kernel.device import Device
from kernel.dma.direction import DMA_FROM_DEVICE, DMA_TO_DEVICE
from kernel.dma.dmaengine import (
    DMA_PREP_INTERRUPT,
    DmaChan,
    DmaengineResult,
    dma_submit_error,
    dma_sync_wait,
    dmaengine_prep_dma_memcpy,
    dmaengine_submit,
)
from kernel.dma.mapping import dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.errno import EAGAIN, ENOMEM, KernelError
from kernel.mm import (
    alloc_pages_exact,
    free_pages_exact,
    memory_read,
    memory_write,
)


@define(eq=False)
class Copy:
    src: int
    dst: int
    size: int
    src_dma: int = 0
    dst_dma: int = 0
    cookie: int = 0
    result: DmaengineResult | None = None
    desc: IdxdDesc | None = None
    calls: int = 0


@define(eq=False)
class MemcpyClient:
    chan: DmaChan
    copies: list[Copy] = field(factory=list)

    @property
    def dev(self) -> Device:
        return self.chan.device.dev

    def alloc(self, size: int, fill: int | None = None) -> int:
        addr = alloc_pages_exact(size, 0)
        if addr is None:
            raise ENOMEM(f"client buffer of {size} bytes")
        if fill is not None:
            pattern = bytes((fill + i) & 0xFF for i in range(256))
            memory_write(addr, (pattern * (size // 256 + 1))[:size])
        return addr

    def free(self, addr: int, size: int) -> None:
        free_pages_exact(addr, size)

    def _map(self, addr: int, size: int, dir: int) -> int:
        handle = dma_map_single(self.dev, addr, size, dir)
        if dma_mapping_error(self.dev, handle):
            raise ENOMEM("dma_map_single")
        return handle

    def start(self, size: int, interrupt: bool = True, seed: int = 1) -> Copy:
        """Allocate and map src/dst, prepare and submit a memcpy (not waited for);
        a failure at any step undoes the earlier ones and raises."""
        src = self.alloc(size, seed)
        undo: list[Callable[[], None]] = [lambda: self.free(src, size)]
        try:
            dst = self.alloc(size, None)
            undo.append(lambda: self.free(dst, size))
            c = Copy(src, dst, size)
            c.src_dma = self._map(src, size, DMA_TO_DEVICE)
            undo.append(lambda: dma_unmap_single(self.dev, c.src_dma, size, DMA_TO_DEVICE))
            c.dst_dma = self._map(dst, size, DMA_FROM_DEVICE)
            undo.append(lambda: dma_unmap_single(self.dev, c.dst_dma, size, DMA_FROM_DEVICE))
            tx = dmaengine_prep_dma_memcpy(
                self.chan, c.dst_dma, c.src_dma, size, DMA_PREP_INTERRUPT if interrupt else 0
            )
            if tx is None:
                raise EAGAIN("dmaengine_prep_dma_memcpy")

            def done(param: object, result: DmaengineResult) -> None:
                c.result = result
                c.calls += 1

            tx.callback_result = done
            c.desc = tx.priv
            c.cookie = dmaengine_submit(tx)
            if dma_submit_error(c.cookie):
                raise EAGAIN(f"dmaengine_submit: {c.cookie}")
        except KernelError:
            for fn in reversed(undo):
                fn()
            raise
        self.copies.append(c)
        return c

    def wait(self, c: Copy) -> int:
        return dma_sync_wait(self.chan, c.cookie)

    def finish(self, c: Copy) -> bool:
        """Unmap, compare, free; True if the bytes arrived."""
        dma_unmap_single(self.dev, c.src_dma, c.size, DMA_TO_DEVICE)
        dma_unmap_single(self.dev, c.dst_dma, c.size, DMA_FROM_DEVICE)
        ok = memory_read(c.src, c.size) == memory_read(c.dst, c.size)
        self.free(c.src, c.size)
        self.free(c.dst, c.size)
        return ok

    def memcpy(self, size: int, interrupt: bool = True) -> tuple[int, bool]:
        c = self.start(size, interrupt)
        status = self.wait(c)
        return status, self.finish(c)
