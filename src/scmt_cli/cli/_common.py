"""Small helpers shared by command modules (light imports only)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from scmt_cli.errors import NotAvailableError, UsageError


def not_available(command: str, issue: str) -> NotAvailableError:
    """The error a command raises while its engine has not landed yet."""
    return NotAvailableError(
        f"'scmt {command}' is not available yet in this release",
        hint=f"it lands with {issue}; nothing was changed",
    )


def future_time(text: str, *, option: str, now: dt.datetime | None = None) -> dt.datetime:
    """Parse a ``--until``/``--at`` time and refuse one already past.

    ``22:00`` always means the next 22:00; a full date-time in the past is a
    typo (a wrong day or year), and acting on it at once would be a surprise:
    e.g. a failover meant for tonight would switch now.
    """
    from scmt_cli.services.migration.when import parse_when

    current = now or dt.datetime.now().astimezone()
    when = parse_when(text, option=option, now=current)
    if when <= current:
        raise UsageError(
            f"{option} {text!r} is in the past ({when.isoformat(timespec='seconds')})",
            hint="give a future time, e.g. 22:00 (the next one) or a full date-time",
        )
    return when


def url_value(value: str | None) -> str | None:
    """Option callback for URL-valued options: refuse a value that is another option.

    ``--vcenter --no-network`` would otherwise try to resolve the host ``--no-network``.
    """
    if value is not None and value.startswith("-"):
        raise UsageError(
            f"expected a URL, got {value!r} (an option?)",
            hint="give the URL right after the option, e.g. --vcenter https://vc.example.com/sdk",
        )
    return value


def duration(minimum: float = 0.0) -> Callable[[Any], float]:
    """A ``parser=`` for duration options: ``30s``, ``5m``, ``1h30m``; a bare number means seconds.

    One syntax for every duration option (``scmt help durations``); the message
    names the expected form, never a validator's words.
    """

    def parse(value: Any) -> float:
        import typer

        from scmt_cli.domain.units import parse_duration

        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if seconds < minimum:
            raise typer.BadParameter(f"{value!r} is shorter than the minimum {minimum:g}s")
        return seconds

    parse.__name__ = "DURATION"
    return parse


def rate(value: Any) -> float:
    """A ``parser=`` for rate options: ``300Mbit``, ``50MiB/s``, ``unlimited`` (``math.inf``); bytes/s."""
    import typer

    from scmt_cli.domain.units import parse_rate

    try:
        return parse_rate(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


rate.__name__ = "RATE"

#: ``--bandwidth`` of sync and migrate: over the plan's limit for this run (``None``: the plan's).
BandwidthOpt = Annotated[Optional[float], typer.Option(
    "--bandwidth", metavar="RATE", parser=rate, show_default=False,
    help="Read at most this rate in this run, e.g. 300Mbit, 50MiB/s or unlimited, instead of the plan's "
         "bandwidth (default: the plan's bandwidth, else unlimited). A limit per VM, like the plan's: "
         "VMs synced at once each get it.")]

#: ``--group`` of the commands that act on VMs of a plan (groups fail over together, so they are synced,
#: checked and finalized together).
def group_option(verb: str) -> Any:
    return typer.Option("--group", metavar="GROUP", help=f"{verb} the VMs of this plan group (not with --vm).")


#: ``--dry-run`` of sync, failover and migrate.
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Show each step it would take and its estimate; change nothing (no snapshot, no "
                      "source action, no state change, no lock kept).")]

#: ``--v2v-timeout`` / ``--v2v-stall-timeout``, shared by failover and migrate (``None``: the plan's value).
V2vTimeoutOpt = Annotated[Optional[float], typer.Option(
    "--v2v-timeout", metavar="DURATION", parser=duration(1), show_default=False,
    help="Stop guest conversion after this long, e.g. 90m (default: the plan's target.v2v_timeout, 1h).")]
V2vStallOpt = Annotated[Optional[float], typer.Option(
    "--v2v-stall-timeout", metavar="DURATION", parser=duration(1), show_default=False,
    help="Stop the converter when it prints nothing for this long (default: target.v2v_stall_timeout, 10m).")]
