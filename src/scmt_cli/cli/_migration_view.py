"""Rendering shared by the failover, rollback, finalize and migrate commands (human view)."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def _secs(v: Any) -> str:
    return f"{float(v):.2f} s" if isinstance(v, int | float) else "-"


def render_outcomes(console: Console, result: Any, *, title: str, columns: list[tuple[str, str]]) -> None:
    """One table row per VM: name, state, the ``columns`` (header, data key) and the result."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for col in ["VM", "state", *(h for h, _ in columns), "result"]:
        table.add_column(col, overflow="fold")
    for o in result.outcomes:
        cells = []
        for _, key in columns:
            value = o.data.get(key)
            cells.append(_secs(value) if key.endswith("seconds") else ("-" if value is None else str(value)))
        verdict = Text(o.action or "ok", style="green") if o.ok else Text.assemble(("failed", "bold red"),
                                                                                  f" ({o.error})")
        table.add_row(o.vm, o.state or "-", *cells, verdict)
    console.print(table)
