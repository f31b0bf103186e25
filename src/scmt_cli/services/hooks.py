"""Hooks: the plan's ``pre``/``post`` commands around sync, failover and rollback.

A plan sets hooks in ``defaults.hooks`` (every VM) and per VM (``vms[].hooks``;
a VM's entry for a phase replaces the defaults' entry, see
:class:`~scmt_cli.domain.plan.model.Hooks`).  Services call :func:`run_hooks`
around a VM's step with that VM's effective :class:`HookPhase`, or with
``vm=None`` in the :class:`HookContext` for once-per-command (plan-level)
commands.

Contract:

* each command is an argv list run without a shell under :func:`scmt_cli.procs.run`
  (its own process group, stdin closed, stopped and reaped when scmt stops),
  in the working directory of the plan file;
* ``timeout`` seconds per command; on timeout the whole process group gets
  SIGTERM, then SIGKILL two seconds later;
* the environment is small and explicit: a few harmless variables of scmt's
  own environment (:data:`PASSTHROUGH_ENV`: ``PATH``, ``HOME``, locale, ``TZ``,
  ``TMPDIR`` ...) plus the ``SCMT_*`` variables describing the step
  (:meth:`HookContext.environment`).  Nothing else is inherited, so the
  variables a plan names for credentials (``password_env``) never reach a hook;
* stdout and stderr are captured together; the last
  :data:`~scmt_cli.procs.OUTPUT_LIMIT` characters, with secrets
  redacted, go to the reporter (event ``hook_finished``) and the result;
* a ``pre`` command that fails (non-zero exit, timeout, cannot start) raises
  :class:`~scmt_cli.errors.HookError` (exit 51): the later ``pre`` commands do
  not run and the caller must not run the VM's step; a ``post`` command that
  fails is a warning and the remaining ``post`` commands still run.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from scmt_cli import procs
from scmt_cli.errors import HookError, UsageError, redact_text
from scmt_cli.events import Reporter

Phase = Literal["sync", "failover", "rollback"]
Stage = Literal["pre", "post"]
PHASES: tuple[Phase, ...] = ("sync", "failover", "rollback")

#: Variables of scmt's own environment that hooks inherit (plus every ``LC_*``).
PASSTHROUGH_ENV: tuple[str, ...] = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SHELL")
_EXTRA_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SECRETISH = re.compile(r"(?i)(password|passwd|secret|token|credential|apikey|api_key|private)")


class HookCommands(Protocol):
    """What a plan's ``HookPhase`` offers: argv lists per stage and a per-command timeout."""

    @property
    def pre(self) -> Sequence[Sequence[str]]: ...

    @property
    def post(self) -> Sequence[Sequence[str]]: ...

    @property
    def timeout(self) -> float: ...


@dataclass(frozen=True)
class HookContext:
    """What the hook is told about the step, as ``SCMT_*`` environment variables.

    ``vm`` is ``None`` for a plan-level (once per command) run.  ``step``
    names the step inside the phase (``seed``, ``incremental``,
    ``final-sync`` ...); it defaults to the stage.  ``result`` is set for
    ``post`` hooks (``ok``).  ``extra`` adds ``SCMT_<KEY>`` variables (keys
    upper-case; values must not look like credentials).
    """

    plan: str
    phase: Phase
    vm: str | None = None
    step: str | None = None
    method: str | None = None
    group: str | None = None
    target_name: str | None = None
    target_dir: str | None = None
    vms: tuple[str, ...] = ()
    cwd: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def environment(self, stage: Stage) -> dict[str, str]:
        """The complete environment of a hook command for ``stage``."""
        env = {k: v for k, v in os.environ.items() if k in PASSTHROUGH_ENV or k.startswith("LC_")}
        ours: dict[str, str | None] = {
            "SCMT_PLAN": self.plan,
            "SCMT_PHASE": self.phase,
            "SCMT_STAGE": stage,
            "SCMT_STEP": self.step or stage,
            "SCMT_SCOPE": "vm" if self.vm else "plan",
            "SCMT_VM": self.vm or "",
            "SCMT_VMS": ",".join(self.vms) if self.vms else (self.vm or ""),
            "SCMT_METHOD": self.method,
            "SCMT_GROUP": self.group,
            "SCMT_TARGET_NAME": self.target_name,
            "SCMT_TARGET_DIR": self.target_dir,
        }
        for key, value in self.extra.items():
            if not _EXTRA_KEY.match(key):
                raise UsageError(f"hook variable name {key!r} must be upper-case letters, digits and '_'")
            if _SECRETISH.search(key):
                raise UsageError(f"hook variable SCMT_{key} looks like a credential; hooks never receive credentials")
            ours[f"SCMT_{key}"] = value
        env.update({k: v for k, v in ours.items() if v is not None})
        return env


@dataclass(frozen=True)
class HookOutcome:
    """One command's run.  ``exit_code`` is ``None`` after a timeout."""

    phase: Phase
    stage: Stage
    vm: str | None
    argv: tuple[str, ...]
    exit_code: int | None
    timed_out: bool
    seconds: float
    output: str
    last_line: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def command(self) -> str:
        """The argv as one shell-quoted line, secrets redacted (for messages only)."""
        return redact_text(shlex.join(self.argv))

    def describe_failure(self) -> str:
        who = f"{self.vm}: " if self.vm else ""
        if self.timed_out:
            why = f"timed out after {self.seconds:.1f} s and was killed"
        elif self.exit_code == 127 and self.last_line.startswith("cannot run"):
            why = self.last_line
        else:
            why = f"failed (exit {self.exit_code}): {self.last_line or 'no output'}"
        return f"{who}{self.phase} {self.stage} hook [{self.command}] {why}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "stage": self.stage,
            "vm": self.vm,
            "argv": [redact_text(a) for a in self.argv],
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
            "output": self.output,
        }


@dataclass(frozen=True)
class HookReport:
    """Every command run for one stage, and the warnings (failed ``post`` commands)."""

    outcomes: tuple[HookOutcome, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"outcomes": [o.to_dict() for o in self.outcomes], "warnings": list(self.warnings)}


def commands_for(hooks: Any, phase: Phase) -> HookCommands | None:
    """The :class:`HookCommands` for ``phase`` of a plan's ``Hooks`` object (``None`` when unset)."""
    if hooks is None:
        return None
    value: HookCommands | None = getattr(hooks, phase, None)
    return value


def run_hooks(
    commands: HookCommands | None,
    stage: Stage,
    ctx: HookContext,
    reporter: Reporter,
) -> HookReport:
    """Run ``commands.pre`` or ``commands.post`` in order; see the module contract.

    Raises :class:`HookError` when a ``pre`` command fails.  Returns the
    report (empty when there is nothing to run).
    """
    if commands is None:
        return HookReport()
    argvs = commands.pre if stage == "pre" else commands.post
    if not argvs:
        return HookReport()
    env = ctx.environment(stage)
    cwd = ctx.cwd if ctx.cwd and Path(ctx.cwd).is_dir() else None
    outcomes: list[HookOutcome] = []
    warnings: list[str] = []
    for argv in argvs:
        argv_t = tuple(str(a) for a in argv)
        if not argv_t or not argv_t[0]:
            raise UsageError(f"{ctx.phase} {stage} hook has an empty command; expected an argv list")
        reporter.event("hook_started", phase=ctx.phase, stage=stage, vm=ctx.vm, command=redact_text(shlex.join(argv_t)))
        started = time.monotonic()
        done = procs.run(argv_t, name="hook", timeout=commands.timeout, env=env, cwd=cwd, grace=2.0,
                         merge_stderr=False)
        output = done.output
        outcome = HookOutcome(
            ctx.phase, stage, ctx.vm, argv_t, done.exit_code, done.timed_out,
            time.monotonic() - started, output, done.last_line(),
        )  # fmt: skip
        outcomes.append(outcome)
        reporter.event("hook_finished", **outcome.to_dict())
        if outcome.ok:
            if output.strip():
                reporter.log("info", f"{ctx.phase} {stage} hook output", vm=ctx.vm, output=output)
            continue
        message = outcome.describe_failure()
        if stage == "pre":
            reporter.log("error", message, vm=ctx.vm, output=output)
            raise HookError(message, hint="fix the hook or the condition it checks, then run the command again")
        reporter.log("warning", message, vm=ctx.vm, output=output)
        warnings.append(message)
    return HookReport(tuple(outcomes), tuple(warnings))
