"""``scmt sync``: seed, then incremental syncs of the VMs of a plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli._common import future_time
from scmt_cli.cli.context import current


def sync(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).", metavar="NAME")] = None,
    every: Annotated[Optional[str], typer.Option("--every", help="Keep syncing at this interval, e.g. 30m.",
                                                                metavar="DURATION")] = None,
    until: Annotated[Optional[str], typer.Option(
        "--until", help="Stop an --every or --until-ready run at this time, e.g. 06:00.", metavar="TIME")] = None,
    until_ready: Annotated[
        bool, typer.Option("--until-ready", help="Stop once every VM is ready for cutover.")
    ] = False,
    fleet: Annotated[bool, typer.Option(
        "--fleet", help="Share the VMs with other scmt processes on this state store through leases "
                        "(always on with a postgresql:// store).")] = False,
    remove_foreign_snapshots: Annotated[bool, typer.Option(
        "--remove-foreign-snapshots", help="Also remove scmt snapshots another state store made (by default "
        "they are reported and left alone: a run on that store may be reading them).")] = False,
) -> None:
    """First run seeds (full copy); later runs copy only changed blocks."""
    from scmt_cli.domain.units import parse_duration
    from scmt_cli.errors import UsageError
    from scmt_cli.services.migration.sync import SyncRequest, sync_service
    from scmt_cli.state import StateStore

    ui = current()
    interval = None
    if every is not None:
        try:
            interval = parse_duration(every)
        except ValueError as exc:
            raise UsageError(f"--every: {exc}") from None
        if interval <= 0:
            raise UsageError("--every must be a positive duration, e.g. 30m")
    if until is not None and interval is None and not until_ready:
        raise UsageError("--until needs --every or --until-ready (a single sync stops by itself)")
    stop_at = future_time(until, option="--until") if until is not None else None
    req = SyncRequest(plan=plan, vms=tuple(vm or ()), every=interval, until=stop_at, until_ready=until_ready,
                      fleet=fleet, remove_foreign_snapshots=remove_foreign_snapshots)
    with StateStore.open(ui.opts.state) as store:
        result = sync_service(req, store, ui.reporter)
    ui.finish(result, render)


# Exit codes of errors a plain rerun cannot get past (plan, input, configuration,
# credentials, TLS, preflight, size, read-only target, state): the VM's row says what to fix.
_FIX_FIRST = frozenset({2, 3, 4, 5, 11, 12, 21, 32, 33, 35, 41, 42})


def _size(n: float) -> str:
    from scmt_cli.domain.units import format_size

    return format_size(n)


def render(console: Console, result: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"sync of plan {result.plan}" + (f" ({len(result.rounds)} rounds)" if len(result.rounds) > 1
                                                           else ""))
    for col in ("VM", "pass", "state", "read", "written", "time", "throughput", "result"):
        table.add_column(col, overflow="fold")
    for o in result.last.values():
        d = o.data
        secs = d.get("seconds")
        rate = d.get("throughput_bytes_per_s")
        table.add_row(
            o.vm, str(d.get("kind", o.action or "-")), o.state or "-",
            _size(d["bytes_read"]) if "bytes_read" in d else "-",
            _size(d["bytes_written"]) if "bytes_written" in d else "-",
            f"{secs:.2f} s" if secs is not None else "-",
            f"{_size(rate)}/s" if rate else "-",
            Text("ok", style="green") if o.ok else Text.assemble(("failed", "bold red"), f" ({o.error})"),
        )
    console.print(table)
    for o in result.last.values():
        if isinstance(o.data.get("agent"), dict):  # agent VMs: what the agent used on the source this pass
            from scmt_cli.cli.agent import agent_line

            console.print(f"{o.vm}: agent {agent_line(o.data['agent'])}", markup=False, highlight=False)
    if result.stopped:
        console.print(f"stopped: {result.stopped}", markup=False)
    if result.failed:
        failed = [o for o in result.last.values() if not o.ok]
        blocked = [o.vm for o in failed if o.error_code == 20]
        to_fix = [o.vm for o in failed if o.error_code in _FIX_FIRST]
        resumable = [o.vm for o in failed if o.vm not in blocked and o.vm not in to_fix]
        if blocked:  # rerunning does not help: the assessment blockers must be fixed first
            console.print(f"{len(blocked)} VM(s) blocked by assessment: {', '.join(blocked)}; 'scmt assess PLAN' "
                          "lists the remedies (rerunning sync does not help)", style="bold red", markup=False)
        if to_fix:
            console.print(f"{len(to_fix)} VM(s) failed: {', '.join(to_fix)}; fix the error shown, then run scmt sync "
                          "again", style="bold red", markup=False)
        if resumable:
            console.print(f"{len(resumable)} VM(s) failed: {', '.join(resumable)}; run scmt sync again to resume "
                          "them", style="bold red", markup=False)
    for w in result.to_dict()["warnings"]:
        console.print(f"warning: {w}", style="yellow", markup=False, highlight=False)
