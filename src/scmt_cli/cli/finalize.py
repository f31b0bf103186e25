"""``scmt finalize``: clean up after a successful business check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scmt_cli.cli._common import not_available


def finalize(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).")] = None,
    disable_cbt: Annotated[bool, typer.Option("--disable-cbt", help="Also disable CBT on the source.")] = False,
) -> None:
    """Remove the tool's snapshots and keep the source powered off."""
    raise not_available("finalize", "the migration engine (issue: migration end to end)")
