"""``scmt demo``: the whole flow on an embedded lab."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scmt_cli.cli._common import not_available


def demo(
    keep: Annotated[Optional[Path], typer.Option("--keep", help="Keep the lab in this directory.")] = None,
) -> None:
    """Build a lab (fake vCenter, workload), then assess, plan, sync, fail over, verify, roll back."""
    raise not_available("demo", "the migration engine (issue: migration end to end)")
