"""``scmt status``: where every VM of a plan stands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli._common import duration
from scmt_cli.cli.context import current


def status(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    watch: Annotated[bool, typer.Option(
        "--watch", help="Refresh until interrupted (with --json: one document, no watch).")] = False,
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).", metavar="NAME")] = None,
    interval: Annotated[float, typer.Option("--interval", help="Time between --watch refreshes (default: 2s).",
                                            metavar="DURATION", parser=duration(0.2), show_default=False)] = 2.0,
) -> None:
    """Per VM: state, last sync, lag, estimated cutover downtime, warnings.

    Reads only the plan and the state store (never vCenter).  --watch ends with Ctrl-C.
    """
    import time

    from scmt_cli.services.migration.status import StatusRequest, status_service
    from scmt_cli.state import StateStore

    ui = current()
    req = StatusRequest(plan=plan, vms=tuple(vm or ()))
    with StateStore.open(ui.opts.state) as store:
        if watch and not ui.opts.json:
            from rich.live import Live

            result = status_service(req, store, ui.reporter)
            try:
                with Live(console=ui.console, auto_refresh=False) as live:
                    while True:
                        live.update(_table(result), refresh=True)
                        time.sleep(interval)
                        result = status_service(req, store, ui.reporter)
            except KeyboardInterrupt:  # Ctrl-C ends a watch normally; the table on screen is the last one
                ui.finish(result, lambda console, r: None)
                return
        result = status_service(req, store, ui.reporter)
    ui.finish(result, render)


def _fmt_secs(v: Any) -> str:
    if v is None:
        return "-"
    from scmt_cli.domain.units import format_duration

    return format_duration(float(v)) if v >= 1 else f"{float(v):.2f}s"


def _table(result: Any) -> Any:
    from rich.table import Table
    from rich.text import Text

    from scmt_cli.domain.units import format_size

    table = Table(title=f"status of plan {result.plan}")
    for col in ("VM", "state"):
        table.add_column(col, no_wrap=True)
    for col in ("last sync", "size", "lag", "host", "downtime (plan)", "next"):
        table.add_column(col, overflow="fold")
    styles = {"syncing": "green", "cut-over": "cyan", "committed": "bold green", "failed": "bold red",
              "blocked": "bold red",
              "rolled-back": "yellow", "cutting-over": "magenta"}
    for v in result.vms:
        state = v.state if not v.failed_from else f"{v.state} ({v.failed_from})"
        if v.step is not None:
            state = f"{v.step}, {_fmt_elapsed(v.step_seconds)}"
        last = "-" if v.last_sync_at is None else f"{v.last_sync_kind} {time_ago(v.last_sync_at)}"
        size = "-" if v.last_sync_bytes is None else format_size(v.last_sync_bytes)
        est = _fmt_secs(v.measured_downtime_seconds) + " measured" if v.measured_downtime_seconds is not None \
            else _fmt_secs(v.est_downtime_seconds)
        if v.plan_downtime_minutes is not None:
            est += f" ({v.plan_downtime_minutes} min)"
        if v.boot_seconds is not None:
            est += f", booted in {_fmt_secs(v.boot_seconds)}" + (" (data verified)" if v.boot_data_verified else "")
        style = styles.get(v.state) if v.step is None else "magenta"
        table.add_row(v.vm, Text(state, style=style) if style else state, last, size,
                      _fmt_secs(v.lag_seconds), v.host or "-", est, ", ".join(v.next_commands) or "-")
    return table


def _fmt_elapsed(v: Any) -> str:
    from scmt_cli.targets.convert import format_elapsed

    return format_elapsed(float(v or 0))


def time_ago(ts: float) -> str:
    import time

    secs = max(0.0, time.time() - ts)
    return f"{_fmt_secs(secs)} ago"


def render(console: Console, result: Any) -> None:
    console.print(_table(result))
    for w in result.warnings:
        console.print(f"warning: {w}", style="yellow", markup=False, highlight=False)
