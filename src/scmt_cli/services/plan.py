"""Plan use cases: validate, show, schema, init.

Contract: each function returns one result object (``exit_code`` 0, or 1 when
there are warnings; ``to_dict()`` for ``--json``) or raises an
:class:`~scmt_cli.errors.ScmtError`.  Nothing here prints; progress and
per-file verdicts go to the ``reporter``.

An inventory (for the only-expand checks) comes from ``inventory_path`` when
given, else from the plan's own ``source.inventory``; it is read by
:func:`scmt_cli.inventory.load_inventory` (RVTools exports, lab files).
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
from scmt_cli.errors import MissingFileError, PlanError, Problem, ScmtError, UsageError
from scmt_cli.events import NullReporter, Reporter


class PlanValidationError(PlanError):
    """One or more plans are invalid; ``files`` keeps the per-file verdicts for ``--json``."""

    def __init__(self, message: str, *, files: Sequence[FileVerdict], problems: Sequence[Problem], hint: str | None):
        super().__init__(message, problems=problems, hint=hint)
        self.files = list(files)

    def to_dict(self) -> dict[str, object]:
        data = super().to_dict()
        data["files"] = [f.to_dict() for f in self.files]
        return data


@dataclass
class FileVerdict:
    """The outcome of validating one plan file."""

    file: str
    valid: bool
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "valid": self.valid,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
            "notes": list(self.notes),
            **({"plan": self.summary} if self.summary else {}),
        }


@dataclass
class ValidationReport:
    """Every file valid; some may carry warnings (exit 1)."""

    files: list[FileVerdict]

    @property
    def exit_code(self) -> int:
        return 1 if any(f.warnings for f in self.files) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": True,
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
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "method": self.method, "overwritten": self.overwritten, "warnings": []}


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
) -> tuple[LoadedPlan, str | None]:
    """Load a plan, then (when an inventory is known) load it again with the inventory."""
    if inventory_path is not None:
        return load_plan(path, inventory=read_inventory(inventory_path), now=now), str(inventory_path)
    loaded = load_plan(path, now=now)
    own = loaded.plan.source.inventory
    if own is None:
        return loaded, None
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
    return load_plan(path, inventory=inventory, now=now), str(own)


def validate_plans(
    paths: Sequence[Path],
    *,
    inventory_path: Path | None = None,
    now: dt.datetime | None = None,
    reporter: Reporter | None = None,
) -> ValidationReport:
    """Validate every plan in ``paths``; raise :class:`PlanValidationError` if any is invalid.

    All files are checked (one bad file does not hide problems of the next);
    the error's ``problems`` hold every problem of every invalid file.
    """
    reporter = reporter or NullReporter()
    if not paths:
        raise UsageError("no plan files given", hint="scmt plan validate PLAN...")
    verdicts: list[FileVerdict] = []
    for path in paths:
        name = str(path)
        try:
            loaded, _ = _load(path, inventory_path=inventory_path, now=now, reporter=reporter)
        except (PlanError, MissingFileError) as err:
            if isinstance(err, MissingFileError) and not err.message.startswith(f"{name}:"):
                raise  # the inventory is missing, not this plan: no plan can be checked
            verdicts.append(FileVerdict(name, False, errors=list(err.problems) or [Problem(name, err.message)]))
            reporter.event("plan_invalid", file=name, problems=len(err.problems))
            continue
        verdict = FileVerdict(name, True, warnings=list(loaded.warnings), notes=list(loaded.notes),
                              summary=_summary(loaded))
        verdicts.append(verdict)
        reporter.event("plan_valid", file=name, warnings=len(loaded.warnings))
    bad = [v for v in verdicts if not v.valid]
    if not bad:
        return ValidationReport(verdicts)
    for v in verdicts:
        if v.valid:
            reporter.log("info", f"{v.file}: valid", file=v.file)
            for w in v.warnings:
                reporter.log("warning", w.format(), file=v.file)
    problems = [p for v in bad for p in v.errors]
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
    loaded, inv = _load(path, inventory_path=inventory_path, now=now, reporter=reporter or NullReporter())
    return PlanView(str(path), loaded, inv)


def plan_schema() -> SchemaDoc:
    """The JSON Schema (draft 2020-12) of plan files."""
    return SchemaDoc(schema())


def init_plan(path: Path, *, method: str, force: bool = False, reporter: Reporter | None = None) -> InitResult:
    """Write a commented starter plan for ``method`` to ``path``.

    Refuses to overwrite an existing file unless ``force``; writes atomically
    (a temporary file renamed into place), so an interrupted run leaves either
    the old file or the new one.
    """
    from scmt_cli.domain.plan.schemacheck import suggest
    from scmt_cli.domain.plan.starter import starter_plan

    if method not in METHODS:
        near = suggest(method, list(METHODS))
        hint = f"did you mean {near!r}?" if near else None
        raise UsageError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}", hint=hint)
    existed = path.exists()
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name such as {path / 'plan.yaml'}")
    if existed and not force:
        raise UsageError(f"{path} already exists; not overwriting it", hint="use --force to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"directory {parent} does not exist")
    text = starter_plan(method, path.name)
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
    (reporter or NullReporter()).event("plan_written", file=str(path), method=method)
    return InitResult(str(path), method, existed)
