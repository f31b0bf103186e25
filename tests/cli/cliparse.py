"""Parse a command line against the real CLI without running it (for help examples and hints)."""

from __future__ import annotations

import shlex

from typer.main import get_command

from scmt_cli.cli.app import app
from scmt_cli.cli.contract import decorate
from scmt_cli.cli.main import hoist_global_options


def root():
    return decorate(get_command(app))


def parse_problem(line: str) -> str | None:
    """None when ``line`` (``scmt ...``, env assignments allowed) parses, else click's complaint."""
    words = shlex.split(line.replace("...", "x"))
    while words and "=" in words[0] and not words[0].startswith("-"):
        words.pop(0)  # VAR=value before the command
    if not words or words[0] != "scmt":
        return f"not an scmt command line: {line!r}"
    args = hoist_global_options(words[1:])
    cmd = root()
    ctx = None
    name = "scmt"
    try:
        while True:
            ctx = cmd.make_context(name, list(args), parent=ctx)
            subs = getattr(cmd, "commands", None)
            if not subs:
                return None
            protected = list(getattr(ctx, "_protected_args", []))
            if not protected:
                return None
            name, args = protected[0], protected[1:] + list(ctx.args)
            if name not in subs:
                return f"no command {name!r} in {line!r}"
            cmd = subs[name]
    except Exception as exc:  # click's UsageError and friends
        fmt = getattr(exc, "format_message", None)
        return f"{line!r}: {fmt() if fmt else exc}"
