"""Plan use cases: validate, show, schema, init.

Contract: each function returns one result object (``exit_code`` 0, or 1 when
there are warnings; ``to_dict()`` for ``--json``) or raises an
:class:`~scmt_cli.errors.ScmtError`.  Nothing here prints; progress and
per-file verdicts go to the ``reporter``.

An inventory (for the only-expand checks) comes from ``inventory_path`` when
given, else from the plan's own ``source.inventory``; it is read by
:func:`scmt_cli.inventory.load_inventory` (RVTools exports, lab files).  With an
inventory, ``validate_plans`` also assesses every VM of the plan under its
method: each blocker is a warning naming the VM and the rule id (exit 1), or
with ``strict`` a :class:`PlanBlockedError` (exit 20), so that a plan whose VMs
``sync`` would refuse is not called valid.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.domain.inventory import Inventory
from scmt_cli.domain.plan import LoadedPlan, load_plan, schema
from scmt_cli.domain.plan.model import METHODS
from scmt_cli.errors import BlockedByAssessmentError, MissingFileError, PlanError, Problem, ScmtError, UsageError
from scmt_cli.events import NullReporter, Reporter


class _FileVerdicts:
    """Mixin of the errors of ``plan validate``: ``files`` keeps the per-file verdicts for ``--json``."""

    files: list[FileVerdict]

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = super().to_dict()  # type: ignore[misc]
        data["files"] = [f.to_dict() for f in self.files]
        return data


class PlanValidationError(_FileVerdicts, PlanError):
    """One or more plans are invalid."""

    def __init__(self, message: str, *, files: Sequence[FileVerdict], problems: Sequence[Problem], hint: str | None):
        super().__init__(message, problems=problems, hint=hint)
        self.files = list(files)


class PlanFileMissingError(_FileVerdicts, MissingFileError):
    """A plan named on the command line does not exist (exit 2 and the hint every command gives).

    The other files are still checked: ``problems`` and ``files`` hold every file's verdict.
    """

    def __init__(self, message: str, *, files: Sequence[FileVerdict], problems: Sequence[Problem], hint: str | None):
        super().__init__(message, problems=problems, hint=hint)
        self.files = list(files)


class PlanBlockedError(_FileVerdicts, BlockedByAssessmentError):
    """``plan validate --strict``: some VM is blocked by assessment for its method (exit 20)."""

    def __init__(self, message: str, *, files: Sequence[FileVerdict], problems: Sequence[Problem]):
        super().__init__(message, problems=problems, hint="'scmt assess PLAN --details' lists each remedy")
        self.files = list(files)


@dataclass(frozen=True)
class Blocker:
    """A VM of a plan that assessment blocks under its method, and why (a rule id)."""

    vm: str
    method: str
    rule: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"vm": self.vm, "method": self.method, "rule": self.rule, "message": self.message}


@dataclass
class FileVerdict:
    """The outcome of validating one plan file."""

    file: str
    valid: bool
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    blockers: list[Blocker] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "valid": self.valid,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
            "blockers": [b.to_dict() for b in self.blockers],
            "notes": list(self.notes),
            **({"plan": self.summary} if self.summary else {}),
        }


@dataclass
class ValidationReport:
    """Every file valid; some may carry warnings (exit 1)."""

    files: list[FileVerdict]
    strict: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if any(f.warnings for f in self.files) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": True,
            "strict": self.strict,
            "files": [f.to_dict() for f in self.files],
            "warnings": [w.format() for f in self.files for w in f.warnings],
        }


@dataclass
class PlanView:
    """A loaded plan for ``plan show``."""

    file: str
    loaded: LoadedPlan
    inventory_source: str | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.loaded.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "plan": self.loaded.plan.to_dict(),
            "inventory": self.inventory_source,
            "warnings": [w.format() for w in self.loaded.warnings],
            "notes": list(self.loaded.notes),
        }


@dataclass
class SchemaDoc:
    """The plan JSON Schema; ``to_dict`` is the schema itself."""

    schema: dict[str, Any]
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return self.schema


@dataclass
class InitResult:
    file: str
    method: str
    overwritten: bool
    target: str = "dir"
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "method": self.method, "target": self.target, "overwritten": self.overwritten,
                "warnings": []}


def read_inventory(path: Path) -> Inventory:
    """An :class:`Inventory` from a file (RVTools xlsx/CSV or lab YAML); errors are ScmtErrors (exit 3)."""
    from scmt_cli.inventory import load_inventory

    return load_inventory(path)


def _summary(loaded: LoadedPlan) -> dict[str, Any]:
    plan = loaded.plan
    methods = sorted({plan.effective(vm).method for vm in plan.vms})
    return {"name": plan.name, "vms": len(plan.vms), "groups": len(plan.groups), "methods": methods}


def _load(
    path: Path, *, inventory_path: Path | None, now: dt.datetime | None, reporter: Reporter
) -> tuple[LoadedPlan, str | None, Inventory | None]:
    """Load a plan, then (when an inventory is known) load it again with the inventory."""
    if inventory_path is not None:
        inventory = read_inventory(inventory_path)
        return load_plan(path, inventory=inventory, now=now), str(inventory_path), inventory
    loaded = load_plan(path, now=now)
    own = loaded.plan.source.inventory
    if own is None:
        return loaded, None, None
    try:
        inventory = read_inventory(own)
    except ScmtError as err:
        from scmt_cli.domain.plan.loader import read_plan_text
        from scmt_cli.domain.plan.yamlsource import load_located

        located = load_located(read_plan_text(path), str(path))
        raise PlanError(
            f"{path}: source.inventory cannot be read",
            problems=[located.problem(("source", "inventory"), f"cannot read the inventory: {err.message}")],
            hint=err.hint,
        ) from None
    reporter.log("debug", f"{path}: checking sizes against {own}", file=str(path))
    return load_plan(path, inventory=inventory, now=now), str(own), inventory


def assessment_blockers(path: Path, loaded: LoadedPlan, inventory: Inventory) -> tuple[list[Blocker], list[Problem]]:
    """Assess every VM of the plan found in ``inventory`` under its method (as ``sync`` will).

    Returns the blockers and, located at each VM's name in the plan, one warning per blocked VM
    naming its rule ids, plus one per VM whose assessment is incomplete (the inventory lacks data).
    """
    from scmt_cli.domain.assess import AssessContext, assess_vm
    from scmt_cli.domain.plan.loader import read_plan_text
    from scmt_cli.domain.plan.yamlsource import load_located
    from scmt_cli.services.assess import target_sizing

    plan = loaded.plan
    located = None
    blockers: list[Blocker] = []
    problems: list[Problem] = []
    for i, vm in enumerate(plan.vms):
        found = inventory.vm(vm.name)
        if found is None:
            continue  # the plan's own checks say so when it matters
        eff = plan.effective(vm.name)
        ctx = AssessContext(inventory=inventory, target=target_sizing(eff), vddk=plan.source.vddk_libdir is not None,
                            enable_cbt=plan.source.enable_cbt)  # as sync's gate assesses it
        a = assess_vm(found, ctx, method=eff.method, tolerance_seconds=eff.downtime_tolerance, group=eff.group)
        if a.verdict == "blocked":
            hits = [f for f in a.findings if f.severity == "blocker"]
            blockers += [Blocker(vm.name, eff.method, f.id, f.message) for f in hits]
            rec = a.recommended_method
            advice = (f"; method {rec} is not blocked" if a.verdicts.get(rec) != "blocked"
                      else "; every method is blocked")
            message = (f"{vm.name} is blocked for method {eff.method} by "
                       + "; ".join(f"{f.id} ({f.message})" for f in hits) + advice)
        elif a.verdict == "incomplete":
            message = f"{vm.name}: assessment incomplete for method {eff.method}: {'; '.join(a.not_assessed)}"
        else:
            continue
        located = located or load_located(read_plan_text(path), str(path))
        problems.append(located.problem(("vms", i, "name"), message))
    return blockers, problems


def validate_plans(
    paths: Sequence[Path],
    *,
    inventory_path: Path | None = None,
    now: dt.datetime | None = None,
    reporter: Reporter | None = None,
    strict: bool = False,
) -> ValidationReport:
    """Validate every plan in ``paths``; raise :class:`PlanValidationError` if any is invalid.

    All files are checked (one bad file does not hide problems of the next);
    the error's ``problems`` hold every problem of every invalid file.  A plan
    file that does not exist is a :class:`MissingFileError` (exit 2, as for every
    command).  With an inventory, VMs blocked under their method are warnings,
    or with ``strict`` a :class:`PlanBlockedError` once every file is checked.
    """
    reporter = reporter or NullReporter()
    if not paths:
        raise UsageError("no plan files given", hint="scmt plan validate PLAN...")
    verdicts: list[FileVerdict] = []
    missing: list[MissingFileError] = []
    for path in paths:
        name = str(path)
        try:
            loaded, _, inventory = _load(path, inventory_path=inventory_path, now=now, reporter=reporter)
        except MissingFileError as err:
            if not err.message.startswith(f"{name}:"):
                raise  # the inventory is missing, not this plan: no plan can be checked
            missing.append(err)
            verdicts.append(FileVerdict(name, False, errors=[Problem(name, "no such plan file")]))
            continue
        except PlanError as err:
            verdicts.append(FileVerdict(name, False, errors=list(err.problems) or [Problem(name, err.message)]))
            reporter.event("plan_invalid", file=name, problems=len(err.problems))
            continue
        blockers, blocked = assessment_blockers(path, loaded, inventory) if inventory is not None else ([], [])
        verdict = FileVerdict(name, True, warnings=list(loaded.warnings) + blocked, notes=list(loaded.notes),
                              summary=_summary(loaded), blockers=blockers)
        verdicts.append(verdict)
        reporter.event("plan_valid", file=name, warnings=len(verdict.warnings), blockers=len(blockers))
    bad = [v for v in verdicts if not v.valid]
    if not bad:
        if strict and any(v.blockers for v in verdicts):
            held = [v for v in verdicts if v.blockers]
            vms = sorted({b.vm for v in held for b in v.blockers})
            problems = [w for v in held for w in v.warnings if any(w.message.startswith(f"{b.vm} is blocked")
                                                                   for b in v.blockers)]
            raise PlanBlockedError(f"{_count(vms, 'VM')} blocked by assessment for the plan's method "
                                   f"({', '.join(vms)}); --strict refuses the plan", files=verdicts, problems=problems)
        return ValidationReport(verdicts, strict)
    for v in verdicts:
        if v.valid:
            reporter.log("info", f"{v.file}: valid", file=v.file)
            for w in v.warnings:
                reporter.log("warning", w.format(), file=v.file)
    problems = [p for v in bad for p in v.errors]
    if missing:
        message = missing[0].message if len(missing) == 1 else f"{len(missing)} plan files do not exist"
        raise PlanFileMissingError(message, files=verdicts, problems=problems, hint=missing[0].hint)
    if len(verdicts) == 1:
        message = f"{bad[0].file} is not a valid plan ({_count(problems, 'problem')})"
    else:
        message = f"{len(bad)} of {len(verdicts)} plans are invalid ({_count(problems, 'problem')})"
    raise PlanValidationError(
        message, files=verdicts, problems=problems, hint="'scmt plan schema' prints every field with its description"
    )


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def show_plan(
    path: Path,
    *,
    inventory_path: Path | None = None,
    now: dt.datetime | None = None,
    reporter: Reporter | None = None,
) -> PlanView:
    """Load ``path`` and return it with every default resolved (raises PlanError)."""
    loaded, inv, _ = _load(path, inventory_path=inventory_path, now=now, reporter=reporter or NullReporter())
    return PlanView(str(path), loaded, inv)


def plan_schema() -> SchemaDoc:
    """The JSON Schema (draft 2020-12) of plan files."""
    return SchemaDoc(schema())


def init_plan(path: Path, *, method: str, target: str = "dir", force: bool = False,
              reporter: Reporter | None = None) -> InitResult:
    """Write a commented starter plan for ``method`` and target type ``target`` to ``path``.

    Refuses to overwrite an existing file unless ``force``; writes atomically
    (a temporary file renamed into place), so an interrupted run leaves either
    the old file or the new one.
    """
    from scmt_cli.domain.plan.schemacheck import suggest
    from scmt_cli.domain.plan.starter import TARGETS, starter_plan

    if method not in METHODS:
        near = suggest(method, list(METHODS))
        hint = f"did you mean {near!r}?" if near else None
        raise UsageError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}", hint=hint)
    if target not in TARGETS:
        near = suggest(target, list(TARGETS))
        hint = f"did you mean {near!r}?" if near else None
        raise UsageError(f"--target {target!r}: expected one of {', '.join(TARGETS)}", hint=hint)
    existed = path.exists()
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name such as {path / 'plan.yaml'}")
    if existed and not force:
        raise UsageError(f"{path} already exists; not overwriting it", hint="use --force to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"directory {parent} does not exist")
    text = starter_plan(method, path.name, target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
    (reporter or NullReporter()).event("plan_written", file=str(path), method=method, target=target)
    return InitResult(str(path), method, existed, target)
