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

from scmt_cli.cli.context import current
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


def render(console: Console, result: Any) -> None:
    from rich.table import Table

    from scmt_cli.domain.units import format_rate, format_size

    table = Table(title="Migration time estimate (minutes)")
    for col in ("VM", "data", "compressed", "bandwidth", "redundancy", "transfer", "switch", "downtime", "total"):
        table.add_column(col, justify="left" if col == "VM" else "right")
    for v in result.vms:
        i = v.inputs
        table.add_row(
            v.name, format_size(i.data_bytes), format_size(i.compressed), format_rate(i.rate), f"{i.redundancy:.2f}",
            str(v.transfer_minutes), str(v.switch_minutes), str(v.downtime_minutes), str(v.total_minutes),
        )
    console.print(table)
    for v in result.vms:
        if v.increment_minutes_exact:
            incs = ", ".join(f"{m:.2f}" for m in v.increment_minutes_exact)
            console.print(f"{v.name}: incremental syncs take {incs} min while the VM runs", markup=False)
    if result.waves:
        wt = Table(title=f"Wave timeline ({result.concurrency} VM(s) at a time on the link)")
        for col in ("wave", "start", "seeded", "switch", "end", "VMs (seed start-end, incremental cycles)"):
            wt.add_column(col, justify="left")
        for w in result.waves:
            vms = "; ".join(
                f"{s.name} {s.start_minutes:.0f}-{s.end_minutes:.0f} ({s.incremental_cycles})" for s in w.slots
            )
            wt.add_row(w.name, f"{w.start_minutes:.0f}", f"{w.start_minutes + w.seed_minutes:.0f}",
                       str(w.switch_minutes), f"{w.end_minutes:.0f}", vms)
        console.print(wt)
        console.print(f"total: {result.total_minutes} minutes", markup=False)
    for n in result.notes:
        console.print(f"note: {n}", style="dim", markup=False)
    for w in result.warnings:
        console.print(f"warning: {w}", style="yellow", markup=False)
