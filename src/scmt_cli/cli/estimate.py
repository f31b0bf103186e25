"""``scmt plan estimate``: transfer, switch, downtime and total minutes.

What-if mode (no plan): ``scmt plan estimate --data 500GiB --compression 0.6
--bandwidth 300Mbit --redundancy 1.2`` prints the same row the seed's
"Migration network information" table shows (164 / 5 / 5 / 169).
Units and rounding are documented in :mod:`scmt_cli.domain.estimate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli.context import current, line
from scmt_cli.errors import UsageError


def _parse(option: str, value: str | None, parser: Any) -> Any:
    if value is None:
        return None
    try:
        return parser(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def estimate(
    plan: Annotated[Optional[Path], typer.Argument(help="Plan file (optional).", metavar="PLAN")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Effective data, e.g. 500GiB, 1TiB.",
                                                                  metavar="SIZE")] = None,
    compression: Annotated[
        Optional[float], typer.Option("--compression", help="Compressed/original ratio, e.g. 0.6 (default: 1.0; "
                                       "with a plan 0.7 unless it turns compression off).",
                                       metavar="RATIO")
    ] = None,
    bandwidth: Annotated[
        Optional[str], typer.Option("--bandwidth", help="Source outbound bandwidth, e.g. 300Mbit, 2Gbit.",
                                   metavar="RATE")
    ] = None,
    target_bandwidth: Annotated[
        Optional[str], typer.Option("--target-bandwidth", help="Target outbound bandwidth (default: same).",
                                   metavar="RATE")
    ] = None,
    redundancy: Annotated[float, typer.Option("--redundancy", help="System processing redundancy factor.",
                                                           metavar="FACTOR")] = 1.2,
    switch: Annotated[
        Optional[str], typer.Option("--switch", help="Switch window, e.g. 5m (default: 5m; with a plan the "
                                    "seed's measured time for the VM's OS and method).",
                                    metavar="DURATION")
    ] = None,
    increment: Annotated[
        Optional[list[str]], typer.Option("--increment", help="An incremental sync's data (repeatable).",
                                          metavar="SIZE")
    ] = None,
    pre_switch: Annotated[
        Optional[str], typer.Option("--pre-switch", help="Data changed before the switch, e.g. 20MiB.",
                                    metavar="SIZE")
    ] = None,
    concurrency: Annotated[
        Optional[int], typer.Option("--concurrency", help="VMs sharing the link (plan default, else 2).",
                                    metavar="N")
    ] = None,
    sync_interval: Annotated[
        Optional[str], typer.Option("--sync-interval", help="Incremental sync interval, e.g. 30m.",
                                    metavar="DURATION")
    ] = None,
    inventory: Annotated[
        Optional[Path], typer.Option("--inventory", "-i", help="Inventory for the plan's VM sizes.", metavar="FILE")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Row name in what-if mode.", metavar="NAME")] = "what-if",
) -> None:
    """Transfer, switch and total minutes per VM and per wave."""
    from scmt_cli.domain.units import parse_duration, parse_rate, parse_size
    from scmt_cli.services.estimate import EstimateRequest
    from scmt_cli.services.estimate import estimate as run

    req = EstimateRequest(
        plan=plan,
        inventory=inventory,
        name=name,
        data_bytes=_parse("--data", data, parse_size),
        compression=compression,
        bandwidth=_parse("--bandwidth", bandwidth, parse_rate),
        target_bandwidth=_parse("--target-bandwidth", target_bandwidth, parse_rate),
        redundancy=redundancy,
        switch_seconds=_parse("--switch", switch, parse_duration),
        increments=tuple(_parse("--increment", i, parse_size) for i in (increment or ())),
        pre_switch_bytes=_parse("--pre-switch", pre_switch, parse_size) or 0,
        concurrency=concurrency,
        sync_interval=_parse("--sync-interval", sync_interval, parse_duration),
    )
    ui = current()
    ui.finish(run(req, ui.reporter), render)


def _table(console: Console, result: Any) -> Any:
    """The per-VM minutes, fitted to the console: the inputs (redundancy, compressed size, bandwidth,
    data) give way before the minutes do, and a line under the table repeats what was dropped.
    """
    from scmt_cli.cli.tables import Column, fit_table
    from scmt_cli.domain.units import format_rate, format_size

    vms = result.vms
    cols = [
        Column("VM", [v.name for v in vms]),
        Column("data", [format_size(v.inputs.data_bytes) for v in vms], keep=4, justify="right", whole=True),
        Column("compressed", [format_size(v.inputs.compressed) for v in vms], keep=2, justify="right", whole=True),
        Column("bandwidth", [format_rate(v.inputs.rate).replace(" (", "\n(") for v in vms], keep=3,
               justify="right", whole=True),
        Column("redundancy", [f"{v.inputs.redundancy:.2f}" for v in vms], keep=1, justify="right"),
        *(Column(h, [str(getattr(v, f"{h}_minutes")) for v in vms], justify="right")
          for h in ("transfer", "switch", "downtime", "total")),
    ]
    table, dropped = fit_table(console.width, cols, title="Migration time estimate (minutes)")
    return table, [c.header for c in dropped]


def render(console: Console, result: Any) -> None:
    from scmt_cli.domain.units import format_rate, format_size

    table, dropped = _table(console, result)
    console.print(table)
    if dropped:
        values = {"data": lambda i: format_size(i.data_bytes), "compressed": lambda i: format_size(i.compressed),
                  "bandwidth": lambda i: format_rate(i.rate), "redundancy": lambda i: f"{i.redundancy:.2f}"}
        for v in result.vms:
            parts = ", ".join(f"{h} {values[h](v.inputs)}" for h in ("data", "compressed", "bandwidth", "redundancy")
                              if h in dropped)
            line(console, f"{v.name}: {parts}")  # what the table had no room for
    for v in result.vms:
        if v.increment_minutes_exact:
            incs = ", ".join(f"{m:.2f}" for m in v.increment_minutes_exact)
            line(console, f"{v.name}: incremental syncs take {incs} min while the VM runs")
    if result.waves:
        from scmt_cli.cli.tables import Column, fit_table

        waves = result.waves
        cols = [
            Column("wave", [w.name for w in waves]),
            Column("start", [f"{w.start_minutes:.0f}" for w in waves]),
            Column("seeded", [f"{w.start_minutes + w.seed_minutes:.0f}" for w in waves]),
            Column("switch", [str(w.switch_minutes) for w in waves]),
            Column("end", [f"{w.end_minutes:.0f}" for w in waves]),
            Column("VMs (seed start-end, incremental cycles)", [
                "; ".join(f"{s.name} {s.start_minutes:.0f}-{s.end_minutes:.0f} ({s.incremental_cycles})"
                          for s in w.slots) for w in waves]),
        ]
        wt, _ = fit_table(console.width, cols, title=f"Wave timeline ({result.concurrency} VM(s) at a time on "
                                                     "the link)")
        console.print(wt)
        line(console, f"total: {result.total_minutes} minutes")
    for n in result.notes:
        line(console, f"note: {n}", "dim")
