"""``scmt migrate``: the managed method, seed to boot in one unattended run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scmt_cli.cli._common import not_available


def migrate(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
) -> None:
    """Seed, sync, shut the source down, final sync, boot the target (2 VMs at a time)."""
    raise not_available("migrate", "the migration engine (issue: migration end to end)")
