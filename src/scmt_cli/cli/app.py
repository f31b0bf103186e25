"""The Typer application: global options and the list of subcommands.

Each subcommand lives in its own module under ``scmt_cli.cli``; those modules
import only typer and this package's light modules at import time, and import
services inside the command body, so ``scmt --help`` stays fast.  A run builds
only the subcommand it runs (:func:`build` with ``only``): turning every
command's signature into click parameters is most of the CLI's start-up.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Optional

import typer

from scmt_cli.cli.context import GlobalOptions, Ui, set_current

HELP = """Migrate running VMware vSphere VMs to KVM with little downtime.

Typical flow: assess -> plan -> sync (seed, then incrementals) -> failover -> rollback or finalize.
Global options may be given before or after the subcommand.  'scmt help' lists help pages
(exit codes, the --json contract, durations and units).
"""

#: Subcommand -> (module under scmt_cli.cli, attribute): a function, or a Typer app for a group.  In help order.
COMMANDS: dict[str, tuple[str, str]] = {
    "assess": ("assess", "assess"),
    "plan": ("plan", "app"),
    "sync": ("sync", "sync"),
    "failover": ("failover", "failover"),
    "boot": ("boot", "boot"),
    "rollback": ("rollback", "rollback"),
    "migrate": ("migrate", "migrate"),
    "finalize": ("finalize", "finalize"),
    "status": ("status", "status"),
    "events": ("events", "events"),
    "copy": ("copy", "copy"),
    "agent": ("agent", "app"),
    "demo": ("demo", "demo"),
    "version": ("version", "version"),
    "help": ("helptopics", "help_topic"),
    "schema": ("schema", "schema"),
}


def _print_version(value: bool) -> None:
    if value:
        from scmt_cli import __version__

        typer.echo(f"scmt {__version__}")
        raise typer.Exit(0)


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


def build(only: str | None = None) -> typer.Typer:
    """The application: every subcommand, or only ``only`` when it names one (the command being run)."""
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
    app.callback()(main_callback)
    names = [only] if only in COMMANDS else list(COMMANDS)
    for name in names:
        module, attr = COMMANDS[name]
        target: Any = getattr(importlib.import_module(f"scmt_cli.cli.{module}"), attr)
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)
    return app


def __getattr__(name: str) -> Any:
    """``app``: the whole application (tests, completion scripts)."""
    if name == "app":
        return build()
    raise AttributeError(name)
