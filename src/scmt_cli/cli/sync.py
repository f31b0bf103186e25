"""``scmt sync``: seed, then incremental syncs of the VMs of a plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scmt_cli.cli._common import not_available


def sync(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).")] = None,
    every: Annotated[Optional[str], typer.Option("--every", help="Keep syncing at this interval, e.g. 30m.")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Stop an --every run at this time.")] = None,
    until_ready: Annotated[
        bool, typer.Option("--until-ready", help="Stop once every VM is ready for cutover.")
    ] = False,
) -> None:
    """First run seeds (full copy); later runs copy only changed blocks."""
    raise not_available("sync", "the migration engine (issue: migration end to end)")
