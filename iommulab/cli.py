"""The ``iommulab`` command line (argparse; plugins add subcommands through the
``iommulab_add_subcommands`` hook).

Subcommands: ``boot``, ``demo``, ``dump NAME``, ``trace [SCENARIO]``,
``scenario run FILE.py``, ``replay TRACE``, ``plugins``. Every command that boots takes
``--machine PRESET`` / ``--machine-file FILE`` / ``--cmdline TEXT`` / ``--modules``.

``dump`` offers every :class:`kernel.debugfs.DumpTarget` the plugins contribute
through ``iommulab_dump_targets``, plus the kernel core's own targets
(``iommu-groups``, ``pasid``, ``dma-mappings``), which live in
:mod:`kernel.iommu.debugfs` and :mod:`kernel.dma.debugfs` and are registered here
as explicit plugins (:data:`CORE_PLUGINS`). A target's ``render(args)`` runs with
the booted kernel current and as ``args.kernel``, and ``args.format`` set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from hw.kinds import discover as discover_kinds
from hw.machine import Machine, MachineSpec
from iommulab import bootcheck, checks, demo, hwdump
from iommulab import trace as tracing
from iommulab.presets import PRESETS, load_machine_file, preset
from iommulab.replay import command as replay
from iommulab.scenario import Scenario, ScenarioError, load_scenario, run_scenario
from kernel.boot import Kernel, boot, current_kernel
from kernel.debugfs import DumpTarget
from kernel.dma import debugfs as dma_debugfs
from kernel.iommu import debugfs as iommu_debugfs
from kernel.plugin import PluginManager, make_plugin_manager

CORE_PLUGINS: tuple[tuple[str, object], ...] = (
    ("iommu-debugfs", iommu_debugfs),
    ("dma-debugfs", dma_debugfs),
)
"""Kernel-core plugins the front door registers (the generic dump targets)."""

DEFAULT_MACHINE = "default"


def machine_spec(args: argparse.Namespace) -> MachineSpec:
    if getattr(args, "machine_file", None):
        return load_machine_file(args.machine_file)
    return preset(getattr(args, "machine", None) or DEFAULT_MACHINE)


def boot_from_args(args: argparse.Namespace, cmdline: str | None = None) -> Kernel:
    """Boot the machine the arguments describe, with the core plugins registered."""
    modules = bootcheck.modules_arg(getattr(args, "modules", None))
    text = args.cmdline if cmdline is None else cmdline
    k = boot(Machine(machine_spec(args)), text, modules, extra_plugins=CORE_PLUGINS)
    bootcheck.warn_cmdline(k)
    return k


def _add_machine_args(p: argparse.ArgumentParser, default: str | None = DEFAULT_MACHINE) -> None:
    # also accepted after the subcommand; SUPPRESS keeps a top-level --debug
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    p.add_argument(
        "--machine",
        default=default,
        choices=sorted(PRESETS),
        help=f"machine preset (default: {default or 'the scenario MACHINE, else default'})",
    )
    p.add_argument("--machine-file", help="machine description (.toml or .json)")
    p.add_argument("--cmdline", default=None, help="kernel command line")
    p.add_argument("--modules", help="comma-separated kernel modules to load (default: all)")


def _cmdline(args: argparse.Namespace, scenario: Scenario | None = None) -> str:
    if args.cmdline is not None:
        return str(args.cmdline)
    return scenario.cmdline if scenario is not None and scenario.cmdline else ""


def _emit(text: str, output: str | None) -> None:
    if output and output != "-":
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)


# --------------------------------------------------------------------------- boot / plugins


def cmd_boot(args: argparse.Namespace) -> int:
    k = boot_from_args(args, _cmdline(args))
    print(k.dmesg())
    k.shutdown()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    args.cmdline = _cmdline(args)
    return demo.run(args)


def cmd_plugins(args: argparse.Namespace) -> int:
    pm = plugin_manager()
    print(f"{'module':<20} {'origin':<12} distribution")
    for p in pm.report.loaded:
        dist = f"{p.distribution} {p.version}".strip() or "-"
        print(f"{p.name:<20} {p.origin:<12} {dist}")
    for name, err in pm.report.failed:
        print(f"{name:<20} {'FAILED':<12} {err}")
    for name in pm.report.blocked:
        print(f"{name:<20} {'blocked':<12} -")
    for d in pm.hooks.iommu_drivers():
        print(f"iommu driver {d.name!r} claims firmware table {d.table}")
    for m in pm.hooks.modules():
        print(f"kernel module {m.name!r} (init level {m.level.name}): {m.description}")
    for t in dump_targets(pm):
        print(f"dump target {t.name!r} ({', '.join(t.formats)}): {t.help}")
    kinds = discover_kinds()
    for what, table in (("IOMMU", kinds.iommus), ("device", kinds.devices)):
        for kind in sorted(table):
            print(f"{what} kind {kind!r}: {kinds.origins.get(kind, 'built-in')}")
    for problem in kinds.problems:
        print(f"FAILED {problem}")
    return 0


def plugin_manager() -> PluginManager:
    return make_plugin_manager(extra=CORE_PLUGINS)


# --------------------------------------------------------------------------- dump


def dump_targets(pm: PluginManager) -> list[DumpTarget]:
    """Every target the plugins provide, plus hardware-model fallbacks for the
    driver targets (``vtd``, ``dsa``) that no plugin provides yet."""
    targets = {t.name: t for t in pm.hooks.dump_targets()}
    for name, (fallback, _) in hwdump.FALLBACKS.items():
        targets.setdefault(name, fallback)
    return [targets[n] for n in sorted(targets)]


def _output_formats(target: DumpTarget) -> list[str]:
    fmts = list(target.formats)
    return [*fmts, "svg"] if "dot" in fmts else fmts


def _scenario_arg(value: str | None) -> Scenario | None:
    if value is None:
        return None
    if value == "demo":
        fn = getattr(demo, "scenario", None)
        if not callable(fn):
            raise ValueError(
                "the demo does not offer scenario(kernel) yet (iommulab/demo.py); "
                "pass a scenario file instead"
            )
        return Scenario("demo", fn)
    return load_scenario(value)


def _render_dump(target_name: str, k: Kernel, args: argparse.Namespace) -> str:
    provided = {t.name: t for t in k.plugins.hooks.dump_targets()}
    target = provided.get(target_name)
    if target is None and target_name in hwdump.FALLBACKS:
        target, note = hwdump.FALLBACKS[target_name]
        print(note, file=sys.stderr)
    if target is None:
        raise ValueError(f"dump target {target_name!r} is not provided by the booted kernel")
    args.kernel = k
    args.format = "dot" if args.output_format == "svg" else args.output_format
    k.activate()
    if getattr(args, "unit", None) is not None and args.caches is None:
        raise ValueError("--unit selects a unit for --caches; add --caches")
    if getattr(args, "caches", None) is not None:
        return hwdump.render_caches(target_name, k.machine, args.unit, args.caches)
    return target.render(args)


def cmd_dump(args: argparse.Namespace) -> int:
    if args.target is None:
        print(f"{'target':<14} {'formats':<16} description")
        for t in dump_targets(plugin_manager()):
            print(f"{t.name:<14} {','.join(_output_formats(t)):<16} {t.help}")
        return 0
    if args.output_format == "svg" and shutil.which("dot") is None:
        raise ValueError(
            "--format svg needs Graphviz's dot program (e.g. apt install graphviz); "
            "use --format dot and render it elsewhere"
        )
    scenario = _scenario_arg(args.scenario)
    if args.machine is None and scenario is not None:
        args.machine = scenario.machine
    k = boot_from_args(args, _cmdline(args, scenario))
    try:
        if scenario is not None:
            run_scenario(k, scenario)
        text = _render_dump(args.target, k, args)
    finally:
        k.shutdown()
    if args.output_format == "svg":
        done = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True)
        if done.returncode:
            raise ValueError(f"dot failed: {done.stderr.strip()}")
        text = done.stdout
    _emit(text, args.output)
    return 0


def _add_dump(sub: argparse._SubParsersAction[argparse.ArgumentParser], pm: PluginManager) -> None:
    p = sub.add_parser("dump", help="show kernel or hardware state like the debugfs files")
    p.set_defaults(func=cmd_dump, target=None)
    targets = p.add_subparsers(dest="target", metavar="TARGET")
    for t in dump_targets(pm):
        tp = targets.add_parser(t.name, help=t.help, description=t.help)
        _add_machine_args(tp, None)
        fmts = _output_formats(t)
        tp.add_argument("--format", dest="output_format", choices=fmts, default=fmts[0])
        tp.add_argument("-o", "--output", help="write to this file instead of stdout")
        tp.add_argument(
            "--scenario", help="scenario file (.py with scenario(kernel)) to run before dumping"
        )
        if t.add_arguments is not None:
            t.add_arguments(tp)
        if t.name in hwdump.CACHE_DUMPS:
            caches = hwdump.CACHE_DUMPS[t.name][1]
            tp.add_argument(
                "--caches",
                nargs="?",
                const="all",
                metavar="CACHE",
                help=f"the hardware units' cache entries with their tags instead "
                f"(one of: {', '.join(caches)}; default all)",
            )
            tp.add_argument("--unit", help="with --caches: only this unit (dmar0, smmu0 ...)")


# --------------------------------------------------------------------------- trace


def _run_demo_traced(args: argparse.Namespace, cmdline: str) -> tuple[Kernel, int]:
    """Run ``iommulab demo`` with tracing on the command line; its output goes to
    stderr so that stdout can carry the trace. Returns the kernel and the demo's
    exit status."""
    dp = argparse.ArgumentParser(add_help=False)
    _add_machine_args(dp)
    demo.add_arguments(dp)
    ns = dp.parse_args([])
    ns.machine = args.machine or DEFAULT_MACHINE
    ns.machine_file = args.machine_file
    ns.modules = args.modules
    ns.cmdline = cmdline
    with contextlib.redirect_stdout(sys.stderr):
        rc = demo.run(ns)
    return current_kernel(), rc


def _run_scenario_traced(args: argparse.Namespace) -> tuple[Kernel, int]:
    """Boot with tracing on, run the scenario file and shut down; the status is the
    one ``scenario run`` would give (1 when the run left findings). A scenario that
    raises still has its trace written before the error is reported."""
    scenario = load_scenario(args.scenario)
    if args.machine is None:
        args.machine = scenario.machine
    k = boot_from_args(args, tracing.traced_cmdline(_cmdline(args, scenario), args.events))
    base = checks.baseline(k)
    failure: ScenarioError | None = None
    try:
        run_scenario(k, scenario)
    except ScenarioError as err:
        failure = err
    finally:
        k.shutdown()
    if failure is not None:
        _write_trace(k, args)
        raise failure
    found = checks.findings(base)
    _print_findings(found)
    return k, 1 if found else 0


def _write_trace(k: Kernel, args: argparse.Namespace) -> None:
    events, overflowed = tracing.recorded(k)
    if overflowed:
        print("iommulab: trace ring full; the oldest events were dropped", file=sys.stderr)
    _emit(tracing.render(events, args.format), args.output)
    if args.output and args.output != "-":
        print(f"iommulab: wrote {len(events)} events to {args.output}", file=sys.stderr)


def cmd_trace(args: argparse.Namespace) -> int:
    """Write the trace, then exit with the run's status (the demo's, or 1 when a
    scenario file left findings)."""
    if args.scenario == "demo":
        k, rc = _run_demo_traced(args, tracing.traced_cmdline(_cmdline(args), args.events))
    else:
        k, rc = _run_scenario_traced(args)
    _write_trace(k, args)
    if rc:
        print(f"iommulab: the traced run failed (exit status {rc})", file=sys.stderr)
    return rc


def _add_trace(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "trace",
        help="run a scenario with tracepoints on (ftrace text or Perfetto JSON)",
        description="Run the demo (default) or a scenario file with tracepoints enabled. "
        "JSON output is the Chrome/Perfetto trace-event format: open it in ui.perfetto.dev.",
    )
    p.add_argument("scenario", nargs="?", default="demo", help="'demo' or a scenario .py file")
    _add_machine_args(p, None)
    p.add_argument("--format", choices=tracing.FORMATS, default="text")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument(
        "--events",
        default="*",
        help="tracepoints to enable: comma-separated system:event, system:* or * (default)",
    )
    p.set_defaults(func=cmd_trace)


# --------------------------------------------------------------------------- scenario


def cmd_scenario_run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.file)
    if args.machine is None:
        args.machine = scenario.machine
    k = boot_from_args(args, _cmdline(args, scenario))
    base = checks.baseline(k)
    try:
        result = run_scenario(k, scenario)
    finally:
        k.shutdown()
    if result is not None:
        print(result)
    if args.dmesg:
        print(k.dmesg())
    found = checks.findings(base)
    _print_findings(found)
    if args.findings_json:
        every = [*k.findings, *(f for f in found if f.check in ("warn", "leak"))]
        doc = json.dumps([f.to_json() for f in every], indent=1)
        _emit(doc + "\n", args.findings_json)
    status = "FAILED" if found else "ok"
    print(f"{scenario.name}: {status} ({checks.summary(found)})")
    return 1 if found else 0


def _print_findings(found: list[checks.Finding]) -> None:
    """Each finding on stderr, a stale use or a sanitizer report with its cause."""
    for f in found:
        print(f"  {checks.finding_text(f)}", file=sys.stderr)


def _add_scenario(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("scenario", help="run user scenarios")
    ssub = p.add_subparsers(dest="scenario_command", required=True)
    run = ssub.add_parser(
        "run",
        help="boot, run FILE.py's scenario(kernel), shut down and check the kernel's health",
        description="Exit status 1 when the run WARNed, used a stale translation, made a "
        "DMA-API error or leaked memory.",
    )
    run.add_argument("file", help="a .py file defining scenario(kernel)")
    _add_machine_args(run, None)
    run.add_argument("--dmesg", action="store_true", help="print the kernel log afterwards")
    run.add_argument(
        "--findings-json",
        metavar="FILE",
        help="write every finding of the run (stale uses, faults, DMA-API and page-table "
        "ownership reports) as JSON to FILE ('-': stdout)",
    )
    run.set_defaults(func=cmd_scenario_run)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iommulab",
        description="Linux IOMMU/DMA layering over register-accurate VT-d and DSA models",
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the full traceback when a command fails"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("boot", help="boot a machine and print the kernel log")
    _add_machine_args(p)
    p.set_defaults(func=cmd_boot)
    p = sub.add_parser("plugins", help="list kernel modules and where they come from")
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("demo", help="run the founding scenario")
    _add_machine_args(p)
    demo.add_arguments(p)
    p.set_defaults(func=cmd_demo)
    pm = plugin_manager()
    _add_dump(sub, pm)
    _add_trace(sub)
    _add_scenario(sub)
    replay.add_parser(sub)
    pm.hooks.add_subcommands(sub)
    return parser


def _describe(exc: Exception) -> str:
    """One line for an error that is not a ``ValueError`` (those are written for
    the user already)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Errors are one line on stderr (a scenario's also names the
    user's frame) with exit status 2 for bad input and 1 for a failed scenario; the
    traceback is printed only with ``--debug``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        rc: int = args.func(args)
    except ScenarioError as exc:
        print(f"iommulab: error: scenario {exc}", file=sys.stderr)
        print(exc.where, file=sys.stderr)
        if debug:
            traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        else:
            print("(run with --debug for the full traceback)", file=sys.stderr)
        return 1
    except ValueError as exc:
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"iommulab: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"iommulab: error: {_describe(exc)}", file=sys.stderr)
        if not debug:
            print("(run with --debug for the full traceback)", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
