"""``scmt failover``: switch VMs (or a group) over to the target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli._common import DryRunOpt, V2vStallOpt, V2vTimeoutOpt, future_time
from scmt_cli.cli.boot import AccelOpt, ExpectOpt, ReadyOpt, StallOpt, TimeoutOpt
from scmt_cli.cli.context import current


def failover(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).", metavar="NAME")] = None,
    group: Annotated[Optional[str], typer.Option("--group", help="Fail over this group together.",
                                                                        metavar="GROUP")] = None,
    at: Annotated[Optional[str], typer.Option(
        "--at", help="Wait for this time (the scheduled switch), e.g. 22:00.", metavar="TIME")] = None,
    source_action: Annotated[
        Optional[str], typer.Option("--source-action", metavar="ACTION",
                                    help="disconnect-network | shutdown | none (default: the plan's).")
    ] = None,
    target_state: Annotated[Optional[str], typer.Option("--target-state", help="on | off (default: the plan's).",
                                                                                        metavar="STATE")] = None,
    direct: Annotated[bool, typer.Option("--direct", help="Skip guest conversion (directly fail over).")] = False,
    dry_run: DryRunOpt = False,
    v2v_timeout: V2vTimeoutOpt = None,
    v2v_stall_timeout: V2vStallOpt = None,
    keep_source_down: Annotated[bool, typer.Option(
        "--keep-source-down",
        help="When guest conversion fails, leave the source quiesced for a retry (default: roll it back).")] = False,
    test: Annotated[bool, typer.Option("--test", help=(
        "Test failover: boot a throw-away, point-in-time clone of the synced disks, isolated; syncs may go on "
        "meanwhile; the source, the synced disks and the VM's state are untouched."))] = False,
    cleanup: Annotated[bool, typer.Option("--cleanup", help=(
        "With --test: stop the test copy (libvirt) and remove it."))] = False,
    accel: AccelOpt = "auto",
    expect: ExpectOpt = None,
    ready: ReadyOpt = None,
    timeout: TimeoutOpt = 900.0,
    stall: StallOpt = 180.0,
) -> None:
    """Quiesce the source, copy the final delta, start the target.

    Reports the measured downtime per VM (source quiesced -> target started).
    A killed failover resumes at the first step not done when run again.
    Guest conversion (virt-v2v-in-place) is a supervised step: its log path,
    progress and elapsed time are reported, and one that fails, times out or
    stalls (exit 52) leaves the synced disks unchanged and rolls the source
    back (unless --keep-source-down).
    A real failover refuses (42) while a test copy exists.

    With --test (one --vm): clones the synced disks (reflink, else a sparse copy; exit 30 without room),
    then converts and boots the clone in <vm>/test-failover/ like 'scmt boot' (exit 53 when it does not
    boot; on libvirt it keeps running as <vm>-scmt-test); --test --cleanup removes it.
    """
    from scmt_cli.errors import UsageError
    from scmt_cli.services.migration.failover import SOURCE_ACTIONS, FailoverRequest, failover_service
    from scmt_cli.state import StateStore

    if source_action is not None and source_action not in SOURCE_ACTIONS:
        raise UsageError(f"--source-action {source_action!r}: expected one of {', '.join(SOURCE_ACTIONS)}")
    if target_state is not None and target_state not in ("on", "off"):
        raise UsageError(f"--target-state {target_state!r}: expected on or off")
    if cleanup and not test:
        raise UsageError("--cleanup goes with --test")
    if dry_run and test:
        raise UsageError("--dry-run previews a real failover; a test failover (--test) changes nothing already")
    ui = current()
    if test:
        _test(plan, vm, direct=direct, cleanup=cleanup, accel=accel, expect=expect, ready=ready, timeout=timeout,
              stall=stall, ui=ui)
        return
    when = future_time(at, option="--at") if at is not None else None
    req = FailoverRequest(plan=plan, vms=tuple(vm or ()), group=group, at=when, source_action=source_action,
                          target_state=target_state, direct=direct, v2v_timeout=v2v_timeout,
                          v2v_stall_timeout=v2v_stall_timeout, keep_source_down=keep_source_down)
    if dry_run:
        from scmt_cli.cli.preview import render as render_preview
        from scmt_cli.services.migration.preview import preview_failover

        ui.finish(preview_failover(req, ui.opts.state, ui.reporter), render_preview, document="preview")
        return
    with StateStore.open(ui.opts.state) as store:
        result = failover_service(req, store, ui.reporter)
    ui.finish(result, render)


def _test(plan: Path, vm: Optional[list[str]], *, direct: bool, cleanup: bool, accel: str, expect: Optional[str],
          ready: Optional[str], timeout: float, stall: float, ui: Any) -> None:
    from scmt_cli.cli.boot import render as render_boot
    from scmt_cli.errors import UsageError
    from scmt_cli.services.migration.boot import BootRequest, boot_service
    from scmt_cli.state import StateStore
    from scmt_cli.targets.console import DEFAULT_READY

    if not vm or len(vm) != 1:
        raise UsageError("--test needs exactly one --vm NAME")
    req = BootRequest(plan=plan, vm=vm[0], accel=accel, expect=expect, ready=ready or DEFAULT_READY,
                      timeout_s=timeout, stall_s=stall, direct=direct)
    with StateStore.open(ui.opts.state) as store:
        result = boot_service(req, store, ui.reporter, test=True, cleanup=cleanup)
    ui.finish(result, render_boot)


def render(console: Console, result: Any) -> None:
    from scmt_cli.cli._migration_view import render_outcomes

    render_outcomes(console, result, title=f"failover of plan {result.plan}",
                    columns=[("source action", "source_action"), ("downtime", "downtime_seconds")])
