"""``iommulab demo --user``: shared virtual addressing from a user process with
block-on-fault.

Boots the machine (``default``: VT-d + DSA) without the default kernel WQs,
configures a shared user WQ with block-on-fault through the accel-config JSON API,
starts a process that opens ``/dev/dsa/wq0.2`` (binding its address space: the
PASID), maps the portal, fills a 2 MiB source buffer and maps a 2 MiB destination
it never touches, and submits one memmove with ENQCMD. Each untouched destination
page makes the DSA's translation fail; the DSA sends a PCIe page request, the
IOMMU's page request queue receives it, the kernel faults the page in
(``iommu_sva_handle_mm`` → ``handle_mm_fault``) and answers, and the DSA resumes.
The report prints the page requests and responses in order (the first few), the
counts, the IOMMU faults and stale translation uses (0), the completion record and
whether the bytes arrived. :func:`bof_memmove` is the scenario on its own, shared
with the benchmark.
"""

from __future__ import annotations

import argparse
from typing import Any

from attrs import define, field

from drivers.idxd.init import idxd_find
from drivers.idxd.sysfs import idxd_enable, idxd_load_config
from hw.machine import Machine
from iommulab.presets import load_machine_file, preset
from iommulab.userdsa import UserWq
from kernel.boot import Kernel, boot
from kernel.errno import KernelError
from kernel.sched import CAP_SYS_RAWIO, do_exit, user_process_create
from kernel.uapi.idxd import DSA_COMP_SUCCESS

BOF_WQ = "/dev/dsa/wq0.0"
SIZE = 2 << 20
EVENTS = (
    "hw_vtd:page_request",
    "hw_vtd:prg_response",
    "hw_smmuv3:page_request",
    "hw_smmuv3:prg_response",
)
SHOWN = 6


def user_bof_config(size: int = 16, max_transfer: int = 2 << 20) -> dict[str, Any]:
    """One shared user WQ with block-on-fault (``max_transfer`` bytes per descriptor)
    and one engine in its group."""
    return {
        "dev": "dsa0",
        "groups": [
            {
                "dev": "group0.0",
                "grouped_workqueues": [
                    {
                        "dev": "wq0.0",
                        "mode": "shared",
                        "size": size,
                        "threshold": size - 1,
                        "priority": 10,
                        "type": "user",
                        "name": "app-bof",
                        "driver_name": "user",
                        "block_on_fault": 1,
                        "max_transfer_size": max_transfer,
                    }
                ],
                "grouped_engines": [{"dev": "engine0.0"}],
            }
        ],
    }


def boot_user(machine: Machine, cmdline: str = "", max_transfer: int = 2 << 20) -> Kernel:
    """Boot ``machine`` and configure the block-on-fault user WQ (a KernelError where
    the machine cannot have one)."""
    k = boot(machine, " ".join(x for x in ("idxd.default_config=0", cmdline) if x))
    idxd = idxd_find("dsa0")
    idxd_load_config(idxd, user_bof_config(max_transfer=max_transfer))
    idxd_enable(idxd)
    return k


@define
class BofRun:
    """What one block-on-fault memmove from a process did."""

    status: int = 0
    bytes_completed: int = 0
    fault_addr: int = 0
    bytes_ok: bool = False
    page_requests: int = 0
    responses: int = 0
    faults: int = 0
    stale_uses: int = 0
    virtual_ns: int = 0
    events: list[str] = field(factory=list)


def _unit_counts(k: Kernel) -> tuple[int, int]:
    m = k.machine
    assert isinstance(m, Machine)
    faults = stale = 0
    for unit in m.iommus.values():
        stats = getattr(unit, "stats", None)
        faults += getattr(stats, "faults", 0)
        stale += getattr(stats, "stale_uses", 0)
    return faults, stale


def _page_request_counts(k: Kernel) -> tuple[int, int]:
    m = k.machine
    assert isinstance(m, Machine)
    reqs = resp = 0
    for fn in m.functions.values():
        if fn.pri is not None:
            reqs += fn.pri.stats.requests
            resp += fn.pri.stats.responses
    return reqs, resp


def bof_memmove(k: Kernel, size: int = SIZE, u: UserWq | None = None, warm: bool = False) -> BofRun:
    """One memmove of ``size`` bytes from a process on the BOF WQ into a destination
    the process has not touched (``warm``: into one it already has); the process
    exits at the end unless ``u`` (an open WQ) was given."""
    own = u is None
    if u is None:
        task = user_process_create("bof-demo", caps=frozenset({CAP_SYS_RAWIO}))
        u = UserWq.open(task, BOF_WQ)
    src = u.alloc(size)
    dst = u.alloc(size, touch=warm)
    desc = u.alloc(4096)
    pattern = bytes((i * 131 + 7) & 0xFF for i in range(4096)) * (size // 4096)
    u.store(src, pattern)
    faults0, stale0 = _unit_counts(k)
    req0, resp0 = _page_request_counts(k)
    m = k.machine
    assert isinstance(m, Machine)
    t0 = m.clock.now
    comp = desc + 64
    u.submit(u.memmove(src, dst, size, comp, bof=True), desc)
    cr = u.wait(comp)
    run = BofRun(int(cr.status), int(cr.bytes_completed), int(cr.fault_addr))
    run.virtual_ns = m.clock.now - t0
    run.bytes_ok = cr.status == DSA_COMP_SUCCESS and u.load(dst, size) == pattern
    faults1, stale1 = _unit_counts(k)
    req1, resp1 = _page_request_counts(k)
    run.faults, run.stale_uses = faults1 - faults0, stale1 - stale0
    run.page_requests, run.responses = req1 - req0, resp1 - resp0
    if own:
        do_exit(u.task)
    return run


def _event_lines(k: Kernel) -> list[str]:
    return [f"  {e.ts_ns:>10} ns  {e.name}: {e.text}" for e in k.tracer.ring if e.name in EVENTS]


def report(k: Kernel, run: BofRun) -> tuple[str, bool]:
    lines = ["iommulab demo --user: a process's memmove with block-on-fault", ""]
    events = _event_lines(k)
    lines.append(f"page requests and responses, in order ({len(events)} events; first {SHOWN}):")
    lines += events[:SHOWN] or ["  (none)"]
    if len(events) > SHOWN:
        lines.append(f"  ... and {len(events) - SHOWN} more")
    lines += [
        "",
        f"page requests:  {run.page_requests}",
        f"responses:      {run.responses}",
        f"IOMMU faults:   {run.faults}",
        f"stale uses:     {run.stale_uses}",
        f"completion:     status {run.status:#04x}, {run.bytes_completed} bytes completed"
        + (f", fault at {run.fault_addr:#x}" if run.status != DSA_COMP_SUCCESS else ""),
        f"bytes:          {'right' if run.bytes_ok else 'WRONG'}",
        f"virtual time:   {run.virtual_ns / 1000:.1f} us",
    ]
    ok = (
        run.bytes_ok
        and run.stale_uses == 0
        and run.page_requests > 0
        and run.page_requests == run.responses
    )
    lines += ["", "result: " + ("PASS" if ok else "FAIL")]
    return "\n".join(lines), ok


def run_user(args: argparse.Namespace) -> int:
    spec = load_machine_file(args.machine_file) if args.machine_file else preset(args.machine)
    cmdline = " ".join(x for x in (args.cmdline, "trace_event=" + ",".join(EVENTS)) if x)
    k = boot(Machine(spec), " ".join(x for x in ("idxd.default_config=0", cmdline) if x))
    try:
        idxd = idxd_find("dsa0")
        idxd_load_config(idxd, user_bof_config())
        idxd_enable(idxd)
    except KernelError as err:
        print(f"iommulab demo --user: no user WQ on this machine: {err}")
        print("result: FAIL")
        k.shutdown()
        return 1
    run = bof_memmove(k)
    text, ok = report(k, run)
    print(text)
    k.shutdown()
    return 0 if ok else 1
