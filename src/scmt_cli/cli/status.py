"""``scmt status``: where every VM of a plan stands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli._common import duration, group_option
from scmt_cli.cli.context import current, line


def status(
    plan: Annotated[Optional[Path], typer.Argument(
        help="Migration plan (YAML); without one, every plan and VM the state store knows.",
        metavar="PLAN")] = None,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Refresh until interrupted (with --json: one document, no watch).")] = False,
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).", metavar="NAME")] = None,
    group: Annotated[Optional[str], group_option("Show")] = None,
    interval: Annotated[float, typer.Option("--interval", help="Time between --watch refreshes (default: 2s).",
                                            metavar="DURATION", parser=duration(0.2), show_default=False)] = 2.0,
) -> None:
    """Per VM: state, last sync, lag, estimated cutover downtime, warnings.

    Reads only the plan and the state store (never vCenter).  --watch ends with Ctrl-C.
    Without PLAN: every plan the state store knows, with its file (and whether that file changed
    since it was recorded), and each VM's state, last sync, error and what may run next
    (--json: the 'status overview' document).  A store that does not exist yet is not created.
    """
    from scmt_cli.errors import UsageError
    from scmt_cli.services.migration.status import StatusRequest, status_service

    ui = current()
    if plan is None:
        if group is not None:
            raise UsageError("--group needs a PLAN (a group is a plan's)")
        _overview(ui, tuple(vm or ()), watch=watch, interval=interval)
        return
    from scmt_cli.state import StateStore

    req = StatusRequest(plan=plan, vms=tuple(vm or ()), group=group)
    with StateStore.open(ui.opts.state) as store:
        if watch and not ui.opts.json:
            result = status_service(req, store, ui.reporter)
            _watch(ui, lambda: status_service(req, store, ui.reporter), lambda r: _table(r, ui.console.width),
                   interval, result)
            return
        result = status_service(req, store, ui.reporter)
    ui.finish(result, render)


def _watch(ui: Any, read: Any, view: Any, interval: float, result: Any) -> None:
    """Refresh ``view(read())`` every ``interval`` until Ctrl-C, which ends a watch normally."""
    import time

    from rich.live import Live

    try:
        with Live(console=ui.console, auto_refresh=False) as live:
            while True:
                live.update(view(result), refresh=True)
                time.sleep(interval)
                result = read()
    except KeyboardInterrupt:  # the table on screen is the last one
        ui.finish(result, lambda console, r: None)


def _overview(ui: Any, vms: tuple[str, ...], *, watch: bool, interval: float) -> None:
    from scmt_cli.services.migration.status import open_existing, overview_service, store_name

    where = store_name(ui.opts.state)
    store = open_existing(ui.opts.state)
    try:
        result = overview_service(store, where, vms)
        if watch and not ui.opts.json:
            _watch(ui, lambda: overview_service(store, where, vms), lambda r: _overview_view(r, ui.console.width),
                   interval, result)
            return
    finally:
        if store is not None:
            store.close()
    ui.finish(result, render_overview, document="status overview")


def _overview_heads(result: Any) -> list[str]:
    """One line per plan: its name and file (and whether the file changed since it was recorded)."""
    files = {"same": "", "changed": " (changed since it was recorded)", "missing": " (missing)"}
    return [f"{p.plan}: {p.file}{files[p.file_state]}" for p in result.plans]


def _overview_table(result: Any, width: int) -> Any:
    from rich.text import Text

    from scmt_cli.cli.tables import Column, fit_table

    if not result.plans:
        return Text(f"no plan in the state store {result.store} yet: run 'scmt sync PLAN' (or any command on "
                    "a plan) to record one")
    rows = [(p, v) for p in result.plans for v in p.vms]
    cols = [
        Column("plan", [p.plan for p, _ in rows]),
        Column("VM", [v.vm for _, v in rows]),
        Column("state", [v.state if not v.failed_from else f"{v.state} ({v.failed_from})" for _, v in rows]),
        Column("last sync", ["-" if v.last_sync_at is None else time_ago(v.last_sync_at) for _, v in rows], keep=3),
        Column("method", [v.method or "-" for _, v in rows], keep=1, optional=True),
        Column("host", [v.locked_by or "-" for _, v in rows], keep=2, optional=True),
        Column("next", [", ".join(v.next_commands) or "-" for _, v in rows], keep=4),
    ]
    table, _ = fit_table(width, cols, title=f"every plan in {result.store}")
    return table


def _overview_view(result: Any, width: int) -> Any:
    from rich.console import Group
    from rich.text import Text

    return Group(*(Text(h) for h in _overview_heads(result)), _overview_table(result, width))


def render_overview(console: Console, result: Any) -> None:
    for head in _overview_heads(result):
        line(console, head)
    console.print(_overview_table(result, console.width))


def _fmt_secs(v: Any) -> str:
    if v is None:
        return "-"
    from scmt_cli.domain.units import format_duration

    return format_duration(float(v)) if v >= 1 else f"{float(v):.2f}s"


def _table(result: Any, width: int) -> Any:
    """Per VM: state, last sync, size, lag, host, downtime (measured or estimated, with the plan's
    estimate), next commands; fitted to ``width`` (host, size and lag give way first: the size and
    the lag also rather than wrap the others; the last sync's time ago says the lag).  A measured
    downtime over its estimate is marked.
    """
    from rich.text import Text

    from scmt_cli.cli.tables import Column, fit_table
    from scmt_cli.domain.units import format_size

    styles = {"syncing": "green", "cut-over": "cyan", "committed": "bold green", "failed": "bold red",
              "blocked": "bold red",
              "rolled-back": "yellow", "cutting-over": "magenta"}
    states, downtimes = [], []
    for v in result.vms:
        state = v.state if not v.failed_from else f"{v.state} ({v.failed_from})"
        if v.step is not None:
            state = f"{v.step}, {_fmt_elapsed(v.step_seconds)}"
        style = styles.get(v.state) if v.step is None else "magenta"
        states.append(Text(state, style=style) if style else state)
        if v.measured_downtime_seconds is not None:
            est = Text(_fmt_secs(v.measured_downtime_seconds) + " measured")
        else:
            est = Text(_fmt_secs(v.est_downtime_seconds))
        if v.plan_downtime_minutes is not None:
            est.append(f" ({v.plan_downtime_minutes} min)")
        if v.downtime_over_estimate:
            est.append(" over the estimate", style="bold red")
        if v.boot_seconds is not None:
            est.append(f", booted in {_fmt_secs(v.boot_seconds)}" + (" (data verified)" if v.boot_data_verified
                                                                      else ""))
        downtimes.append(est)
    vms = result.vms
    cols = [
        Column("VM", [v.vm for v in vms]),
        Column("state", states),
        Column("last sync", ["-" if v.last_sync_at is None else f"{v.last_sync_kind} {time_ago(v.last_sync_at)}"
                             for v in vms], keep=4),
        Column("size", ["-" if v.last_sync_bytes is None else format_size(v.last_sync_bytes) for v in vms],
               keep=2, whole=True, optional=True),
        Column("lag", [_fmt_secs(v.lag_seconds) for v in vms], keep=3, optional=True),
        *([Column("host", [v.host or "-" for v in vms], keep=1)] if any(v.host for v in vms) else []),
        Column("downtime (plan)", downtimes),
        Column("next", [", ".join(v.next_commands) or "-" for v in vms], keep=5),
    ]
    table, _ = fit_table(width, cols, title=f"status of plan {result.plan}")
    return table


def _fmt_elapsed(v: Any) -> str:
    from scmt_cli.targets.convert import format_elapsed

    return format_elapsed(float(v or 0))


def time_ago(ts: float) -> str:
    import time

    secs = max(0.0, time.time() - ts)
    return f"{_fmt_secs(secs)} ago"


def render(console: Console, result: Any) -> None:
    console.print(_table(result, console.width))
