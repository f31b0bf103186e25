"""Migration plans: the YAML format, its checks and the resolved model.

Public API (what the sync/failover/rollback services use)::

    from scmt_cli.domain.plan import load_plan
    loaded = load_plan("plans/managed.yaml", inventory=None)   # raises PlanError
    plan = loaded.plan
    for vm in plan.vms:
        eff = plan.effective(vm)          # settings with group + defaults applied
        eff.method, eff.bandwidth, eff.cutover_window, eff.hooks.failover
    plan.group("redis").vms, plan.group_of("redis-1")

The format is documented by the JSON Schema shipped next to this file
(``scmt plan schema``); the checks live in :mod:`.schemacheck` (schema,
clear-text secrets) and :mod:`.semantic` / :mod:`.sizing` (rules).
"""

from scmt_cli.domain.plan.loader import load_plan, parse_plan
from scmt_cli.domain.plan.model import (
    AGENT_METHODS,
    METHODS,
    AgentSpec,
    CutoverWindow,
    Defaults,
    DiskSpec,
    Effective,
    Group,
    HookPhase,
    Hooks,
    LoadedPlan,
    NicSpec,
    Plan,
    Source,
    Target,
    VMSpec,
)
from scmt_cli.domain.plan.schemacheck import schema

__all__ = [
    "AGENT_METHODS",
    "METHODS",
    "AgentSpec",
    "CutoverWindow",
    "Defaults",
    "DiskSpec",
    "Effective",
    "Group",
    "HookPhase",
    "Hooks",
    "LoadedPlan",
    "NicSpec",
    "Plan",
    "Source",
    "Target",
    "VMSpec",
    "load_plan",
    "parse_plan",
    "schema",
]
