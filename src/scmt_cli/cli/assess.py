"""``scmt assess``: compatibility findings and a recommended method per VM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scmt_cli.cli._common import not_available


def assess(
    plan: Annotated[Optional[Path], typer.Argument(help="Migration plan (optional).", metavar="[PLAN]")] = None,
) -> None:
    """Check OS, firmware, disks, devices, versions and ports; recommend a method."""
    raise not_available("assess", "the assessment issue")
