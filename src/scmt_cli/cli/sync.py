"""``scmt sync``: seed, then incremental syncs of the VMs of a plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli._common import BandwidthOpt, DryRunOpt, future_time, group_option
from scmt_cli.cli.context import current, line


def sync(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).", metavar="NAME")] = None,
    group: Annotated[Optional[str], group_option("Sync")] = None,
    every: Annotated[Optional[str], typer.Option(
        "--every", help="Keep syncing at this interval, e.g. 30m; each round's result is printed as it ends "
                        "(--json: one document per round, JSON lines).", metavar="DURATION")] = None,
    until: Annotated[Optional[str], typer.Option(
        "--until", help="Stop an --every or --until-ready run at this time, e.g. 06:00 (the next one; the "
                        "resolved date and time are printed).", metavar="TIME")] = None,
    until_ready: Annotated[
        bool, typer.Option("--until-ready", help="Stop once every VM is ready for cutover.")
    ] = False,
    bandwidth: BandwidthOpt = None,
    dry_run: DryRunOpt = False,
    fleet: Annotated[bool, typer.Option(
        "--fleet", help="Share the VMs with other scmt processes on this state store through leases "
                        "(always on with a postgresql:// store).")] = False,
    remove_foreign_snapshots: Annotated[bool, typer.Option(
        "--remove-foreign-snapshots", help="Also remove scmt snapshots another state store made (by default "
        "they are reported and left alone: a run on that store may be reading them).")] = False,
) -> None:
    """First run seeds (full copy); later runs copy only changed blocks.

    With --every or --until-ready each round's table is printed as the round ends, and the run ends
    with a summary of its rounds, also when Ctrl-C (exit 130) or SIGTERM (143) stops it.
    """
    from scmt_cli.cli.main import TerminatedSignal
    from scmt_cli.domain.units import parse_duration
    from scmt_cli.errors import UsageError
    from scmt_cli.services.migration.sync import SyncRequest, SyncResult, sync_service
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
    req = SyncRequest(plan=plan, vms=tuple(vm or ()), group=group, every=interval, until=stop_at,
                      until_ready=until_ready, fleet=fleet, remove_foreign_snapshots=remove_foreign_snapshots,
                      bandwidth=bandwidth)
    if dry_run:
        _preview(req, ui)
        return
    looping = interval is not None or until_ready
    rounds: list[SyncResult] = []

    def show_round(result: SyncResult) -> None:
        rounds.append(result)
        if looping:
            ui.emit(result, render)

    with StateStore.open(ui.opts.state) as store:
        try:
            result = sync_service(req, store, ui.reporter, on_round=show_round)
        except (KeyboardInterrupt, TerminatedSignal) as exc:
            if looping and rounds:  # the rounds done, before the error line says how to go on
                sigint = isinstance(exc, KeyboardInterrupt)
                ui.finish(SyncResult(rounds[0].plan, rounds=[r.rounds[0] for r in rounds], host=rounds[0].host,
                                     until=stop_at, finished_at=[t for r in rounds for t in r.finished_at],
                                     stopped="interrupted (SIGINT)" if sigint else "terminated (SIGTERM)",
                                     interrupted=130 if sigint else 143), render_summary)
            raise
    ui.finish(result, render_summary if looping else render)


def _preview(req: Any, ui: Any) -> None:
    from scmt_cli.cli.preview import render as render_preview
    from scmt_cli.services.migration.preview import preview_sync

    ui.finish(preview_sync(req, ui.opts.state, ui.reporter), render_preview, document="preview")


# Exit codes of errors a plain rerun cannot get past (plan, input, configuration,
# credentials, TLS, preflight, size, read-only target, state): the VM's row says what to fix.
_FIX_FIRST = frozenset({2, 3, 4, 5, 11, 12, 21, 32, 33, 35, 41, 42})


def _size(n: float) -> str:
    from scmt_cli.domain.units import format_size

    return format_size(n)


def _clock(ts: float) -> str:
    import time

    return time.strftime("%H:%M:%S", time.localtime(ts))


def render(console: Console, result: Any) -> None:
    """One round: a row per VM (pass, state, bytes read and written, time, read rate, result)."""
    from rich.text import Text

    from scmt_cli.cli.tables import Column, fit_table

    rows = list(result.last.values())
    data = [o.data for o in rows]
    cols = [
        Column("VM", [o.vm for o in rows]),
        Column("pass", [str(d.get("kind", o.action or "-")) for o, d in zip(rows, data, strict=True)]),
        Column("state", [o.state or "-" for o in rows]),
        Column("read", [_size(d["bytes_read"]) if "bytes_read" in d else "-" for d in data], keep=4, whole=True),
        Column("written", [_size(d["bytes_written"]) if "bytes_written" in d else "-" for d in data], keep=2,
               whole=True),
        Column("time", [f"{d['seconds']:.2f} s" if d.get("seconds") is not None else "-" for d in data], keep=3,
               whole=True),
        Column("read rate", [f"{_size(d['throughput_bytes_per_s'])}/s" if d.get("throughput_bytes_per_s") else "-"
                             for d in data], keep=1, whole=True),
        Column("result", [Text("ok", style="green") if o.ok else Text.assemble(("failed", "bold red"), f" ({o.error})")
                          for o in rows]),
    ]
    if result.round is not None:
        ended = f" (ended {_clock(result.finished_at[-1])})" if result.finished_at else ""
        title = f"sync of plan {result.plan}: round {result.round}{ended}"
    else:
        title = f"sync of plan {result.plan}" + (f" ({len(result.rounds)} rounds)" if len(result.rounds) > 1 else "")
    table, _ = fit_table(console.width, cols, title=title)
    console.print(table)
    for o in result.last.values():
        for change in o.data.get("source_changes", ()):  # what this run changed on a production VM
            line(console, f"{o.vm}: on the source: {change}", "yellow")
        if isinstance(o.data.get("agent"), dict):  # agent VMs: what the agent used on the source this pass
            from scmt_cli.cli.agent import agent_line

            console.print(f"{o.vm}: agent {agent_line(o.data['agent'])}", markup=False, highlight=False)
    if result.round is None:
        _footer(console, result)


def render_summary(console: Console, result: Any) -> None:
    """The end of an --every/--until-ready run (each round was printed as it ended): a row per round."""
    from scmt_cli.cli.tables import Column, fit_table

    def total(outs: list[Any], key: str) -> int:
        return sum(int(o.data.get(key, 0)) for o in outs)

    rounds = result.rounds
    ends = list(result.finished_at) + [None] * (len(rounds) - len(result.finished_at))
    cols = [
        Column("round", [str(i + 1) for i in range(len(rounds))]),
        Column("ended", [_clock(t) if t is not None else "-" for t in ends]),
        Column("VMs ok", [str(sum(o.ok for o in r)) for r in rounds]),
        Column("failed", [", ".join(o.vm for o in r if not o.ok) or "-" for r in rounds]),
        Column("read", [_size(total(r, "bytes_read")) for r in rounds], whole=True),
        Column("written", [_size(total(r, "bytes_written")) for r in rounds], whole=True, keep=1),
    ]
    table, _ = fit_table(console.width, cols, title=f"sync of plan {result.plan}: {len(rounds)} round(s)")
    console.print(table)
    _footer(console, result)


def _footer(console: Console, result: Any) -> None:
    if result.stopped:
        line(console, f"stopped: {result.stopped}")
    if result.failed:
        failed = [o for o in result.last.values() if not o.ok]
        blocked = [o.vm for o in failed if o.error_code == 20]
        to_fix = [o.vm for o in failed if o.error_code in _FIX_FIRST]
        resumable = [o.vm for o in failed if o.vm not in blocked and o.vm not in to_fix]
        if blocked:  # rerunning does not help: the assessment blockers must be fixed first
            line(console, f"{len(blocked)} VM(s) blocked by assessment: {', '.join(blocked)}; 'scmt assess PLAN' "
                          "lists the remedies (rerunning sync does not help)", "bold red")
        if to_fix:
            line(console, f"{len(to_fix)} VM(s) failed: {', '.join(to_fix)}; fix the error shown, then run "
                          "'scmt sync PLAN' again", "bold red")
        if resumable:
            line(console, f"{len(resumable)} VM(s) failed: {', '.join(resumable)}; run 'scmt sync PLAN' again to "
                          "resume them", "bold red")
