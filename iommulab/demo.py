"""``iommulab demo`` / ``make demo``: the founding scenario.

Boots the machine (``default``: VT-d + DSA), loads intel_iommu and idxd, lets idxd
attach its system PASID to the DSA's DMA domain, runs dmaengine memcpy of 4 KiB
… 16 MiB on every idxd channel (the dedicated WQ, and the shared WQ when the
system PASID exists), checks the bytes, and prints a short report: the PASID,
the PASID-table entry that points at the DMA domain (next to the RID_PASID entry
it aliases) — on SMMUv3 the STE and the CD of the PASID next to CD 0 —,
descriptor/completion counts, the IOMMU model's TLB hits, misses, stale uses and
faults, the DSA's ATS figures (with ATS on, the device TLB serves repeat
translations, so the IOTLB sees only Translation Requests), and the dmesg lines
that matter.

``--pasid-api seed-v3|upstream|kernel-sva`` picks the IOMMU core's PASID API
generation; ``kernel-sva`` (what the series replaced) copies with kernel virtual
addresses and then runs the vfree sequence of :mod:`iommulab.flaw`: the demo passes
when the flaw is shown (a stale IOTLB entry reads another owner's page);
``--trace out.json`` writes the run's idxd/iommu/hw_vtd/hw_dsa events in the
Chrome trace-event format. :func:`scenario` is the memcpy part on its own, for
``iommulab trace demo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from drivers.idxd.init import idxd_devices
from hw.bus import PciAddr
from hw.machine import Machine
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from hw.smmuv3.unit import Smmuv3Unit
from hw.smmuv3.walk import CdInfo, SmmuFault
from hw.vtd.unit import VtdUnit
from hw.vtd.walk import Stage
from iommulab import bootcheck
from iommulab.flaw import FlawResult, copy_to, describe, kernel_sva_bound, vfree_sequence
from iommulab.perfetto import to_chrome_json
from iommulab.presets import load_machine_file, preset
from kernel.boot import Kernel, boot
from kernel.dma.direction import DMA_FROM_DEVICE, DMA_TO_DEVICE
from kernel.dma.dmaengine import (
    DMA_COMPLETE,
    DMA_PREP_INTERRUPT,
    DmaChan,
    DmaengineResult,
    dma_release_channel,
    dma_request_chan,
    dma_sync_wait,
    dmaengine_prep_dma_memcpy,
    dmaengine_submit,
)
from kernel.dma.mapping import dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.errno import KernelError
from kernel.iommu.iommu import PASID_API_KERNEL_SVA, PASID_APIS
from kernel.mm import alloc_pages_exact, free_pages_exact, memory_read, memory_write

SIZES = (4 << 10, 64 << 10, 1 << 20, 16 << 20)
TRACE_EVENTS = "idxd:*,iommu:*,intel_iommu:*,hw_vtd:*,hw_dsa:*"
IMPORTANT = ("idxd", "DMAR", "PASID", "pasid", "dmaengine", "DMA-API", "iommu", "WARNING")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Demo-specific options (the CLI adds --machine/--machine-file/--cmdline)."""
    p.add_argument(
        "--pasid-api",
        choices=PASID_APIS,
        default="upstream",
        help="IOMMU core PASID API generation (kernel parameter iommu.pasid_api)",
    )
    p.add_argument("--trace", metavar="OUT.json", help="write a Chrome/Perfetto trace")
    p.add_argument(
        "--user",
        action="store_true",
        help="instead: a process's block-on-fault memmove on a user WQ (iommulab.userdemo)",
    )
    p.add_argument(
        "--every-wq",
        action="store_true",
        help="configure every WQ of every DSA (idxd.default_wqs=0) and copy on each",
    )
    p.add_argument(
        "--sizes",
        type=_sizes,
        metavar="4K,64K,...",
        help=f"copy sizes (default {','.join(_human(s) for s in SIZES)})",
    )


def _human(size: int) -> str:
    return f"{size >> 20}M" if size >= 1 << 20 else f"{size >> 10}K"


def _sizes(text: str) -> tuple[int, ...]:
    """``--sizes``: comma-separated sizes, each a positive multiple of 256 bytes."""
    units = {"K": 1 << 10, "M": 1 << 20}
    out: list[int] = []
    for item in text.split(","):
        item = item.strip().upper()
        try:
            size = int(item[:-1]) * units[item[-1]] if item[-1:] in units else int(item, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--sizes: {item!r} is not a size") from None
        if size <= 0 or size % 256:
            raise argparse.ArgumentTypeError(f"--sizes: {item!r} is not a multiple of 256 bytes")
        out.append(size)
    return tuple(out)


def memcpy_checked(chan: DmaChan, size: int, seed: int) -> bool:
    """One dmaengine memcpy the way a kernel client does it; True if the bytes match.
    Raises ``KernelError`` when the buffers cannot be allocated (after freeing the one
    that was)."""
    dev = chan.device.dev
    src = alloc_pages_exact(size, 0)
    dst = alloc_pages_exact(size, 0)
    if src is None or dst is None:
        for buf in (src, dst):
            if buf is not None:
                free_pages_exact(buf, size)
        raise KernelError("demo: out of memory for buffers")
    pattern = bytes((seed * 7 + i) & 0xFF for i in range(256))
    memory_write(src, (pattern * (size // 256))[:size])
    if kernel_sva_bound(chan):  # 5.15's supervisor SVA: kernel addresses, no mapping
        ok = copy_to(chan, dst, src, size) and memory_read(src, size) == memory_read(dst, size)
        free_pages_exact(src, size)
        free_pages_exact(dst, size)
        return ok
    s = dma_map_single(dev, src, size, DMA_TO_DEVICE)
    d = dma_map_single(dev, dst, size, DMA_FROM_DEVICE)
    ok = False
    if not dma_mapping_error(dev, s) and not dma_mapping_error(dev, d):
        tx = dmaengine_prep_dma_memcpy(chan, d, s, size, DMA_PREP_INTERRUPT)
        results: list[DmaengineResult] = []
        if tx is not None:
            tx.callback_result = lambda _p, r: results.append(r)
            cookie = dmaengine_submit(tx)
            if cookie > 0 and dma_sync_wait(chan, cookie) == DMA_COMPLETE:
                ok = bool(results) and results[0].result == 0
    # unmap whichever mapping succeeded (one may have failed while the other did not)
    if not dma_mapping_error(dev, s):
        dma_unmap_single(dev, s, size, DMA_TO_DEVICE)
    if not dma_mapping_error(dev, d):
        dma_unmap_single(dev, d, size, DMA_FROM_DEVICE)
    ok = ok and memory_read(src, size) == memory_read(dst, size)
    free_pages_exact(src, size)
    free_pages_exact(dst, size)
    return ok


def scenario(k: Kernel, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """The memcpy part: every size on every idxd channel; returns what happened."""
    copies: list[tuple[str, str, int, bool]] = []
    for idxd in idxd_devices():
        for wq in idxd.wqs:
            if wq.dma_chan is None:
                continue
            chan = dma_request_chan(None, wq.dma_chan.name)
            try:
                mode = "dedicated" if wq.dedicated else "shared"
                for i, size in enumerate(sizes):
                    copies.append((wq.name_dev, mode, size, memcpy_checked(chan, size, i)))
            finally:
                dma_release_channel(chan)
    return {"copies": copies}


def _stage(st: Stage) -> str:
    kind = {0: "none", 1: "first-stage", 2: "second-stage", 4: "pass-through"}.get(
        st.kind, str(st.kind)
    )
    return f"{kind} root={st.root:#x} levels={st.levels}"


def _pasid_entries(m: Machine, addr: PciAddr, pasid: int) -> list[str]:
    """The PASID entry of ``pasid`` next to RID_PASID's, in the unit that owns ``addr``."""
    rid = addr.rid
    out: list[str] = []
    for unit in m.iommus.values():
        if not isinstance(unit, VtdUnit) or not unit.te or unit.ttm != 1:
            continue
        if unit is not m.iommu_for(addr):
            continue
        try:
            ctx = unit.walker.context(unit.root, True, rid)
            mine = unit.walker.pasid_entry(ctx, pasid)
            rid_pe = unit.walker.pasid_entry(ctx, ctx.rid_pasid)
        except Exception as exc:  # a fault object from the model: report it
            out.append(f"  {unit.name}: no PASID entry ({exc})")
            continue
        same = "same tables as" if mine.stage == rid_pe.stage else "DIFFERENT from"
        out.append(
            f"  {unit.name}: PASID {pasid}: did={mine.did} pgtt={mine.pgtt} {_stage(mine.stage)}"
            + (" sre=1 (supervisor requests: init_mm)" if mine.sre else "")
        )
        out.append(
            f"  {unit.name}: RID_PASID {ctx.rid_pasid}: did={rid_pe.did} pgtt={rid_pe.pgtt} "
            f"({same} the system PASID: the DMA domain)"
        )
    return out


_STE_CONFIG = {
    ent.STE_CFG_ABORT: "abort",
    ent.STE_CFG_BYPASS: "bypass",
    ent.STE_CFG_S1: "stage-1",
    ent.STE_CFG_S2: "stage-2",
    ent.STE_CFG_NESTED: "nested",
}
_S1DSS = {
    ent.S1DSS_TERMINATE: "terminate",
    ent.S1DSS_BYPASS: "bypass",
    ent.S1DSS_SSID0: "CD 0",
}


def _cd(cd: CdInfo) -> str:
    return f"asid={cd.asid} ttb0={cd.ttb0:#x} va_bits={cd.va0} ips={cd.ips}"


def _smmu_entries(m: Machine, addr: PciAddr, pasid: int) -> list[str]:
    """The STE of ``addr``'s StreamID and the CD of ``pasid`` next to the one
    no-SSID DMA uses (CD 0), in the SMMU that owns ``addr`` (the SMMUv3 counterpart
    of :func:`_pasid_entries`)."""
    unit = m.iommu_for(addr)
    if not isinstance(unit, Smmuv3Unit):
        return []
    sid = addr.rid
    strtab = unit.regs["STRTAB_BASE"] & sr.STRTAB_BASE.ADDR.mask, unit.regs["STRTAB_BASE_CFG"]
    try:
        ste = unit.walker.ste(*strtab, sid)
        mine = unit.walker.cd(ste, pasid)
        cd0 = unit.walker.cd(ste, 0)
    except SmmuFault as fault:
        return [f"  {unit.name}: no STE/CD for StreamID {sid:#x} ({fault.evt.name})"]
    same = "same tables as" if (mine.asid, mine.ttb0) == (cd0.asid, cd0.ttb0) else "DIFFERENT from"
    return [
        f"  {unit.name}: STE {sid:#x}: config={_STE_CONFIG.get(ste.config, ste.config)} "
        f"s1cdmax={ste.s1cdmax} s1dss={_S1DSS.get(ste.s1dss, ste.s1dss)} "
        f"cd_table={ste.ctxptr:#x}",
        f"  {unit.name}: CD {pasid} (SSID {pasid}): {_cd(mine)}",
        f"  {unit.name}: CD 0 (no SSID): {_cd(cd0)} ({same} the system PASID: the DMA domain)",
    ]


def _unit_line(unit: object) -> str | None:
    """One IOMMU unit's translation cache counters, in its vendor's words."""
    if isinstance(unit, VtdUnit):
        s = unit.stats
        return (
            f"{unit.name}: IOTLB hits {s.iotlb_hits}, misses {s.iotlb_misses}, "
            f"stale {s.stale_uses}; faults {s.faults}"
        )
    if isinstance(unit, Smmuv3Unit):
        t = unit.stats
        return (
            f"{unit.name}: TLB hits {t.tlb_hits}, misses {t.tlb_misses}, stale {t.stale_uses}; "
            f"STE cache hits {t.ste_hits}, misses {t.ste_misses}; "
            f"CD cache hits {t.cd_hits}, misses {t.cd_misses}; "
            f"faults {t.faults} ({t.faults_suppressed} suppressed)"
        )
    return None


def report(k: Kernel, result: dict[str, Any]) -> tuple[str, bool]:
    m = k.machine
    assert isinstance(m, Machine)
    how = "supervisor SVA of init_mm (5.15)" if "flaw" in result else "the DMA API"
    lines = [f"iommulab demo: in-kernel DMA with PASID through {how}", ""]
    ok = bool(result["copies"])
    for idxd in idxd_devices():
        pasid = str(idxd.pasid) if idxd.pasid_enabled else "none (dma without PASID)"
        lines.append(
            f"{idxd.name} at {idxd.pdev.init_name}: system PASID {pasid}"
            + (f" ({idxd.pasid_api} API)" if idxd.pasid_enabled else "")
        )
        if idxd.pasid_enabled:
            lines += _pasid_entries(m, idxd.pdev.addr, idxd.pasid)
            lines += _smmu_entries(m, idxd.pdev.addr, idxd.pasid)
        for wq in idxd.wqs:
            if wq.submitted or wq.dma_chan is not None:
                lines.append(
                    f"  {wq.name_dev} ({'dedicated' if wq.dedicated else 'shared'}): "
                    f"{wq.submitted} descriptors, {wq.completed} completions, "
                    f"{wq.errors} errors"
                )
    lines.append("")
    for wq_name, mode, size, good in result["copies"]:
        ok = ok and good
        lines.append(
            f"  memcpy {size:>9} bytes on {wq_name} ({mode}): {'ok' if good else 'FAILED'}"
        )
    stale = 0
    for unit in m.iommus.values():
        line = _unit_line(unit)
        if line is not None and isinstance(unit, VtdUnit | Smmuv3Unit):
            stale += unit.stats.stale_uses
            lines.append(line)
    for fn in m.functions.values():
        port = fn.ats_port
        if port is not None:
            a = port.atc.stats
            lines.append(
                f"{fn.addr} ATS: {a.translation_requests} translation requests, "
                f"{a.hits} pages served from the device TLB, {a.invalidations} invalidations"
            )
    flaw: FlawResult | None = result.get("flaw")
    if flaw is not None:
        stale -= flaw.stale_uses
        lines += ["", *describe(flaw)]
    ok = ok and stale == 0
    lines += ["", "dmesg (the lines that matter):"]
    lines += [
        "  " + ln
        for ln in k.dmesg().splitlines()
        if any(w in ln for w in IMPORTANT) and "Command line" not in ln
    ]
    verdict = "PASS" if ok else "FAIL"
    if flaw is not None:
        ok = ok and flaw.shown
        verdict = "PASS: the flaw was shown" if ok else "FAIL: the flaw was not shown"
    lines += ["", "result: " + verdict]
    return "\n".join(lines), ok


def run(args: argparse.Namespace) -> int:
    if getattr(args, "user", False):
        from iommulab.userdemo import run_user

        return run_user(args)
    spec = load_machine_file(args.machine_file) if args.machine_file else preset(args.machine)
    api = getattr(args, "pasid_api", "upstream") or "upstream"
    every = "idxd.default_wqs=0" if getattr(args, "every_wq", False) else ""
    cmdline = " ".join(x for x in (args.cmdline, f"iommu.pasid_api={api}", every) if x)
    trace_out = getattr(args, "trace", None)
    if trace_out:
        cmdline += f" trace_event={TRACE_EVENTS}"
    modules = bootcheck.modules_arg(getattr(args, "modules", None))
    k = boot(Machine(spec), cmdline, modules)
    bootcheck.warn_cmdline(k)
    try:
        result = scenario(k, getattr(args, "sizes", None) or SIZES)
        if api == PASID_API_KERNEL_SVA:
            result["flaw"] = vfree_sequence()
    except KernelError as err:
        result = {"copies": [], "error": str(err)}
    text, ok = report(k, result)
    print(text)
    k.shutdown()
    if trace_out:
        Path(trace_out).write_text(to_chrome_json(k.tracer.ring))
        print(f"trace: {len(k.tracer.ring)} events written to {trace_out}")
    return 0 if ok else 1
