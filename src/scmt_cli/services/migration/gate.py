"""The assessment gate: a VM that assessment blocks for its method is not synced.

``scmt assess`` tells an operator in advance; the gate makes the same rules
binding when the work starts, so an overnight job does not discover a
physical RDM or a stale snapshot chain half way through a seed.  It reads the
inventory the sync has already fetched (no extra vCenter round trips beyond
that one) and raises :class:`~scmt_cli.errors.BlockedByAssessmentError`
(exit 20) naming every blocker with its remedy.
"""

from __future__ import annotations

from dataclasses import replace

from scmt_cli.domain.assess.model import AssessContext
from scmt_cli.domain.assess.rules import evaluate, findings_for
from scmt_cli.domain.inventory import VM, Inventory
from scmt_cli.domain.plan import Effective, Plan
from scmt_cli.errors import BlockedByAssessmentError
from scmt_cli.services.migration.snapshots import TOOL_SNAPSHOT_PREFIX


def check_assessment(plan: Plan, eff: Effective, vm: VM, inventory: Inventory) -> list[str]:
    """Raise if ``vm`` is blocked for ``eff.method``; return its warnings as one-line strings."""
    # The tool's snapshots are removed before the copy (this store's) or reported (another store's, which a
    # run may be reading now): not a blocker either way.
    own = tuple(s for s in vm.snapshots if s.name.startswith(TOOL_SNAPSHOT_PREFIX))
    if own:
        vm = replace(vm, snapshots=tuple(s for s in vm.snapshots if s not in own))
    ctx = AssessContext(inventory=inventory, vddk=plan.source.vddk_libdir is not None,
                        enable_cbt=plan.source.enable_cbt)
    findings = findings_for(evaluate(vm, ctx), eff.method)
    blockers = [f for f in findings if f.severity == "blocker"]
    if blockers:
        detail = "; ".join(f"{f.id}: {f.message}" for f in blockers)
        remedies = " / ".join(dict.fromkeys(f.remedy for f in blockers))
        raise BlockedByAssessmentError(
            f"{vm.name}: blocked by assessment for method {eff.method}: {detail}",
            hint=remedies or "run 'scmt assess PLAN --details' for the remedies",
        )
    return [f"{vm.name}: {f.id}: {f.message}" for f in findings if f.severity == "warning"]
