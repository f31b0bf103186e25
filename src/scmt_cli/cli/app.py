"""The Typer application: global options and the list of subcommands.

Each subcommand lives in its own module under ``scmt_cli.cli``; those modules
import only typer and this package's light modules at import time, and import
services inside the command body, so ``scmt --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scmt_cli.cli import (
    agent,
    assess,
    boot,
    copy,
    demo,
    events,
    failover,
    finalize,
    helptopics,
    migrate,
    plan,
    rollback,
    schema,
    status,
    sync,
    version,
)
from scmt_cli.cli.context import GlobalOptions, Ui, set_current

HELP = """Migrate running VMware vSphere VMs to KVM with little downtime.

Typical flow: assess -> plan -> sync (seed, then incrementals) -> failover -> rollback or finalize.
Global options may be given before or after the subcommand.  'scmt help' lists help pages
(exit codes, the --json contract, durations and units).
"""

app = typer.Typer(
    name="scmt",
    help=HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from scmt_cli import __version__

        typer.echo(f"scmt {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_callback(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON document on stdout (also on error).")
    ] = False,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Write stderr as JSON lines with a 'type' field.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug messages too.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colours (NO_COLOR is honoured too).")] = False,
    state: Annotated[
        Optional[str],
        typer.Option(
            "--state", envvar="SCMT_STATE", metavar="PATH|URL",
            help="State store: a file (default: $XDG_STATE_HOME/scmt/state.db) or postgresql://user@host/db "
                 "shared by several migration hosts (password from ~/.pgpass or PGPASSWORD, never the URL).",
        ),
    ] = None,
    show_version: Annotated[
        bool, typer.Option("--version", "-V", help="Print the version and exit ('scmt version' says more).",
                           is_eager=True, callback=_print_version)
    ] = False,
) -> None:
    opts = GlobalOptions(
        json=json_out, log_json=log_json, quiet=quiet, verbose=verbose, debug=debug, no_color=no_color, state=state
    )
    set_current(Ui(opts))


app.command("assess")(assess.assess)
app.add_typer(plan.app, name="plan")
app.command("sync")(sync.sync)
app.command("failover")(failover.failover)
app.command("boot")(boot.boot)
app.command("rollback")(rollback.rollback)
app.command("migrate")(migrate.migrate)
app.command("finalize")(finalize.finalize)
app.command("status")(status.status)
app.command("events")(events.events)
app.command("copy")(copy.copy)
app.add_typer(agent.app, name="agent")
app.command("demo")(demo.demo)
app.command("version")(version.version)
app.command("help")(helptopics.help_topic)
app.command("schema")(schema.schema)
