"""Shared by failover, rollback and finalize: units of VMs acted on together, and results.

A *unit* is one VM, or every member of a plan group (a group fails over and
rolls back together).  :class:`MigrationResult` is the result of those
commands: one :class:`VmOutcome` per VM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scmt_cli.services.migration.context import MigrationContext, VmOutcome, exit_code_of_vms


def units_for(ctx: MigrationContext, names: Sequence[str], group: str | None) -> list[tuple[str | None, list[str]]]:
    """Split the selected VMs into (group name or None, members) units, in plan order.

    With ``--group`` there is one unit.  Otherwise a VM whose plan group is
    entirely selected joins its group's unit; a VM selected alone stays alone.
    """
    if group is not None:
        return [(group, list(names))]
    chosen = set(names)
    units: list[tuple[str | None, list[str]]] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        g = ctx.plan.group_of(name)
        if g is not None and set(g.vms) <= chosen:
            members = [v for v in g.vms if v in chosen]
            units.append((g.name, members))
            seen.update(members)
        else:
            units.append((None, [name]))
            seen.add(name)
    return units


@dataclass
class MigrationResult:
    """The outcome of failover / rollback / finalize / migrate for each selected VM."""

    command: str
    plan: str
    outcomes: list[VmOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[VmOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def exit_code(self) -> int:
        return exit_code_of_vms([o.error_code for o in self.failed], len(self.outcomes), bool(self.all_warnings()))

    def all_warnings(self) -> list[str]:
        return list(self.warnings) + [w for o in self.outcomes for w in o.warnings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "plan": self.plan,
            "vms": [o.to_dict() for o in self.outcomes],
            "failed": [o.vm for o in self.failed],
            **self.extra,
            "warnings": self.all_warnings(),
        }
