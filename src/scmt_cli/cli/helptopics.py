"""``scmt help TOPIC``: the pages a pip-installed user has no README for."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scmt_cli.errors import EXIT_CODES, UsageError

_JSON = """\
--json prints exactly one JSON document on stdout, also on error.  Every document has:
  schema_version  integer, the version of this command's document format
  exit_code       the process exit code (0 ok, 1 warnings, ...)
  warnings        list of strings, the warnings of this run (also printed on stderr)
Error documents have type "exit_error", code, error (a kind), message, and optionally
problems (file, line, column, path, message) and hint.  Per VM, "vm" is the VM's name in
every command.  'scmt schema COMMAND' prints the JSON Schema of COMMAND's document;
'sync --every --json' prints one document per round (JSON lines).
"""

_DURATIONS = """\
Every option that takes a duration (--every, --interval, --timeout, --checkpoint-every,
--downtime, ...) accepts a number with a unit: 30s, 5m, 1h, 1h30m, 2d; a bare number means
seconds.  Sizes are binary (KiB, MiB, GiB; 1 GiB = 1024 MiB); rates accept 300Mbit,
50MiB/s; progress and summaries show binary units of bytes actually moved.
"""

TOPICS = {"exit-codes": "every exit code and its meaning", "json": "the --json contract",
          "durations": "durations, sizes and rates"}


def help_topic(
    topic: Annotated[Optional[str], typer.Argument(help="exit-codes | json | durations.", metavar="TOPIC")] = None,
) -> None:
    """Show a help page: exit codes, the --json contract, durations and units."""
    if topic is None:
        for name, what in TOPICS.items():
            typer.echo(f"  {name:<12} {what}")
        typer.echo("Commands: 'scmt --help', 'scmt COMMAND --help'.")
        return
    if topic == "exit-codes":
        for code, meaning in EXIT_CODES.items():
            typer.echo(f"{code:>4}  {meaning}")
    elif topic == "json":
        typer.echo(_JSON, nl=False)
    elif topic == "durations":
        typer.echo(_DURATIONS, nl=False)
    else:
        import difflib

        close = difflib.get_close_matches(topic, TOPICS, n=1)
        raise UsageError(f"no help topic {topic!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                         hint=f"topics: {', '.join(TOPICS)}")
