"""The human view of ``--dry-run`` (``sync``, ``failover``, ``migrate``): per VM the steps it would take."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from scmt_cli.cli.context import line


def render(console: Console, result: Any) -> None:
    line(console, f"{result.command} of plan {result.plan}, dry run: what it would do (nothing was changed)",
         "bold")
    for v in result.vms:
        head = f"{v.vm} ({v.state}, {v.method})"
        if not v.proceeds:
            line(console, f"{head}: would be refused (exit {v.error_code}): {v.reason}", "bold red")
            continue
        known = [s.seconds for s in v.steps if s.seconds is not None]
        total = f", copies take about {_secs(sum(known))}" if known else ""
        line(console, f"{head}{total}:")
        width = max((len(s.step) for s in v.steps), default=0)
        for i, s in enumerate(v.steps, 1):
            line(console, f"  {i}. {s.step:<{width}}  {s.action}")
    for note in result.notes:
        line(console, f"note: {note}")


def _secs(seconds: float) -> str:
    from scmt_cli.domain.units import format_duration

    return format_duration(seconds)
