"""``scmt boot``: start a failed-over VM with QEMU and check what its console says."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli._common import duration
from scmt_cli.cli.context import current

AccelOpt = Annotated[str, typer.Option("--accel", metavar="auto|kvm|tcg", help=(
    "QEMU acceleration. auto: KVM when /dev/kvm works and the CPU has vmx/svm, else TCG (libvirt: the domain's "
    "type); a KVM boot with no console progress is redone with TCG. On libvirt, kvm|tcg set the type of a "
    "shut-off domain."))]
ExpectOpt = Annotated[Optional[str], typer.Option("--expect", metavar="VALUE", help=(
    "The value the guest's ready line must carry (e.g. its data checksum taken at quiesce): data_verified."))]
ReadyOpt = Annotated[Optional[str], typer.Option("--ready", metavar="REGEX", help=(
    "The console line that means 'booted'; its first group is the guest's value. "
    "Default: 'SCMT-GUEST-READY (\\S+)'."))]
TimeoutOpt = Annotated[float, typer.Option("--timeout", metavar="DURATION", parser=duration(1), show_default=False,
                                           help="Give up when no ready line came in this time (default: 15m).")]
StallOpt = Annotated[float, typer.Option("--stall", metavar="DURATION", parser=duration(1), show_default=False,
                                         help="Give up when the console shows nothing new for this long "
                                              "(default: 3m).")]


def boot(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    vm: Annotated[str, typer.Option("--vm", help="The VM to boot (cut-over or committed).", metavar="NAME")],
    accel: AccelOpt = "auto",
    expect: ExpectOpt = None,
    ready: ReadyOpt = None,
    timeout: TimeoutOpt = 900.0,
    stall: StallOpt = 180.0,
) -> None:
    """Boot a failed-over VM and wait for its ready line on the serial console.

    type: dir: runs the generated domain.xml with qemu-system-x86_64 (disk buses, memory, CPUs), no display,
    no NIC, console to <vm>/console.log, and stops QEMU afterwards.  type: libvirt: starts the domain through
    libvirt when it is off, or watches the one failover started (the time then counts from that start),
    reading <vm>/console.log; the VM keeps running.  Reports booted, seconds to the ready line and the guest's
    line; the boot time is recorded and shown by 'scmt status'.  A guest value other than --expect is exit
    31; a VM that has not failed over, 42; a boot that fails, 53.
    """
    from scmt_cli.services.migration.boot import BootRequest, boot_service
    from scmt_cli.state import StateStore
    from scmt_cli.targets.console import DEFAULT_READY

    ui = current()
    req = BootRequest(plan=plan, vm=vm, accel=accel, expect=expect, ready=ready or DEFAULT_READY,
                      timeout_s=timeout, stall_s=stall)
    with StateStore.open(ui.opts.state) as store:
        result = boot_service(req, store, ui.reporter)
    ui.finish(result, render)


def render(console: Console, result: Any) -> None:
    if result.command == "test-failover-cleanup":
        what = ", ".join(result.removed) or "nothing to remove"
        console.print(f"{result.vm}: test failover cleaned up ({what})", markup=False, highlight=False)
        return
    out = result.outcome
    title = "test copy" if result.command == "test-failover" else "target"
    if out is not None:
        via = f"libvirt domain {out.domain}, " if out.platform == "libvirt" else ""
        console.print(f"{result.vm}: {title} booted in {out.seconds:.1f} s ({via}{out.accel}); guest says: "
                      f"{out.ready_line}", markup=False, highlight=False)
        if result.data_verified is not None:
            verdict = "equal to" if result.data_verified else "DIFFERENT from"
            console.print(f"{result.vm}: guest value {verdict} the expected {result.expected}",
                          style="green" if result.data_verified else "bold red", markup=False, highlight=False)
        console.print(f"console log: {out.console_log}", markup=False, highlight=False)
    if result.command == "test-failover":
        if result.clone is not None:
            console.print(f"test copy: a {result.clone['method']} of the synced disks (sync pass "
                          f"{result.clone['generation']}), taken in {result.clone['seconds']:.2f} s",
                          markup=False, highlight=False)
        running = f" (its domain {out.domain} keeps running)" if out is not None and out.domain else ""
        console.print(f"test copy kept in {result.test_dir}{running}; remove it with: scmt failover PLAN --vm "
                      f"{result.vm} --test --cleanup", markup=False, highlight=False)
