"""``scmt finalize``: clean up after a successful business check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli._common import group_option
from scmt_cli.cli.context import current


def finalize(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).", metavar="NAME")] = None,
    group: Annotated[Optional[str], group_option("Finalize")] = None,
    disable_cbt: Annotated[bool, typer.Option("--disable-cbt", help="Also disable CBT on the source.")] = False,
) -> None:
    """Remove the tool's snapshots and keep the source powered off (cut-over -> committed).

    VMs named with --vm or --group must all be cut over (else exit 42, nothing changed); without
    them, the VMs that are not cut over are skipped.
    """
    from scmt_cli.services.migration.finalize import FinalizeRequest, finalize_service
    from scmt_cli.state import StateStore

    ui = current()
    req = FinalizeRequest(plan=plan, vms=tuple(vm or ()), disable_cbt=disable_cbt, group=group)
    with StateStore.open(ui.opts.state) as store:
        result = finalize_service(req, store, ui.reporter)
    ui.finish(result, render)


def render(console: Console, result: Any) -> None:
    from scmt_cli.cli._migration_view import render_outcomes

    render_outcomes(console, result, title=f"finalize of plan {result.plan}",
                    columns=[("source power", "source_power")])
