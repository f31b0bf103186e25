"""``scmt failover``: switch VMs (or a group) over to the target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli._common import future_time
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
) -> None:
    """Quiesce the source, copy the final delta, start the target.

    Reports the measured downtime per VM (source quiesced -> target started).
    A killed failover resumes at the first step not done when run again.
    """
    from scmt_cli.errors import UsageError
    from scmt_cli.services.migration.failover import SOURCE_ACTIONS, FailoverRequest, failover_service
    from scmt_cli.state import StateStore

    if source_action is not None and source_action not in SOURCE_ACTIONS:
        raise UsageError(f"--source-action {source_action!r}: expected one of {', '.join(SOURCE_ACTIONS)}")
    if target_state is not None and target_state not in ("on", "off"):
        raise UsageError(f"--target-state {target_state!r}: expected on or off")
    when = future_time(at, option="--at") if at is not None else None
    ui = current()
    req = FailoverRequest(plan=plan, vms=tuple(vm or ()), group=group, at=when, source_action=source_action,
                          target_state=target_state, direct=direct)
    with StateStore.open(ui.opts.state) as store:
        result = failover_service(req, store, ui.reporter)
    ui.finish(result, render)


def render(console: Console, result: Any) -> None:
    from scmt_cli.cli._migration_view import render_outcomes

    render_outcomes(console, result, title=f"failover of plan {result.plan}",
                    columns=[("source action", "source_action"), ("downtime", "downtime_seconds")])
