"""The per-VM migration state machine (pure: no I/O, no clock).

Every VM in a plan is in exactly one :data:`VmState`::

    planned --> seeding --> syncing --> cutting-over --> cut-over --> committed
                  ^  |        |  ^         |   |            |
                  |  v        v  |         v   v            v
                  +-- failed (resumable) <-+   rolled-back <+
    (planned, seeding, syncing, rolled-back) <--> blocked

* ``planned``: nothing copied yet.
* ``seeding``: the first full copy is running (or was interrupted; a rerun
  resumes from the engine's checkpoints).
* ``syncing``: the seed is complete; incremental syncs keep the target close
  to the source.  This is "ready for cutover".
* ``cutting-over``: failover is running; :data:`CUTOVER_STEPS` records how far
  it got so a killed failover resumes at the first step not done.
* ``cut-over``: the target runs (or was left off on purpose); the source is
  quiesced.  The business check happens now.
* ``committed``: ``finalize`` ran; terminal.
* ``rolled-back``: the target was stopped or isolated and the source restored.
  The target may have run and written to its disks, so the next ``sync``
  starts a new seed (``seeding``), which re-verifies every block.
* ``failed``: a step failed.  The state it failed in is kept separately
  (``failed_from``); re-running the same command resumes there, and a VM that
  failed during an incremental sync may still fail over (the final pass copies
  everything since the last complete sync).
* ``blocked``: assessment blocks the VM for its method (its error names the
  rule ids); the refused pass did nothing.  ``failed_from`` keeps the state it
  was in, and ``sync`` (or ``migrate``) resumes there once the cause is fixed;
  every other command refuses it.

The services persist a :class:`VmStatus` in the state store and call
:func:`plan_command` before acting and :func:`check_transition` before every
state change.  Both raise :class:`~scmt_cli.errors.InvalidStateError` (exit 42)
with a message naming the VM, its state and what the command needs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar, get_args

from scmt_cli.errors import InvalidStateError

VmState = Literal[
    "planned",
    "seeding",
    "syncing",
    "cutting-over",
    "cut-over",
    "committed",
    "rolled-back",
    "failed",
    "blocked",
]
ALL_STATES: tuple[VmState, ...] = get_args(VmState)

Command = Literal["sync", "failover", "rollback", "finalize", "migrate"]
ALL_COMMANDS: tuple[Command, ...] = get_args(Command)

CutoverStep = Literal["source-quiesced", "final-sync-done", "converted", "target-defined", "target-started"]
#: The sub-steps of ``cutting-over``, in the order they run.  A step that is
#: skipped on purpose (``converted`` under ``--direct``, ``target-started`` when
#: the target stays off) is still recorded as done.
CUTOVER_STEPS: tuple[CutoverStep, ...] = get_args(CutoverStep)

RollbackStep = Literal["target-stopped", "source-restored"]
ROLLBACK_STEPS: tuple[RollbackStep, ...] = get_args(RollbackStep)

#: Allowed state changes.  A state mapping to itself is an idempotent re-entry
#: (another incremental sync, a resumed seed or failover).
TRANSITIONS: Mapping[VmState, frozenset[VmState]] = {
    "planned": frozenset({"seeding", "failed", "blocked"}),
    "seeding": frozenset({"seeding", "syncing", "failed", "blocked"}),
    "syncing": frozenset({"syncing", "cutting-over", "failed", "blocked"}),
    "cutting-over": frozenset({"cutting-over", "cut-over", "rolled-back", "failed"}),
    "cut-over": frozenset({"committed", "rolled-back"}),
    "committed": frozenset(),
    "rolled-back": frozenset({"seeding", "failed", "blocked"}),
    "failed": frozenset({"seeding", "syncing", "cutting-over", "rolled-back", "failed", "blocked"}),
    "blocked": frozenset({"seeding", "syncing", "failed", "blocked"}),
}

#: Where a failed (or blocked) VM may go, by the state it was in (``failed_from``).
#: A resume goes back to that state; a failed cutover may also be rolled back, and a
#: VM that failed during an incremental sync may fail over.
RESUME_FROM_FAILED: Mapping[VmState, frozenset[VmState]] = {
    "planned": frozenset({"seeding"}),
    "seeding": frozenset({"seeding"}),
    "syncing": frozenset({"syncing", "cutting-over"}),
    "cutting-over": frozenset({"cutting-over", "rolled-back"}),
    "rolled-back": frozenset({"seeding"}),
}

#: The states that keep ``failed_from`` (where a resume goes back to).
SUSPENDED: frozenset[VmState] = frozenset({"failed", "blocked"})

#: Where assessment may block a VM: before its cutover began.  A VM whose cutover had begun (its source
#: may be quiesced) is ``failed`` instead, so failover can resume and rollback can restore the source.
BLOCKABLE: frozenset[VmState] = frozenset({"planned", "seeding", "syncing", "rolled-back"})


def _q(state: str) -> str:
    return f"'{state}'"


def _alternatives(states: Collection[str]) -> str:
    ordered = [s for s in ALL_STATES if s in states]
    if not ordered:
        return "no state (it is final)"
    if len(ordered) == 1:
        return _q(ordered[0])
    return ", ".join(_q(s) for s in ordered[:-1]) + " or " + _q(ordered[-1])


def is_state(value: str) -> bool:
    """True when ``value`` names a :data:`VmState`."""
    return value in ALL_STATES


def check_transition(
    current: VmState,
    target: VmState,
    *,
    vm: str = "VM",
    failed_from: VmState | None = None,
) -> None:
    """Raise :class:`InvalidStateError` unless ``current -> target`` is allowed.

    When ``current`` is ``failed``, ``failed_from`` (the state the VM failed
    in) narrows the allowed targets to :data:`RESUME_FROM_FAILED`; without it
    every target in :data:`TRANSITIONS` for ``failed`` is allowed.
    """
    if current not in TRANSITIONS or target not in TRANSITIONS:
        bad = current if current not in TRANSITIONS else target
        raise InvalidStateError(f"{vm}: unknown state {_q(bad)}; expected one of {_alternatives(ALL_STATES)}")
    allowed = TRANSITIONS[current]
    if current in SUSPENDED and failed_from is not None and target not in SUSPENDED:
        allowed = allowed & RESUME_FROM_FAILED.get(failed_from, frozenset())
    origin = failed_from if current in SUSPENDED else current
    if origin is not None and origin not in BLOCKABLE:
        allowed = allowed - {"blocked"}
    if target not in allowed:
        where = _q(current)
        if current in SUSPENDED and failed_from:
            where += f" ({current} while {_q(failed_from)})"
        raise InvalidStateError(f"{vm} is {where}; it cannot become {_q(target)} (from here: {_alternatives(allowed)})")


@dataclass(frozen=True)
class CommandRule:
    """Which states a command acts in.

    ``start``: state -> the state the command moves the VM into.  ``noop``:
    states in which the command has nothing to do and succeeds (idempotency).
    ``needs``: the words used in the refusal message.
    """

    start: Mapping[VmState, VmState]
    noop: frozenset[VmState]
    needs: str


COMMAND_RULES: Mapping[Command, CommandRule] = {
    "sync": CommandRule(
        start={"planned": "seeding", "seeding": "seeding", "syncing": "syncing", "rolled-back": "seeding"},
        noop=frozenset(),
        needs="'planned', 'seeding', 'syncing' or 'rolled-back'",
    ),
    "migrate": CommandRule(
        start={
            "planned": "seeding",
            "seeding": "seeding",
            "syncing": "syncing",
            "cutting-over": "cutting-over",
            "rolled-back": "seeding",
        },
        noop=frozenset({"cut-over", "committed"}),
        needs="'planned', 'seeding', 'syncing' or 'cutting-over'",
    ),
    "failover": CommandRule(
        start={"syncing": "cutting-over", "cutting-over": "cutting-over"},
        noop=frozenset({"cut-over"}),
        needs="'syncing'",
    ),
    "rollback": CommandRule(
        start={"cutting-over": "rolled-back", "cut-over": "rolled-back"},
        noop=frozenset({"rolled-back"}),
        needs="'cutting-over' or 'cut-over' (there is nothing to roll back)",
    ),
    "finalize": CommandRule(
        start={"cut-over": "committed"},
        noop=frozenset({"committed"}),
        needs="'cut-over'",
    ),
}


@dataclass(frozen=True)
class CommandDecision:
    """What a command should do with one VM.

    ``noop`` is true when the VM is already where the command would bring it;
    otherwise ``enter`` is the state to move into (possibly the current one,
    for a resume or another incremental sync).
    """

    command: Command
    current: VmState
    enter: VmState | None
    noop: bool
    resume: bool


def plan_command(
    command: Command,
    current: VmState,
    *,
    vm: str = "VM",
    failed_from: VmState | None = None,
) -> CommandDecision:
    """Decide what ``command`` does with a VM in ``current``, or refuse.

    A ``failed`` VM is handled as if it were still in ``failed_from`` (a
    resume), so ``sync`` resumes a failed seed and ``failover`` a failed
    cutover.  Raises :class:`InvalidStateError`, e.g. ``web01 is 'seeding';
    failover needs 'syncing'``.
    """
    if command not in COMMAND_RULES:
        raise InvalidStateError(f"unknown command {_q(command)}")
    rule = COMMAND_RULES[command]
    effective = current
    if current in SUSPENDED:
        if failed_from is None or failed_from in SUSPENDED:
            raise InvalidStateError(
                f"{vm} is {_q(current)} and the state it was in is unknown; {command} needs {rule.needs}"
            )
        effective = failed_from
    if current == "blocked" and command not in ("sync", "migrate"):
        raise InvalidStateError(f"{vm} is 'blocked' by assessment (while {_q(effective)}); {command} needs "
                                f"{rule.needs}", hint=f"fix what 'scmt assess PLAN' reports for {vm}, then sync it")
    if effective in rule.noop and current not in SUSPENDED:
        return CommandDecision(command, current, None, noop=True, resume=False)
    if effective not in rule.start:
        shown = f"{_q(current)} (while {_q(effective)})" if current in SUSPENDED else _q(current)
        raise InvalidStateError(f"{vm} is {shown}; {command} needs {rule.needs}")
    enter = rule.start[effective]
    check_transition(current, enter, vm=vm, failed_from=failed_from)
    resume = current in SUSPENDED or (enter == current and current in ("seeding", "cutting-over"))
    return CommandDecision(command, current, enter, noop=False, resume=resume)


def commands_allowed(state: VmState, *, failed_from: VmState | None = None) -> tuple[Command, ...]:
    """The commands that would act on (not merely accept) a VM in ``state``, for ``status`` hints."""
    out: list[Command] = []
    for command in ALL_COMMANDS:
        try:
            decision = plan_command(command, state, failed_from=failed_from)
        except InvalidStateError:
            continue
        if not decision.noop:
            out.append(command)
    return tuple(out)


def next_cutover_step(done: Collection[str], *, vm: str = "VM") -> CutoverStep | None:
    """The first cutover step not yet done, or ``None`` when all are done.

    ``done`` must be a prefix of :data:`CUTOVER_STEPS` (steps run in order);
    anything else means the record is corrupt and raises
    :class:`InvalidStateError`.
    """
    return _next_step(CUTOVER_STEPS, done, vm=vm, what="cutover")


def next_rollback_step(done: Collection[str], *, vm: str = "VM") -> RollbackStep | None:
    """The first rollback step not yet done (see :func:`next_cutover_step`)."""
    return _next_step(ROLLBACK_STEPS, done, vm=vm, what="rollback")


_S = TypeVar("_S", bound=str)


def _next_step(steps: tuple[_S, ...], done: Collection[str], *, vm: str, what: str) -> _S | None:
    unknown = sorted(set(done) - set(CUTOVER_STEPS) - set(ROLLBACK_STEPS))
    if unknown:
        raise InvalidStateError(f"{vm}: unknown {what} step(s) {', '.join(map(_q, unknown))} in the state record")
    done = [s for s in done if s in steps]
    for i, step in enumerate(steps):
        if step not in done:
            later = [s for s in steps[i + 1 :] if s in done]
            if later:
                raise InvalidStateError(
                    f"{vm}: {what} step {_q(later[0])} is recorded as done but {_q(step)} is not; "
                    "the state record is inconsistent"
                )
            return step
    return None


@dataclass(frozen=True)
class VmStatus:
    """One VM's persisted migration status (what the state store keeps).

    ``steps_done`` holds the sub-steps done in the current ``cutting-over`` or
    rollback; it is cleared on every change of state except to ``failed``
    (so a failed cutover resumes at the right step).
    """

    vm: str
    state: VmState = "planned"
    failed_from: VmState | None = None
    steps_done: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None

    def move(self, target: VmState, *, error: str | None = None) -> VmStatus:
        """Return the status after ``self.state -> target``; raise if not allowed."""
        check_transition(self.state, target, vm=self.vm, failed_from=self.failed_from)
        if target in SUSPENDED:
            origin = self.failed_from if self.state in SUSPENDED else self.state
            return VmStatus(self.vm, target, origin, self.steps_done, error)
        keep_steps = self.state in SUSPENDED and target == self.failed_from
        keep_steps = keep_steps or (target == self.state == "cutting-over")
        return VmStatus(self.vm, target, None, self.steps_done if keep_steps else (), None)

    def step_done(self, step: str) -> VmStatus:
        """Record one sub-step as done (idempotent)."""
        if step in self.steps_done:
            return self
        return VmStatus(self.vm, self.state, self.failed_from, (*self.steps_done, step), self.error)

    def to_dict(self) -> dict[str, object]:
        return {
            "vm": self.vm,
            "state": self.state,
            "failed_from": self.failed_from,
            "steps_done": list(self.steps_done),
            "error": self.error,
        }
