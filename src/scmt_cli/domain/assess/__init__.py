"""Assessment: rules over the normalized inventory, verdicts and a method per VM.

:func:`assess_vm` is the entry point: it runs every rule once, resolves the
findings under the method being assessed (the plan's, or the recommended one
when none is given) and recommends a method from the downtime tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scmt_cli.domain.assess.model import (
    ALL_METHODS,
    AssessContext,
    Finding,
    Rule,
    Severity,
    TargetSizing,
    Verdict,
    verdict,
)
from scmt_cli.domain.assess.recommend import Recommendation, lab_switch, recommend
from scmt_cli.domain.assess.rules import RULES, evaluate, findings_for
from scmt_cli.domain.compat import FAMILY_NAMES, match_os
from scmt_cli.domain.inventory import VM


@dataclass(frozen=True)
class VmAssessment:
    """The assessment of one VM under ``method``."""

    name: str
    method: str
    recommended_method: str
    reason: str
    verdict: Verdict
    findings: tuple[Finding, ...]
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # under every method
    blockers_by_method: dict[str, list[str]] = field(default_factory=dict)  # rule ids
    os: str | None = None
    group: str | None = None
    source: str = ""
    not_assessed: tuple[str, ...] = ()  # what the input lacked for this VM's method (verdict "incomplete")

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vm": self.name,
            "verdict": self.verdict,
            "method": self.method,
            "recommended_method": self.recommended_method,
            "reason": self.reason,
            "verdicts_by_method": dict(self.verdicts),
            "blockers_by_method": {m: list(ids) for m, ids in self.blockers_by_method.items()},
            "not_assessed": list(self.not_assessed),
            "os": self.os,
            "group": self.group,
            "source": self.source,
            "blockers": self.count("blocker"),
            "warnings": self.count("warning"),
            "findings": [f.to_dict() for f in self.findings],
        }


def assess_vm(
    vm: VM,
    ctx: AssessContext,
    *,
    method: str | None = None,
    tolerance_seconds: float | None = None,
    group: str | None = None,
) -> VmAssessment:
    """Assess ``vm``; ``method`` None means "assess under the recommended method"."""
    if method is not None and method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(ALL_METHODS)}")
    hits = evaluate(vm, ctx)
    per_method = {m: findings_for(hits, m) for m in ALL_METHODS}
    unchecked = {m: _unchecked(ctx, m) for m in ALL_METHODS}
    verdicts: dict[str, Verdict] = {m: verdict(f, unchecked[m]) for m, f in per_method.items()}
    osm = match_os(vm.guest_id, vm.guest_full_name, vm.tools_guest_full_name)
    rec = recommend(verdicts, osm.os_kind, tolerance_seconds, group)
    blockers = {m: sorted({f.id for f in per_method[m] if f.severity == "blocker"}) for m in ALL_METHODS}
    reason = rec.reason
    if all(verdicts[m] == "blocked" for m in ALL_METHODS):
        by_ids: dict[str, list[str]] = {}
        for m in ALL_METHODS:
            by_ids.setdefault(", ".join(blockers[m]), []).append(m)
        reason += " (" + "; ".join(f"{'/'.join(ms)}: {ids}" for ids, ms in by_ids.items()) + ")"
    chosen = method or rec.method
    os_label = osm.row.label if osm.row else None
    if os_label is None and osm.family:
        os_label = f"{FAMILY_NAMES.get(osm.family, osm.family)} {osm.version or ''}".strip()
    return VmAssessment(
        name=vm.name,
        method=chosen,
        recommended_method=rec.method,
        reason=reason,
        blockers_by_method=blockers,
        verdict=verdicts[chosen],
        findings=tuple(per_method[chosen]),
        verdicts=verdicts,
        os=os_label,
        group=group,
        source=vm.source,
        not_assessed=unchecked[chosen],
    )


def _unchecked(ctx: AssessContext, method: str) -> tuple[str, ...]:
    """What the input lacks to run rules that could block a VM under ``method`` ("no vDisk tab: disk.shared")."""
    out = []
    for gap in ctx.inventory.not_assessed:
        rules = [r for r in gap.rules if r in RULES and RULES[r].severity_for(method) == "blocker"]
        if rules:
            out.append(f"{gap.what}: {', '.join(rules)} not checked")
    return tuple(out)


__all__ = [
    "ALL_METHODS",
    "RULES",
    "AssessContext",
    "Finding",
    "Recommendation",
    "Rule",
    "TargetSizing",
    "VmAssessment",
    "assess_vm",
    "lab_switch",
    "recommend",
    "verdict",
]
