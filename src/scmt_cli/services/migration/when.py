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


def wait_until(when: dt.datetime, *, check: Callable[[], None], log: Callable[[str], None],
               sleep: Callable[[float], None] = time.sleep) -> None:
    """Sleep until ``when`` (calling ``check`` every second so Ctrl-C/cancel stops the wait)."""
    left = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if left <= 0:
        return
    log(f"waiting until {when.isoformat(timespec='seconds')} ({left:.0f} s)")
    while True:
        check()
        left = (when - dt.datetime.now(dt.UTC)).total_seconds()
        if left <= 0:
            return
        sleep(min(1.0, left))
