"""``scmt rollback``: switch back to the source after a failed business check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scmt_cli.cli._common import not_available


def rollback(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).")] = None,
    group: Annotated[Optional[str], typer.Option("--group", help="Roll back this group.")] = None,
) -> None:
    """Stop or isolate the target and restore the source's network or power."""
    raise not_available("rollback", "the migration engine (issue: migration end to end)")
