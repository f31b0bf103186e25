"""Control characters in rich Text objects (table cells, assembled lines: VM names, finding messages, plan
paths) reach the terminal escaped, as plain strings do; styling still works."""

from __future__ import annotations

import io

from rich.table import Table
from rich.text import Text

from scmt_cli.cli.context import SafeConsole


def _out(*renderables: object, color: bool = False) -> str:
    buf = io.StringIO()
    console = SafeConsole(file=buf, width=100, markup=False, highlight=False,
                          **({"force_terminal": True, "color_system": "standard"} if color else {}))
    console.print(*renderables)
    return buf.getvalue()


def test_text_objects_and_table_cells_are_escaped() -> None:
    evil = "vm\x1b[31mRED\x07"
    table = Table("VM")
    table.add_row(Text(evil))
    for out in (_out(Text.assemble((evil, "bold"), " blocked")), _out(table), _out(evil)):
        assert "\x1b" not in out and "\x07" not in out and "vm\\x1b[31mRED" in out  # rich drops BEL itself


def test_styles_of_our_own_still_reach_a_colour_terminal() -> None:
    out = _out(Text.assemble(("ok", "green"), " vm\x1b]0;title\x07"), color=True)
    assert "\x1b[32m" in out  # rich's own styling
    assert "vm\\x1b]0;title" in out and "\x07" not in out
