"""Rendering shared by the failover, rollback, finalize and migrate commands (human view)."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def _secs(v: Any) -> str:
    return f"{float(v):.2f} s" if isinstance(v, int | float) else "-"


def render_outcomes(console: Console, result: Any, *, title: str, columns: list[tuple[str, str]]) -> None:
    """One table row per VM: name, state, the ``columns`` (header, data key) and the result."""
    from rich.text import Text

    from scmt_cli.cli.tables import Column, fit_table

    rows = result.outcomes

    def cell(o: Any, key: str) -> str:
        value = o.data.get(key)
        return _secs(value) if key.endswith("seconds") else ("-" if value is None else str(value))

    cols = [
        Column("VM", [o.vm for o in rows]),
        Column("state", [o.state or "-" for o in rows]),
        *(Column(head, [cell(o, key) for o in rows], keep=len(columns) - i, whole=True)
          for i, (head, key) in enumerate(columns)),
        Column("result", [Text(o.action or "ok", style="green") if o.ok
                          else Text.assemble(("failed", "bold red"), f" ({o.error})") for o in rows]),
    ]
    table, _ = fit_table(console.width, cols, title=title)
    console.print(table)
