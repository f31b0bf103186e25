"""``scmt copy``: verified block copy between two URLs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scmt_cli.cli._common import not_available


def copy(
    src: Annotated[str, typer.Argument(help="Source URL (file://, nbd://, nbd+unix://).", metavar="SRC_URL")],
    dst: Annotated[str, typer.Argument(help="Destination URL.", metavar="DST_URL")],
    since: Annotated[Optional[str], typer.Option("--since", help="Digest manifest of a previous copy.")] = None,
    bandwidth: Annotated[Optional[str], typer.Option("--bandwidth", help="Limit, e.g. 300Mbit.")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Re-read the target and compare digests.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted copy.")] = False,
) -> None:
    """Copy a disk block by block, skipping holes and zeroes, with per-chunk digests."""
    raise not_available("copy", "the block engine")
