"""``scmt failover``: switch VMs (or a group) over to the target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scmt_cli.cli._common import not_available


def failover(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).")] = None,
    group: Annotated[Optional[str], typer.Option("--group", help="Fail over this group together.")] = None,
    at: Annotated[Optional[str], typer.Option("--at", help="Wait for this time (the scheduled switch).")] = None,
    source_action: Annotated[
        Optional[str], typer.Option("--source-action", help="disconnect-network | shutdown | none.")
    ] = None,
    target_state: Annotated[Optional[str], typer.Option("--target-state", help="on | off.")] = None,
    direct: Annotated[bool, typer.Option("--direct", help="Skip guest conversion (directly fail over).")] = False,
) -> None:
    """Quiesce the source, copy the final delta, start the target."""
    raise not_available("failover", "the migration engine (issue: migration end to end)")
