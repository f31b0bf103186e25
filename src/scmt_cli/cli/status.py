"""``scmt status``: where every VM of a plan stands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scmt_cli.cli._common import not_available


def status(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until interrupted.")] = False,
) -> None:
    """Per VM: state, last sync, lag, estimated cutover downtime."""
    raise not_available("status", "the migration engine (issue: migration end to end)")
