"""Load a plan file: read, parse with positions, check, resolve.

Contract:

* :func:`load_plan` / :func:`parse_plan` return a :class:`LoadedPlan` or raise
  :class:`~scmt_cli.errors.PlanError` whose ``problems`` lists EVERY problem
  found (YAML, schema, clear-text secrets, semantic rules), sorted by position,
  each one line ``file:line:col: field.path: what was expected``.
* They never raise anything else for bad input, and never put a secret from
  the plan into a message.
* ``now`` (timezone-aware; default: the current UTC time) is the clock the
  cutover-window rule uses; ``inventory`` enables the only-expand checks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from scmt_cli.domain.inventory import Inventory
from scmt_cli.domain.plan import schemacheck, semantic
from scmt_cli.domain.plan.build import build_plan
from scmt_cli.domain.plan.model import LoadedPlan
from scmt_cli.domain.plan.secretfiles import secret_file_problems
from scmt_cli.domain.plan.yamlsource import YamlLoadError, format_path, load_located
from scmt_cli.errors import MissingFileError, PlanError, Problem

#: Plans are hand-written; anything bigger is a mistake (or an attack).
MAX_PLAN_BYTES = 4 * 1024 * 1024


def _fail(file: str, problems: list[Problem]) -> PlanError:
    count = len(problems)
    noun = "problem" if count == 1 else "problems"
    return PlanError(
        f"{file} is not a valid plan ({count} {noun})",
        problems=sorted(problems, key=lambda p: (p.line, p.column, p.path)),
        hint="'scmt plan schema' prints every field with its description",
    )


def read_plan_text(path: Path, display: str | None = None) -> str:
    """The text of a plan file; unreadable files raise :class:`PlanError`."""
    name = display or str(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PLAN_BYTES + 1)
    except FileNotFoundError:
        raise MissingFileError(f"{name}: no such plan file",
                               hint=f"check the path, or write a starter plan with 'scmt plan init {name}'") from None
    except IsADirectoryError:
        raise _fail(name, [Problem(name, "is a directory, expected a plan file")]) from None
    except OSError as err:
        raise _fail(name, [Problem(name, f"cannot read: {err.strerror or err}")]) from None
    if len(raw) > MAX_PLAN_BYTES:
        raise _fail(name, [Problem(name, f"larger than {MAX_PLAN_BYTES // (1024 * 1024)} MiB; not a plan file")])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        text = raw[: err.start].decode("utf-8", "replace")
        line = text.count("\n") + 1
        col = len(text) - (text.rfind("\n") + 1) + 1
        raise _fail(name, [Problem(name, "not UTF-8 text (is this a plan file?)", "", line, col)]) from None


def load_plan(
    path: str | Path,
    *,
    inventory: Inventory | None = None,
    now: dt.datetime | None = None,
) -> LoadedPlan:
    """Read and check the plan at ``path``; see the module docstring."""
    display = str(path)
    p = Path(path)
    return parse_plan(read_plan_text(p, display), file=display, path=p, inventory=inventory, now=now)


def parse_plan(
    text: str,
    *,
    file: str = "<plan>",
    path: Path | None = None,
    inventory: Inventory | None = None,
    now: dt.datetime | None = None,
) -> LoadedPlan:
    """Check plan ``text``; ``file`` names it in problems, ``path`` anchors relative paths."""
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        located = load_located(text, file)
    except YamlLoadError as err:  # a syntax error: its own marks, in their order (an unclosed '[' first)
        raise PlanError(err.problems[0].format(), problems=err.problems,
                        hint="fix the YAML syntax at the first line named") from None
    if located.data is None:
        raise _fail(file, [Problem(file, "the plan is empty; 'scmt plan init FILE' writes a starter plan", "", 1, 1)])
    if not isinstance(located.data, dict):
        line, col = located.mark(())
        raise _fail(file, [Problem(file, "expected a mapping (version:, target:, vms: ...) at the top level", "",
                                   line, col)])
    problems = list(located.problems)
    secrets, secret_paths = schemacheck.secret_problems(located)
    problems += secrets
    problems += schemacheck.schema_problems(located, skip=secret_paths)
    errors, warnings, notes = semantic.check(located, inventory=inventory, now=now)
    problems += [e for e in errors if not any(_under(e.path, s) for s in secret_paths)]
    problems += secret_file_problems(located, path.parent if path is not None else None)
    if problems:
        raise _fail(file, _dedupe(problems))
    plan = build_plan(located.data, file=path if path is not None else Path(file))
    return LoadedPlan(
        plan=plan,
        warnings=tuple(sorted(warnings, key=lambda p: (p.line, p.column, p.path))),
        notes=tuple(notes),
    )


def _under(problem_path: str, secret_path: tuple[str | int, ...]) -> bool:
    prefix = format_path(secret_path)
    return problem_path == prefix or problem_path.startswith(prefix + ".") or problem_path.startswith(prefix + "[")


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, int, int, str]] = set()
    out: list[Problem] = []
    for p in problems:
        ident = (p.path, p.line, p.column, p.message)
        if ident not in seen:
            seen.add(ident)
            out.append(p)
    return out
