"""The shape every service result has, so the CLI can render it two ways.

A service returns one result object.  ``--json`` prints ``to_dict()`` as the
single JSON document on stdout; the human view renders the same object.  Errors
are raised (see :mod:`scmt_cli.errors`), never returned; ``exit_code`` is only
0 (ok) or 1 (finished with warnings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class Result(Protocol):
    @property
    def exit_code(self) -> int: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class SimpleResult:
    """A result that is just a JSON-able mapping plus warnings."""

    data: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.data)
        out["warnings"] = list(self.warnings)
        return out
