"""Assessment vocabulary: rules, findings, verdicts, the context rules read.

A :class:`Rule` has a stable ``id`` (``disk.rdm.physical``), a default
severity, the methods it applies to (optionally with a different severity per
method), and a remedy.  A check turns a VM into zero or more :class:`Finding`
objects; :func:`verdict` folds the findings that apply to one method into
``ready`` / ``warnings`` / ``blocked``, or ``incomplete`` when a rule that could
block the VM under that method could not run (the input lacks its data).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from scmt_cli.domain.inventory import Inventory

Severity = Literal["blocker", "warning", "info"]
Verdict = Literal["ready", "warnings", "blocked", "incomplete"]
ALL_METHODS: tuple[str, ...] = ("managed", "agentless", "agent", "hot-backup")
SNAPSHOT_METHODS: tuple[str, ...] = ("managed", "agentless")
AGENT_METHODS: tuple[str, ...] = ("agent", "hot-backup")
SEVERITY_ORDER: dict[str, int] = {"blocker": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Rule:
    """A named check.  ``severity_by_method`` overrides ``severity`` for some methods."""

    id: str
    severity: Severity
    methods: tuple[str, ...]
    title: str
    remedy: str
    severity_by_method: Mapping[str, Severity] = field(default_factory=dict)

    def severity_for(self, method: str) -> Severity | None:
        """The severity of this rule under ``method``; None when it does not apply."""
        if method not in self.methods:
            return None
        return self.severity_by_method.get(method, self.severity)


@dataclass(frozen=True)
class Finding:
    """One rule hit on one VM.  ``severity`` is the severity under the assessed method."""

    id: str
    severity: Severity
    message: str
    remedy: str
    methods: tuple[str, ...] = ALL_METHODS
    subject: str = ""  # a disk label, a NIC, a datastore: what the finding is about

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "severity": self.severity,
            "message": self.message,
            "remedy": self.remedy,
            "methods": list(self.methods),
            "subject": self.subject,
        }


@dataclass(frozen=True)
class TargetSizing:
    """What the plan asks for on the target; None means "same as the source"."""

    cpus: int | None = None
    memory_mib: int | None = None
    disk_bytes: Mapping[str, int] = field(default_factory=dict)  # by disk label or key as text


@dataclass(frozen=True)
class AssessContext:
    """Everything a rule may read besides the VM itself."""

    inventory: Inventory = field(default_factory=Inventory)
    target: TargetSizing | None = None
    snapshot_reserve: float = 0.10  # share of a VM's provisioned size a datastore must keep free for snapshots
    vddk: bool = False  # disks are read with VDDK (through snapshot chains), not over /folder
    enable_cbt: bool = True  # the plan lets sync turn CBT on (source.enable_cbt); False: CBT off blocks


def verdict(findings: Iterable[Finding], unchecked: Iterable[str] = ()) -> Verdict:
    """``blocked`` if any blocker, else ``incomplete`` when ``unchecked`` names a rule that could not run,
    else ``warnings`` if any warning, else ``ready``.
    """
    sev = {f.severity for f in findings}
    if "blocker" in sev:
        return "blocked"
    if any(True for _ in unchecked):
        return "incomplete"
    if "warning" in sev:
        return "warnings"
    return "ready"
