"""Bring a kernel up on a platform: ``boot(machine, cmdline=..., modules=...)``.

The returned :class:`Kernel` is the explicit kernel context: it owns the dmesg ring,
tracer, WARN record, allocators, IRQ table and every per-kernel slot
(:mod:`kernel.context`); ``with kernel:`` makes it the one the C-named APIs act on.

Order, as Linux's start_kernel and initcalls: command line, memory, interrupts,
plugin (module) discovery, then init levels 1..8 — at each level the generic
kernel's initcalls (PCI enumeration at SUBSYS, IOMMU unit binding at ROOTFS ...)
followed by the module inits of that level. What Linux does before any initcall is
placed at the first levels, in Linux's order: a vendor IOMMU module at CORE parses its
firmware table (``detect_intel_iommu``/``dmar_table_init`` in ``setup_arch``), the
POSTCORE initcall ``irq_remapping_apic_setup`` is the x86 APIC step that turns
interrupt remapping on over every unit (:mod:`kernel.irq_remapping`); PCI comes at
SUBSYS and the units' DMA remapping at ROOTFS (``pci_iommu_init``). Unknown
command-line parameters are
reported the way Linux reports them and boot continues. :meth:`Kernel.shutdown`
undoes it all in reverse.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import weakref
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from attrs import define, field

from hw.bus import Finding, Platform
from kernel import bug, findings, irq, mm, printk, trace
from kernel.context import current, current_kernel, kernel_callback
from kernel.errno import KernelError
from kernel.init import initcalls
from kernel.mm import TaskStack
from kernel.module import InitLevel, IommuDriverInfo, KernelModule
from kernel.params import CommandLine, Param, parse_int, parse_str
from kernel.plugin import BUILTIN_MODULES, PluginManager, make_plugin_manager

SUBSYSTEM_PACKAGES = ("kernel.pci_init", "kernel.iommu", "kernel.dma", "kernel.iommufd.viommu")
UTS_RELEASE = "6.12.0-iommulab"
"""The kernel baseline the model mirrors: Linux 6.12 (LTS)."""


@define(eq=False)
class Kernel:
    """One booted kernel: the context object owning everything the kernel's globals
    would hold in C. Module-level kernel APIs act on the current one
    (:data:`kernel.context.current`); ``with kernel:`` enters it for a block and
    restores the previous one, :meth:`activate` makes it current for good."""

    machine: Platform
    cmdline: CommandLine
    log: printk.LogBuffer
    tracer: trace.Tracer
    warn: bug.WarnState
    mm: mm.MemoryManager
    irq: irq.IrqController
    plugins: PluginManager
    modules: list[KernelModule] = field(factory=list)
    iommu_drivers: list[IommuDriverInfo] = field(factory=list)
    loaded: list[KernelModule] = field(factory=list)
    """Modules whose init succeeded, in init order."""
    failed_modules: dict[str, str] = field(factory=dict)
    subsys: dict[Hashable, Any] = field(factory=dict)
    """Per-kernel slots (:class:`kernel.context.KernelSlot`): subsystem state
    (``iommu``, ``dma_debug`` ...) and drivers' ``static`` state."""
    ran_initcalls: list[Any] = field(factory=list)
    stack: TaskStack | None = None
    """The init task's vmalloc'd stack (what ``current`` runs on)."""
    up: bool = False
    cmdline_problems: list[str] = field(factory=list)
    findings: list[Finding] = field(factory=list)
    """Every finding (:mod:`kernel.findings`): stale uses, faults, sanitizer reports."""
    """What boot said about the command line (malformed options, unknown parameters,
    trace events that could not be enabled), word for word as dmesg has it."""
    _entered: list[Kernel] = field(factory=list)
    """The kernels that were current when ``with self:`` blocks began (innermost last)."""

    def param(self, name: str) -> Any:
        return self.cmdline.get(name)

    def dmesg(self, max_level: int = printk.KERN_DEBUG) -> str:
        return self.log.render(max_level)

    def warnings(self) -> list[bug.KernelWarning]:
        return list(self.warn.warnings)

    def activate(self) -> None:
        """Make this kernel the current one (module-level APIs act on it): one store."""
        current.kernel = self

    def __enter__(self) -> Kernel:
        self._entered.append(current.kernel)
        current.kernel = self
        return self

    def __exit__(self, *exc: object) -> None:
        current.kernel = self._entered.pop()

    def shutdown(self) -> None:
        """Module exits and subsystem teardowns in reverse order, run under this
        kernel; whichever kernel was current before stays current afterwards."""
        if not self.up:
            return
        with self:
            self._shutdown()

    def _shutdown(self) -> None:
        for mod in reversed(self.loaded):
            if mod.exit is not None:
                mod.exit()
        self.loaded.clear()
        for ic in reversed(self.ran_initcalls):
            if ic.teardown is not None:
                ic.teardown(self)
        self.ran_initcalls.clear()
        self.tracer.on_patterns = None
        self.tracer.retire()
        self.machine.set_hw_trace_sink(None)
        self.machine.set_finding_sink(None)
        self.machine.set_write_origin(None)
        self.up = False
        _running.pop(id(self.machine), None)
        printk.pr_info("reboot: Power down")


_running: weakref.WeakValueDictionary[int, Kernel] = weakref.WeakValueDictionary()
"""id(machine) -> the kernel up on it (one kernel per machine, any number of machines)."""

__all__ = ["Kernel", "boot", "current_kernel"]


def _register_core_params(cl: CommandLine) -> None:
    cl.register(Param("module_blacklist", "", parse_str, "comma-separated modules not to load"))
    cl.register(Param("loglevel", printk.KERN_DEBUG, parse_int, "console log level"))
    cl.register(Param("trace_event", "", parse_str, "tracepoints to enable at boot"))


def _cmdline_problem(k: Kernel, log: Any, text: str) -> None:
    """Log one command-line complaint and keep it in ``k.cmdline_problems``."""
    log(text)
    k.cmdline_problems.append(text)


def boot(
    machine: Platform,
    cmdline: str = "",
    modules: Sequence[str] | None = None,
    *,
    builtins: Iterable[str] = BUILTIN_MODULES,
    entry_points: bool | Iterable[md.EntryPoint] = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
    console: printk.LogBuffer | None = None,
) -> Kernel:
    """Boot a kernel on ``machine``.

    ``modules`` restricts which kernel modules are initialised (by module name;
    ``None`` = every discovered one). ``module_blacklist=a,b`` on the command line
    blocks plugins and modules by name, as Linux's parameter does. The new kernel is
    left current. Any number of machines may each run a kernel in one process; a
    second kernel on a machine whose kernel is up is refused. The machine's MSIs are
    delivered to this kernel whichever kernel is current when they fire.
    """
    running = _running.get(id(machine))
    if running is not None and running.up and running.machine is machine:
        raise KernelError("a kernel is already running on this machine")
    for pkg in SUBSYSTEM_PACKAGES:
        importlib.import_module(pkg)
    cl = CommandLine.parse(cmdline)
    _register_core_params(cl)
    log = console or printk.LogBuffer()
    log.clock = machine.clock
    tracer = trace.Tracer(now=lambda: machine.clock.now)
    tracer.enabled_patterns.update(filter(None, str(cl.get("trace_event")).split(",")))
    memmgr = mm.MemoryManager(machine.memory, ram=machine.firmware.e820_ram)
    for first, last in machine.firmware.reserved_memory:
        memmgr.e820_reserve(first, last)
    blocked = [b for b in str(cl.get("module_blacklist")).split(",") if b]
    k = Kernel(
        machine=machine,
        cmdline=cl,
        log=log,
        tracer=tracer,
        warn=bug.WarnState(),
        mm=memmgr,
        irq=irq.IrqController(),
        plugins=make_plugin_manager(blocked, builtins, entry_points, extra_plugins),
    )
    k.activate()
    _running[id(machine)] = k
    machine.set_msi_sink(kernel_callback(irq.deliver_msi))
    machine.set_finding_sink(kernel_callback(findings.report_finding))
    machine.set_write_origin(findings.CallChain)
    tracer.on_patterns = lambda on: machine.set_hw_trace_sink(tracer.hw_event if on else None)
    tracer.set_patterns(tracer.enabled_patterns)
    stack = memmgr.vmalloc(mm.THREAD_SIZE, 0, "init_task stack")
    assert stack is not None, "no memory for the init task's stack"
    k.stack = mm.TaskStack(stack, stack + mm.THREAD_SIZE)

    printk.pr_notice(f"Linux version {UTS_RELEASE} (iommulab) #1 SMP")
    printk.pr_notice(f"Command line: {cmdline}")
    printk.pr_info("BIOS-provided physical RAM map:")
    for base, size in memmgr.ram:
        printk.pr_info(f"BIOS-e820: [mem {base:#018x}-{base + size - 1:#018x}] usable")
    total_k = memmgr.total_pages * 4
    printk.pr_info(f"Memory: {memmgr.free_page_count * 4}K/{total_k}K available")
    for sig in machine.firmware.tables:
        units = [u for u in machine.firmware.iommus if u.table == sig]
        printk.pr_info(f"ACPI: {sig} table: {len(units)} IOMMU unit(s)")
    for name, err in k.plugins.report.failed:
        printk.pr_warn(f"iommulab: module {name} failed to load: {err}")
    for name in k.plugins.report.blocked:
        printk.pr_info(f"iommulab: module {name} blacklisted")

    all_modules = k.plugins.hooks.modules()
    k.iommu_drivers = k.plugins.hooks.iommu_drivers()
    k.modules = [
        m for m in all_modules if (modules is None or m.name in modules) and m.name not in blocked
    ]
    for m in k.modules:
        for p in m.params:
            cl.register(p)
    calls = initcalls()
    for level in InitLevel:
        for ic in calls:
            if ic.level == level:
                ic.fn(k)
                k.ran_initcalls.append(ic)
        for m in k.modules:
            if m.level != level:
                continue
            try:
                m.init()
            except KernelError as err:
                k.failed_modules[m.name] = str(err)
                printk.pr_warn(f"{m.name}: module init failed with error -{err.errno} ({err})")
                continue
            k.loaded.append(m)
    for problem in cl.errors:
        _cmdline_problem(k, printk.pr_warn, f"Malformed early option {problem}")
    for pattern in sorted(tracer.enabled_patterns):
        if not trace.pattern_known(pattern):
            _cmdline_problem(k, printk.pr_warn, f"Failed to enable trace event: {pattern}")
    unknown = cl.unclaimed()
    if unknown:
        _cmdline_problem(
            k,
            printk.pr_notice,
            f'Unknown kernel command line parameters "{" ".join(unknown)}", '
            "will be passed to user space.",
        )
    k.up = True
    printk.pr_info(f"iommulab: boot complete at {machine.clock.now} ns")
    return k
