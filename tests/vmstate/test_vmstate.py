"""The per-VM state machine: transitions, command rules, cutover sub-steps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scmt_cli.domain import vmstate
from scmt_cli.domain.vmstate import (
    ALL_COMMANDS,
    ALL_STATES,
    CUTOVER_STEPS,
    TRANSITIONS,
    VmStatus,
    check_transition,
    commands_allowed,
    next_cutover_step,
    next_rollback_step,
    plan_command,
)
from scmt_cli.errors import InvalidStateError

HAPPY_PATH = ["planned", "seeding", "syncing", "syncing", "cutting-over", "cut-over", "committed"]


def test_happy_path_is_allowed() -> None:
    for a, b in zip(HAPPY_PATH, HAPPY_PATH[1:], strict=False):
        check_transition(a, b)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("planned", "syncing"),
        ("planned", "cutting-over"),
        ("seeding", "cutting-over"),
        ("syncing", "cut-over"),
        ("cut-over", "syncing"),
        ("committed", "rolled-back"),
        ("committed", "failed"),
        ("rolled-back", "cut-over"),
    ],
)
def test_forbidden_transitions_raise_exit_42(current: str, target: str) -> None:
    with pytest.raises(InvalidStateError) as exc:
        check_transition(current, target, vm="web01")  # type: ignore[arg-type]
    assert exc.value.exit_code == 42
    assert f"web01 is '{current}'" in exc.value.message
    assert f"'{target}'" in exc.value.message


def test_unknown_state_is_refused() -> None:
    with pytest.raises(InvalidStateError, match="unknown state 'flying'"):
        check_transition("planned", "flying")  # type: ignore[arg-type]


def test_committed_is_final() -> None:
    assert TRANSITIONS["committed"] == frozenset()
    with pytest.raises(InvalidStateError, match="it is final"):
        check_transition("committed", "planned")


def test_failed_resumes_only_where_it_failed() -> None:
    check_transition("failed", "seeding", failed_from="seeding")
    with pytest.raises(InvalidStateError, match="failed while 'seeding'"):
        check_transition("failed", "cutting-over", failed_from="seeding")
    check_transition("failed", "rolled-back", failed_from="cutting-over")
    check_transition("failed", "cutting-over", failed_from="cutting-over")


def test_failover_message_names_vm_state_and_need() -> None:
    with pytest.raises(InvalidStateError) as exc:
        plan_command("failover", "seeding", vm="web01")
    assert exc.value.message == "web01 is 'seeding'; failover needs 'syncing'"


def test_rollback_with_nothing_to_roll_back() -> None:
    with pytest.raises(InvalidStateError, match="nothing to roll back"):
        plan_command("rollback", "syncing", vm="db01")


@pytest.mark.parametrize(
    ("command", "current", "enter", "noop"),
    [
        ("sync", "planned", "seeding", False),
        ("sync", "syncing", "syncing", False),
        ("sync", "rolled-back", "seeding", False),
        ("failover", "syncing", "cutting-over", False),
        ("failover", "cutting-over", "cutting-over", False),
        ("failover", "cut-over", None, True),
        ("rollback", "cut-over", "rolled-back", False),
        ("rollback", "rolled-back", None, True),
        ("finalize", "cut-over", "committed", False),
        ("finalize", "committed", None, True),
        ("migrate", "planned", "seeding", False),
        ("migrate", "cut-over", None, True),
    ],
)
def test_command_decisions(command: str, current: str, enter: str | None, noop: bool) -> None:
    d = plan_command(command, current, vm="x")  # type: ignore[arg-type]
    assert d.enter == enter
    assert d.noop is noop


def test_failed_vm_is_resumed_by_the_command_that_failed() -> None:
    d = plan_command("failover", "failed", failed_from="cutting-over", vm="web01")
    assert d.enter == "cutting-over"
    assert d.resume
    d = plan_command("sync", "failed", failed_from="seeding")
    assert d.enter == "seeding"
    assert d.resume
    with pytest.raises(InvalidStateError, match=r"'failed' \(while 'seeding'\); failover needs"):
        plan_command("failover", "failed", failed_from="seeding", vm="web01")
    with pytest.raises(InvalidStateError, match="state it was in is unknown"):
        plan_command("sync", "failed")


def test_unknown_command() -> None:
    with pytest.raises(InvalidStateError, match="unknown command"):
        plan_command("teleport", "planned")  # type: ignore[arg-type]


def test_every_command_start_is_a_legal_transition() -> None:
    for command, rule in vmstate.COMMAND_RULES.items():
        assert command in ALL_COMMANDS
        for src, dst in rule.start.items():
            check_transition(src, dst)
        assert not (set(rule.noop) & set(rule.start))


def test_cutover_steps_resume_in_order() -> None:
    assert next_cutover_step([]) == "source-quiesced"
    assert next_cutover_step(["source-quiesced", "final-sync-done"]) == "converted"
    assert next_cutover_step(list(CUTOVER_STEPS)) is None
    # rollback steps recorded next to cutover steps are ignored by the other family
    assert next_rollback_step(["source-quiesced", "target-stopped"]) == "source-restored"
    assert next_cutover_step(["source-quiesced", "target-stopped"]) == "final-sync-done"


def test_cutover_steps_out_of_order_or_unknown_are_refused() -> None:
    with pytest.raises(InvalidStateError, match="'converted' is recorded as done but 'final-sync-done' is not"):
        next_cutover_step(["source-quiesced", "converted"], vm="web01")
    with pytest.raises(InvalidStateError, match="unknown cutover step"):
        next_cutover_step(["teleported"])


def test_status_keeps_steps_through_failure_and_resume() -> None:
    s = VmStatus("web01").move("seeding").move("syncing").move("cutting-over")
    s = s.step_done("source-quiesced").step_done("final-sync-done").step_done("final-sync-done")
    assert s.steps_done == ("source-quiesced", "final-sync-done")
    failed = s.move("failed", error="boom")
    assert failed.failed_from == "cutting-over"
    assert failed.error == "boom"
    resumed = failed.move("cutting-over")
    assert resumed.steps_done == ("source-quiesced", "final-sync-done")
    assert next_cutover_step(resumed.steps_done) == "converted"
    done = resumed.move("cut-over")
    assert done.steps_done == ()
    assert done.to_dict()["state"] == "cut-over"


def test_failing_twice_keeps_the_original_origin() -> None:
    s = VmStatus("a", "seeding").move("failed").move("failed")
    assert s.failed_from == "seeding"
    with pytest.raises(InvalidStateError):
        s.move("syncing")


def test_rollback_of_failed_cutover_clears_steps() -> None:
    s = VmStatus("a", "cutting-over", steps_done=("source-quiesced",)).move("failed").move("rolled-back")
    assert s.state == "rolled-back"
    assert s.steps_done == ()


states = st.sampled_from(ALL_STATES)


@settings(max_examples=300, deadline=None)
@given(st.lists(states, max_size=30))
def test_random_sequences_only_allowed_moves_succeed(seq: list[str]) -> None:
    """Walk a random sequence: each move succeeds iff the table (narrowed by failed_from) allows it."""
    status = VmStatus("vm")
    for target in seq:
        allowed = set(TRANSITIONS[status.state])
        if status.state in vmstate.SUSPENDED and status.failed_from is not None and target not in vmstate.SUSPENDED:
            allowed &= set(vmstate.RESUME_FROM_FAILED.get(status.failed_from, frozenset()))
        if target in allowed:
            new = status.move(target)  # type: ignore[arg-type]
            assert new.state == target
            if target in vmstate.SUSPENDED:
                assert new.failed_from is not None
                assert new.failed_from not in vmstate.SUSPENDED
            status = new
        else:
            with pytest.raises(InvalidStateError):
                status.move(target)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ALL_COMMANDS), states, st.one_of(st.none(), states))
def test_plan_command_never_crashes_and_agrees_with_transitions(command: str, current: str, origin: str | None) -> None:
    try:
        d = plan_command(command, current, failed_from=origin)  # type: ignore[arg-type]
    except InvalidStateError as exc:
        message = exc.message
        assert message  # noqa: PT017
        return
    if d.noop:
        assert d.enter is None
    else:
        assert d.enter is not None
        check_transition(current, d.enter, failed_from=origin)  # type: ignore[arg-type]


def test_reachability_every_state_reachable_from_planned() -> None:
    seen = {"planned"}
    frontier = ["planned"]
    while frontier:
        s = frontier.pop()
        for t in TRANSITIONS[s]:  # type: ignore[index]
            if t not in seen:
                seen.add(t)
                frontier.append(t)
    assert seen == set(ALL_STATES)


@pytest.mark.parametrize(
    ("state", "origin", "expected"),
    [
        ("planned", None, ("sync", "migrate")),
        ("syncing", None, ("sync", "failover", "migrate")),
        ("cut-over", None, ("rollback", "finalize")),
        ("committed", None, ()),
        ("failed", "cutting-over", ("failover", "rollback", "migrate")),
        ("failed", None, ()),
    ],
)
def test_commands_allowed(state: str, origin: str | None, expected: tuple[str, ...]) -> None:
    assert commands_allowed(state, failed_from=origin) == expected  # type: ignore[arg-type]


def test_a_blocked_vm_keeps_its_state_for_sync_and_is_refused_by_everything_else() -> None:
    blocked = VmStatus("web01", "syncing").move("blocked", error="web01: blocked by assessment: disk.rdm.physical")
    assert blocked.state == "blocked" and blocked.failed_from == "syncing"
    d = plan_command("sync", "blocked", failed_from="syncing", vm="web01")
    assert d.enter == "syncing" and d.resume
    assert plan_command("sync", "blocked", failed_from="planned").enter == "seeding"
    for command in ("failover", "rollback", "finalize"):
        with pytest.raises(InvalidStateError, match=r"'blocked' by assessment \(while 'syncing'\)") as info:
            plan_command(command, "blocked", failed_from="syncing", vm="web01")  # type: ignore[arg-type]
        assert "scmt assess PLAN" in (info.value.hint or "")
    assert commands_allowed("blocked", failed_from="syncing") == ("sync", "migrate")
    assert blocked.move("syncing").state == "syncing"


def test_a_vm_that_failed_during_an_incremental_sync_may_still_fail_over() -> None:
    """The final pass copies everything since the last complete sync: an outage mid-sync must not strand it."""
    d = plan_command("failover", "failed", failed_from="syncing", vm="web01")
    assert d.enter == "cutting-over"
    assert VmStatus("web01", "failed", "syncing").move("cutting-over").state == "cutting-over"
    with pytest.raises(InvalidStateError):  # a seed that never finished still cannot
        plan_command("failover", "failed", failed_from="seeding", vm="web01")


def test_a_vm_whose_cutover_began_is_never_blocked_so_failover_and_rollback_stay_open() -> None:
    """Assessment refusing a resumed failover (its source may be quiesced) must leave the VM 'failed' while
    'cutting-over', from where failover resumes and rollback restores the source; 'blocked' would leave only
    sync, which refuses a VM in cutover."""
    cutting = VmStatus("web01", "cutting-over", steps_done=("source-quiesced",))
    with pytest.raises(InvalidStateError):
        cutting.move("blocked")
    failed = cutting.move("failed", error="web01: final sync failed")
    with pytest.raises(InvalidStateError):
        failed.move("blocked")
    assert failed.failed_from == "cutting-over" and failed.move("rolled-back").state == "rolled-back"
    assert failed.move("cutting-over").steps_done == ("source-quiesced",)
    for before in ("planned", "seeding", "syncing", "rolled-back"):
        assert VmStatus("web01", before).move("blocked").failed_from == before  # type: ignore[arg-type]
