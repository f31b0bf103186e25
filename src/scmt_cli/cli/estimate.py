"""``scmt plan estimate``: transfer, switch and total minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scmt_cli.cli._common import not_available


def estimate(
    plan: Annotated[Optional[Path], typer.Argument(help="Plan file (optional).", metavar="[PLAN]")] = None,
) -> None:
    """Transfer, switch and total minutes per VM and per wave."""
    raise not_available("plan estimate", "the assessment issue")
