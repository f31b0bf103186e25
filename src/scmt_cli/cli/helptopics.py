"""``scmt help TOPIC``: the pages a pip-installed user has no README for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli.context import current
from scmt_cli.errors import EXIT_CODES, UsageError

_JSON = """\
--json prints exactly one JSON document on stdout, also on error.  Every document has:
  schema_version  integer, the version of this command's document format
  exit_code       the process exit code (0 ok, 1 warnings, ...)
  warnings        list of strings, every warning of the run (also printed on stderr)
Error documents have type "exit_error", code (the exit code), error (a kind), message,
and optionally problems (file, line, column, path, message) and hint.  Per VM, "vm" is
the VM's name in every command.  'scmt schema COMMAND' prints the JSON Schema of
COMMAND's document ('scmt schema exit_error' for errors); the schemas are also files in
the installed package (scmt_cli/cli/schemas/).  'plan schema' and 'schema' print JSON
Schemas themselves.
'sync --every' and 'sync --until-ready' print JSON lines, each document on one line: a
'sync' document per round as the round ends (with "round": N), then the run's summary
(no "round"; "stopped" says why it ended, "interrupted (SIGINT)" or "terminated (SIGTERM)"
with exit_code 130 or 143 when a signal stopped it).  '--dry-run' of sync, failover and
migrate prints the 'preview' document; 'status' without a plan the 'status overview'
document; 'events' the 'events' document (the most recent events, oldest first).
Rates (throughput_bytes_per_s) are bytes read from the source per second of copying.
"""

_DURATIONS = """\
Durations (sync --every, status --interval, assess --timeout and --downtime, copy
--checkpoint-every, boot --timeout and --stall, --v2v-timeout, plan estimate --switch and
--sync-interval): a number with a unit, 500ms, 30s, 5m, 1h, 1h30m, 2d; a bare number means
seconds.  Times (sync --until, failover --at): HH:MM (the next one) or a full date-time;
the resolved date and time are printed.  events --since: a duration ago (2h), HH:MM (the
last one) or a date-time.
Sizes: 500GiB or 8G (K, M, G, T: powers of 1024), 1.5TB (kB, MB, GB, TB: powers of 1000);
a bare number is bytes.
Rates: 300Mbit or 2Gbit (bits per second), 50MB/s or 200MiB/s (bytes per second),
unlimited (0 also means unlimited).
"""

TOPICS = {"exit-codes": "every exit code and its meaning", "json": "the --json contract",
          "durations": "durations, sizes and rates"}


@dataclass
class HelpPage:
    topic: str | None
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "text": self.text, **self.data, "warnings": []}


def help_topic(
    topic: Annotated[Optional[str], typer.Argument(help="exit-codes | json | durations.", metavar="TOPIC")] = None,
) -> None:
    """Show a help page: exit codes, the --json contract, durations and units."""
    if topic is None:
        text = "".join(f"  {name:<12} {what}\n" for name, what in TOPICS.items())
        text += "Commands: 'scmt --help', 'scmt COMMAND --help'.\n"
        page = HelpPage(None, text, {"topics": [{"topic": k, "description": v} for k, v in TOPICS.items()]})
    elif topic == "exit-codes":
        text = "".join(f"{code:>4}  {meaning}\n" for code, meaning in EXIT_CODES.items())
        page = HelpPage(topic, text, {"exit_codes": [{"code": c, "meaning": m} for c, m in EXIT_CODES.items()]})
    elif topic == "json":
        page = HelpPage(topic, _JSON)
    elif topic == "durations":
        page = HelpPage(topic, _DURATIONS)
    else:
        import difflib

        close = difflib.get_close_matches(topic, TOPICS, n=1)
        raise UsageError(f"no help topic {topic!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                         hint=f"topics: {', '.join(TOPICS)}")
    current().finish(page, _render)


def _render(console: Console, page: Any) -> None:
    console.file.write(page.text)
