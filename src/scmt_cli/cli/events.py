"""``scmt events``: the state store's event log."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli.context import current, line


def events(
    plan: Annotated[Optional[str], typer.Option(
        "--plan", help="Only events of this plan (its name, as 'scmt status' lists it).", metavar="NAME")] = None,
    vm: Annotated[Optional[str], typer.Option("--vm", help="Only events of this VM.", metavar="NAME")] = None,
    kind: Annotated[Optional[list[str]], typer.Option(
        "--kind", help="Only events of this kind, e.g. vm_state, generation_finished (repeatable).",
        metavar="KIND")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="Only events since then: a duration ago (2h, 30m), a time (06:00, the last one) or a "
                        "date-time.", metavar="DURATION|TIME")] = None,
    limit: Annotated[int, typer.Option("--limit", help="The most recent N events (default: 100; 0: all).",
                                       metavar="N", min=0, show_default=False)] = 100,
) -> None:
    """Read the state store's event log: state changes, sync passes, plans recorded, locks and leases.

    Oldest first, the most recent --limit of those selected.  With --json one document (an 'events'
    list; 'truncated' says older events were left out).  Read-only: a store that does not exist yet
    is not created.
    """
    from scmt_cli.services.eventlog import EventsRequest, read_events
    from scmt_cli.services.migration.status import open_existing, store_name
    from scmt_cli.services.migration.when import parse_since

    ui = current()
    start = parse_since(since, option="--since").timestamp() if since is not None else None
    req = EventsRequest(plan=plan, vm=vm, kinds=tuple(kind or ()), since=start, limit=limit)
    store = open_existing(ui.opts.state)
    try:
        result = read_events(req, store, store_name(ui.opts.state))
    finally:
        if store is not None:
            store.close()
    ui.finish(result, render)


def _when(text: str) -> str:
    import datetime as dt

    at = dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone()
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _data(data: dict[str, Any]) -> str:
    import json

    return " ".join(f"{k}={v if isinstance(v, (str, int, float)) else json.dumps(v, default=str)}"
                    for k, v in data.items())


def render(console: Console, result: Any) -> None:
    for ev in result.events:
        where = "/".join(x for x in (ev["plan"], ev["vm"]) if x) or "-"
        line(console, f"{_when(ev['at'])}  {where}  {ev['kind']}  {_data(ev['data'])}".rstrip())
    if not result.events:
        line(console, f"no events in {result.store} match")
    elif result.truncated:
        line(console, f"({result.matched - len(result.events)} older event(s) not shown: --limit 0 shows all)",
             "dim")
