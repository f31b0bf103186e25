"""Tables that fit the terminal without splitting a word.

Rich shrinks columns to fit the console and then folds any word longer than
its column (``win2019-`` / ``app01``, ``os.not_l`` / ``isted``) and cuts headers
(``compr…``).  :func:`fit_table` decides the widths itself instead:

* every column is at least as wide as its longest word (header words included),
  so cells wrap only between words and VM names, rule ids and numbers stay whole;
* when those minimums do not fit, the columns of lowest ``keep`` are dropped
  (their data stays in ``--json`` and ``--format csv``) and reported to the
  caller, which may print them another way; when even the columns that are
  never dropped do not fit, :func:`fits` says so and the caller prints a list;
* the width left is shared out so that columns whose text is long get it first.

Box overhead: one edge plus three characters (padding and a rule) per column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text


@dataclass
class Column:
    """A column and its cells.  ``keep``: higher stays longer; ``None`` never drops (e.g. the VM name).

    ``whole``: a cell's lines are never wrapped (``500.00 GiB`` stays on one line).
    ``optional``: dropped too (lowest ``keep`` first) when the table would otherwise wrap cells.
    """

    header: str
    cells: Sequence[str | Text] = field(default_factory=list)
    keep: int | None = None
    justify: str = "left"
    whole: bool = False
    optional: bool = False

    def _texts(self) -> list[str]:
        return [c.plain if isinstance(c, Text) else str(c) for c in self.cells]

    @property
    def min_width(self) -> int:
        if self.whole:
            head = max((cell_len(w) for w in self.header.split()), default=1)
            return max([head, *(cell_len(line) for t in self._texts() for line in t.splitlines())])
        words = [w for t in [self.header, *self._texts()] for line in t.splitlines() for w in line.split()]
        return max((cell_len(w) for w in words), default=1)

    @property
    def max_width(self) -> int:
        lines = [line for t in [self.header, *self._texts()] for line in t.splitlines()]
        return max((cell_len(line) for line in lines), default=1)


def overhead(columns: int) -> int:
    return 3 * columns + 1


def fits(width: int, columns: Sequence[Column]) -> bool:
    """Whether ``columns`` fit ``width`` once the droppable ones are dropped."""
    kept, _, _ = layout(width, columns)
    return sum(c.min_width for c in kept) + overhead(len(kept)) <= width


def layout(width: int, columns: Sequence[Column]) -> tuple[list[Column], list[int], list[Column]]:
    """(kept columns, their widths, dropped columns) for a table at most ``width`` cells wide."""
    kept = list(columns)
    dropped: list[Column] = []
    while sum(c.min_width for c in kept) + overhead(len(kept)) > width:
        droppable = [c for c in kept if c.keep is not None]
        if not droppable:
            break  # nothing left to drop: the table is wider than the terminal, but no word is split
        victim = min(droppable, key=lambda c: c.keep)  # type: ignore[arg-type, return-value]
        kept.remove(victim)
        dropped.append(victim)
    while sum(c.max_width for c in kept) + overhead(len(kept)) > width:
        optional = [c for c in kept if c.optional and c.keep is not None]
        if not optional:
            break
        victim = min(optional, key=lambda c: c.keep)  # type: ignore[arg-type, return-value]
        kept.remove(victim)
        dropped.append(victim)
    widths = [c.min_width for c in kept]
    spare = width - sum(widths) - overhead(len(kept))
    while spare > 0:
        wants = [(c.max_width - w, i) for i, (c, w) in enumerate(zip(kept, widths, strict=True)) if c.max_width > w]
        if not wants:
            break
        share = max(1, spare // len(wants))
        for need, i in sorted(wants, reverse=True):
            give = min(need, share, spare)
            widths[i] += give
            spare -= give
            if spare <= 0:
                break
    return kept, widths, dropped


def fit_table(width: int, columns: Sequence[Column], **table_kw: Any) -> tuple[Table, list[Column]]:
    """A rich Table of ``columns`` fitting ``width`` (see the module doc) and the columns dropped."""
    kept, widths, dropped = layout(width, columns)
    table = Table(**table_kw)
    for col, w in zip(kept, widths, strict=True):
        table.add_column(col.header, width=w, justify=col.justify, overflow="fold")  # type: ignore[arg-type]
    rows = max((len(c.cells) for c in kept), default=0)
    for r in range(rows):
        table.add_row(*(c.cells[r] if r < len(c.cells) else "" for c in kept))
    return table, dropped
