"""Hooks: argv without a shell, timeouts that kill the group, a small environment, pre stops / post warns."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from scmt_cli.domain.plan.model import HookPhase, Hooks
from scmt_cli.errors import HookError, UsageError
from scmt_cli.events import RecordingReporter
from scmt_cli.services.hooks import HookContext, commands_for, run_hooks

PY = sys.executable


@dataclass(frozen=True)
class Cmds:
    pre: tuple[tuple[str, ...], ...] = ()
    post: tuple[tuple[str, ...], ...] = ()
    timeout: float = 30.0


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


@pytest.fixture
def ctx(tmp_path: Path) -> HookContext:
    return HookContext(
        plan="nightly", phase="failover", vm="web01", method="agentless", group="web",
        target_dir=str(tmp_path / "targets" / "web01"), cwd=str(tmp_path),
    )  # fmt: skip


def test_environment_describes_the_vm_and_holds_no_credentials(
    tmp_path: Path, ctx: HookContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VCENTER_PASSWORD", "hunter2")
    monkeypatch.setenv("SOME_TOKEN", "t0ken")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    out = tmp_path / "env.json"
    dump = script(tmp_path, "dump.py", f"import json, os\njson.dump(dict(os.environ), open({str(out)!r}, 'w'))\n")
    rep = RecordingReporter()
    report = run_hooks(Cmds(pre=((PY, dump),)), "pre", ctx, rep)
    assert report.ok
    env = json.loads(out.read_text())
    assert env["SCMT_VM"] == "web01"
    assert env["SCMT_PLAN"] == "nightly"
    assert env["SCMT_PHASE"] == "failover"
    assert env["SCMT_STAGE"] == "pre"
    assert env["SCMT_STEP"] == "pre"
    assert env["SCMT_METHOD"] == "agentless"
    assert env["SCMT_GROUP"] == "web"
    assert env["SCMT_SCOPE"] == "vm"
    assert env["SCMT_TARGET_DIR"].endswith("targets/web01")
    assert env["LC_ALL"] == "C.UTF-8"
    assert "PATH" in env
    assert "VCENTER_PASSWORD" not in env
    assert "SOME_TOKEN" not in env
    assert "hunter2" not in json.dumps(env)


def test_plan_level_context_and_extra_variables(tmp_path: Path) -> None:
    ctx = HookContext(plan="p", phase="sync", vms=("a", "b"), step="incremental", extra={"SYNC_KIND": "incremental"})
    env = ctx.environment("post")
    assert env["SCMT_VM"] == ""
    assert env["SCMT_VMS"] == "a,b"
    assert env["SCMT_SCOPE"] == "plan"
    assert env["SCMT_STEP"] == "incremental"
    assert env["SCMT_STAGE"] == "post"
    assert env["SCMT_SYNC_KIND"] == "incremental"
    assert "SCMT_METHOD" not in env
    with pytest.raises(UsageError, match="looks like a credential"):
        HookContext(plan="p", phase="sync", extra={"VCENTER_PASSWORD": "x"}).environment("pre")
    with pytest.raises(UsageError, match="upper-case"):
        HookContext(plan="p", phase="sync", extra={"bad-key": "x"}).environment("pre")


def test_argv_is_not_interpreted_by_a_shell(tmp_path: Path, ctx: HookContext) -> None:
    out = tmp_path / "args.json"
    dump = script(tmp_path, "args.py", f"import json, sys\njson.dump(sys.argv[1:], open({str(out)!r}, 'w'))\n")
    weird = ["$HOME", "a b", "; rm -rf /", "`id`", "*"]
    run_hooks(Cmds(pre=((PY, dump, *weird),)), "pre", ctx, RecordingReporter())
    assert json.loads(out.read_text()) == weird


def test_runs_in_the_plan_directory_in_order(tmp_path: Path, ctx: HookContext) -> None:
    log = tmp_path / "order.log"
    s = script(
        tmp_path, "rec.py", f"import os, sys\nopen({str(log)!r}, 'a').write(sys.argv[1] + ' ' + os.getcwd() + '\\n')\n"
    )
    report = run_hooks(Cmds(post=((PY, s, "one"), (PY, s, "two"))), "post", ctx, RecordingReporter())
    assert [o.ok for o in report.outcomes] == [True, True]
    lines = log.read_text().splitlines()
    assert lines == [f"one {tmp_path}", f"two {tmp_path}"]


def test_failing_pre_hook_raises_exit_51_and_stops_later_pre_hooks(tmp_path: Path, ctx: HookContext) -> None:
    marker = tmp_path / "second-ran"
    fail = script(
        tmp_path,
        "fail.py",
        "import sys\nprint('checking app')\nprint('database still has clients', file=sys.stderr)\nsys.exit(3)\n",
    )
    second = script(tmp_path, "second.py", f"open({str(marker)!r}, 'w').write('x')\n")
    rep = RecordingReporter()
    with pytest.raises(HookError) as exc:
        run_hooks(Cmds(pre=((PY, fail), (PY, second))), "pre", ctx, rep)
    assert exc.value.exit_code == 51
    msg = exc.value.message
    assert msg.startswith("web01: failover pre hook [")
    assert "failed (exit 3): database still has clients" in msg
    assert not marker.exists()
    finished = [e for e in rep.of_type("event") if e["kind"] == "hook_finished"]
    assert len(finished) == 1
    assert finished[0]["exit_code"] == 3
    assert "checking app" in finished[0]["output"]
    assert [r["level"] for r in rep.of_type("log")] == ["error"]


def test_failing_post_hook_is_a_warning_and_later_post_hooks_run(tmp_path: Path, ctx: HookContext) -> None:
    marker = tmp_path / "second-ran"
    fail = script(tmp_path, "fail.py", "import sys\nsys.exit(2)\n")
    second = script(tmp_path, "second.py", f"open({str(marker)!r}, 'w').write('x')\n")
    rep = RecordingReporter()
    report = run_hooks(Cmds(post=((PY, fail), (PY, second))), "post", ctx, rep)
    assert not report.ok
    assert len(report.warnings) == 1
    assert "post hook" in report.warnings[0]
    assert "failed (exit 2): no output" in report.warnings[0]
    assert marker.exists()
    assert report.to_dict()["outcomes"][1]["ok"] is True


def test_timeout_kills_the_whole_process_group(tmp_path: Path, ctx: HookContext) -> None:
    pidfile = tmp_path / "child.pid"
    body = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    hang = script(tmp_path, "hang.py", body)
    started = time.monotonic()
    with pytest.raises(HookError, match="timed out after") as exc:
        run_hooks(Cmds(pre=((PY, hang),), timeout=1.0), "pre", ctx, RecordingReporter())
    assert time.monotonic() - started < 30
    assert "killed" in exc.value.message
    child = int(pidfile.read_text())
    for _ in range(50):  # the grandchild is reaped by init shortly after the kill
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the hook's child process survived the timeout")


def test_post_timeout_is_a_warning(tmp_path: Path, ctx: HookContext) -> None:
    hang = script(tmp_path, "hang.py", "import time\ntime.sleep(60)\n")
    report = run_hooks(Cmds(post=((PY, hang),), timeout=0.5), "post", ctx, RecordingReporter())
    assert report.outcomes[0].timed_out
    assert report.outcomes[0].exit_code is None
    assert "timed out" in report.warnings[0]


def test_missing_executable(tmp_path: Path, ctx: HookContext) -> None:
    with pytest.raises(HookError, match="cannot run /nonexistent/drain"):
        run_hooks(Cmds(pre=(("/nonexistent/drain", "--vm", "web01"),)), "pre", ctx, RecordingReporter())
    report = run_hooks(Cmds(post=(("/nonexistent/notify",),)), "post", ctx, RecordingReporter())
    assert "cannot run /nonexistent/notify" in report.warnings[0]


def test_output_is_truncated_and_redacted(tmp_path: Path, ctx: HookContext) -> None:
    noisy = script(
        tmp_path, "noisy.py",
        "print('x' * 100000)\nprint('connecting to https://admin:hunter2@vc.example.com/sdk password=hunter2')\n",
    )  # fmt: skip
    rep = RecordingReporter()
    report = run_hooks(Cmds(post=((PY, noisy),)), "post", ctx, rep)
    out = report.outcomes[0].output
    assert len(out) < 5000
    assert "bytes cut" in out
    assert "hunter2" not in out
    assert "admin:***@vc.example.com" in out
    assert all("hunter2" not in json.dumps(r.data) for r in rep.records)


def test_nothing_to_run() -> None:
    ctx = HookContext(plan="p", phase="sync")
    assert run_hooks(None, "pre", ctx, RecordingReporter()).outcomes == ()
    assert run_hooks(Cmds(), "post", ctx, RecordingReporter()).ok


def test_empty_argv_is_refused() -> None:
    with pytest.raises(UsageError, match="empty command"):
        run_hooks(Cmds(pre=((),)), "pre", HookContext(plan="p", phase="sync"), RecordingReporter())


def test_works_with_the_plan_model(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    s = script(tmp_path, "m.py", f"import os\nopen({str(marker)!r}, 'w').write(os.environ['SCMT_PHASE'])\n")
    hooks = Hooks(rollback=HookPhase(pre=((PY, s),), timeout=10.0))
    assert commands_for(hooks, "sync") is None
    cmds = commands_for(hooks, "rollback")
    report = run_hooks(cmds, "pre", HookContext(plan="p", phase="rollback", vm="db01"), RecordingReporter())
    assert report.ok
    assert marker.read_text() == "rollback"
