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
                        live.update(_table(result, ui.console.width), refresh=True)
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
