"""``scmt rollback``: give the workload back to the source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli.context import current


def rollback(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).", metavar="NAME")] = None,
    group: Annotated[Optional[str], typer.Option("--group", help="Roll back this group together.",
                                                                        metavar="GROUP")] = None,
) -> None:
    """Stop and isolate the target, restore the source's network or power (in seconds).

    """
    from scmt_cli.services.migration.rollback import RollbackRequest, rollback_service
    from scmt_cli.state import StateStore

    ui = current()
    req = RollbackRequest(plan=plan, vms=tuple(vm or ()), group=group)
    with StateStore.open(ui.opts.state) as store:
        result = rollback_service(req, store, ui.reporter)
    ui.finish(result, render)


def render(console: Console, result: Any) -> None:
    from scmt_cli.cli._migration_view import render_outcomes

    render_outcomes(console, result, title=f"rollback of plan {result.plan}",
                    columns=[("took", "rollback_seconds")])
