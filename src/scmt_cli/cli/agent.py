"""``scmt agent``: the source-side agent for the agent-based methods."""

from __future__ import annotations

from typing import Annotated

import typer

from scmt_cli.cli._common import not_available


def agent(
    listen: Annotated[str, typer.Option("--listen", help="Address to listen on, host:port.")] = "127.0.0.1:20000",
) -> None:
    """Serve this machine's block devices to the migration host (authenticated)."""
    raise not_available("agent", "the agent-based methods")
