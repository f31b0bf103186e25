"""Reading the times users give ``--until`` and ``--at``, and waiting for them."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from scmt_cli.errors import UsageError


def parse_when(text: str, *, option: str, now: dt.datetime | None = None) -> dt.datetime:
    """``2030-03-16T22:00:00+01:00``, ``2030-03-16 22:00`` (local time) or ``22:00`` (the next one).

    Returns a timezone-aware datetime; anything else is a UsageError naming ``option``.
    """
    raw = text.strip()
    current = now or dt.datetime.now().astimezone()
    try:
        if len(raw) in (4, 5, 7, 8) and ":" in raw and "-" not in raw:
            parsed_t = dt.time.fromisoformat(raw if len(raw.split(":")[0]) == 2 else "0" + raw)
            when = current.replace(hour=parsed_t.hour, minute=parsed_t.minute, second=parsed_t.second,
                                   microsecond=0)
            if when <= current:
                when += dt.timedelta(days=1)
            return when
        parsed = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected a time like 22:00 or 2030-03-16T22:00:00+01:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed


def describe_when(when: dt.datetime, now: dt.datetime | None = None) -> str:
    """``when`` as a user checks it: ``2030-03-17T00:01:00+01:00 (tomorrow 00:01, in 16h39m)``.

    ``--until 00:01`` at 07:22 means tomorrow: this says so, in the local time zone.
    """
    from scmt_cli.domain.units import format_duration

    current = (now or dt.datetime.now(dt.UTC)).astimezone()
    local = when.astimezone()
    days = (local.date() - current.date()).days
    day = {0: "today", 1: "tomorrow"}.get(days, local.strftime("%a %Y-%m-%d"))
    left = max(0.0, (when - current).total_seconds())
    return f"{when.isoformat(timespec='seconds')} ({day} {local.strftime('%H:%M')}, in {format_duration(left)})"


def wait_until(when: dt.datetime, *, check: Callable[[], None], log: Callable[[str], None],
               sleep: Callable[[float], None] = time.sleep) -> None:
    """Sleep until ``when`` (calling ``check`` every second so Ctrl-C/cancel stops the wait)."""
    left = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if left <= 0:
        return
    log(f"waiting until {describe_when(when)}")
    while True:
        check()
        left = (when - dt.datetime.now(dt.UTC)).total_seconds()
        if left <= 0:
            return
        sleep(min(1.0, left))


def parse_since(text: str, *, option: str, now: dt.datetime | None = None) -> dt.datetime:
    """A time in the past: a duration ago (``2h``, ``30m``, ``1d``), ``06:00`` (the last one) or a date-time.

    Anything else, or a time in the future, is a UsageError naming ``option``.
    """
    from scmt_cli.domain.units import parse_duration

    current = now or dt.datetime.now().astimezone()
    raw = text.strip()
    try:
        ago = parse_duration(raw)
    except ValueError:
        ago = None
    if ago is not None and ":" not in raw:
        return current - dt.timedelta(seconds=ago)
    try:
        when = parse_when(raw, option=option, now=current)
    except UsageError:
        raise UsageError(f"{option} {text!r}: expected a duration ago (2h, 30m), a time like 06:00 or a "
                         "date-time like 2030-03-16T22:00") from None
    if len(raw) in (4, 5, 7, 8) and "-" not in raw and when > current:
        when -= dt.timedelta(days=1)  # 06:00 means the last 06:00, not the next one
    if when > current:
        raise UsageError(f"{option} {text!r} is in the future ({when.isoformat(timespec='seconds')})")
    return when
