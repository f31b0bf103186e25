"""``scmt demo``: the whole flow on an embedded lab."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli.context import current


def demo(
    keep: Annotated[Optional[Path], typer.Option(
        "--keep", help="Keep the lab in this directory (new, empty, or an unfinished demo's: it starts over).",
        metavar="DIR")] = None,
    boot: Annotated[bool, typer.Option("--boot", help=(
        "Also migrate a real Debian guest (built once from Debian packages, then cached), convert it when "
        "virt-v2v is installed, boot it with QEMU and check the data it reports. Minutes, not seconds."))] = False,
) -> None:
    """Build a lab (fake vCenter, workload), then assess, plan, sync, fail over, verify, roll back.

    Needs no network and no arguments; takes a few seconds.  Exit code 0 only
    if every step passed and every target disk matched its source byte for byte
    (31 when one did not), 1 when a step warned (each warning is printed once),
    else the failed step's code.  A missing external tool (openssl; with --boot
    also QEMU, debugfs and the guest build tools) is exit 5 naming its package.
    The demo does not continue where it stopped: run again after an interruption,
    it starts over (with --keep, in the same directory, unless a finished demo is
    kept there).
    """
    from scmt_cli.services.demo import DemoRequest, run_demo

    ui = current()
    result = run_demo(DemoRequest(keep=keep, boot=boot), ui.reporter)
    ui.finish(result, render)


def render(console: Console, result: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    steps = Table(title="scmt demo: what happened", show_lines=False)
    for col in ("step", "time", "result"):
        steps.add_column(col, overflow="fold")
    for s in result.steps:
        mark = ("ok", "green") if s["ok"] else ("FAILED", "bold red")
        steps.add_row(s["step"], f"{s['seconds']:.2f} s", Text.assemble(mark, f" {s['detail']}"))
    console.print(steps)
    if result.vms:
        vms = Table(title="VMs")
        for col in ("VM", "state", "downtime", "rollback"):
            vms.add_column(col)
        for v in result.vms:
            down = "-" if v["downtime_seconds"] is None else f"{v['downtime_seconds']:.2f} s"
            back = "-" if v["rollback_seconds"] is None else f"{v['rollback_seconds']:.2f} s"
            vms.add_row(v["vm"], v["state"], down, back)
        console.print(vms)
    if result.boot is not None:
        b = result.boot
        console.print(f"{b['vm']} booted in {b['seconds']:.1f} s ({b['accel']}); the guest's own line:",
                      markup=False)
        console.print(f"  {b['guest_line']}", markup=False, highlight=False)
        console.print(f"  data verified: {b['data_verified']} (expected {b['expected']})", markup=False,
                      highlight=False)
    ok = sum(1 for v in result.verifications if v["ok"])
    style = "bold green" if result.passed else "bold red"
    console.print(f"{ok}/{len(result.verifications)} verifications passed in {result.seconds:.1f} s",
                  style=style, markup=False)
    if result.passed:
        console.print("every target disk is byte-identical to its source at the moment it was quiesced"
                      + (f"; the booted guest {result.boot['vm']} reports exactly its data of that moment"
                         if result.boot else ""),
                      markup=False)
    if result.lab_dir:
        console.print(f"lab kept in {result.lab_dir}; explore it with:", markup=False)
        for line in result.explore:
            console.print(f"  {line}", markup=False, highlight=False)
