"""``scmt plan``: create, validate, show and estimate migration plans."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scmt_cli.cli import estimate
from scmt_cli.cli._common import not_available

app = typer.Typer(help="Create, validate, show and estimate migration plans.", no_args_is_help=True)


@app.command("init")
def init(
    out: Annotated[Path, typer.Argument(help="Where to write the new plan.", metavar="FILE")],
    method: Annotated[str, typer.Option("--method", help="managed | agentless | agent | hot-backup.")] = "agentless",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter plan."""
    raise not_available("plan init", "the foundation issue")


@app.command("validate")
def validate(
    plans: Annotated[list[Path], typer.Argument(help="Plan files.", metavar="PLAN...")],
) -> None:
    """Check plans against the schema and the semantic rules."""
    raise not_available("plan validate", "the foundation issue")


@app.command("show")
def show(
    plan: Annotated[Path, typer.Argument(help="Plan file.", metavar="PLAN")],
) -> None:
    """Show a plan with every default resolved."""
    raise not_available("plan show", "the foundation issue")


@app.command("schema")
def schema() -> None:
    """Print the plan JSON Schema (draft 2020-12)."""
    raise not_available("plan schema", "the foundation issue")


# `plan estimate` lives in its own module (owned by the assessment work).
app.command("estimate")(estimate.estimate)
