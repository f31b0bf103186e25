"""Issue 16 §8: long runs, previews and the whole estate, on the real CLI.

* ``sync --every`` prints each round as it ends (``--json``: one document per round, JSON lines, each
  valid against the sync schema), says the resolved ``--until`` time, and on SIGINT/SIGTERM prints a
  summary of the rounds done (exit 130/143);
* ``status`` without a plan shows every plan (with its file) and VM of the store; ``events`` reads
  the store's event log with filters; neither creates a store;
* ``--dry-run`` of sync, failover and migrate says each step and changes nothing: not the state store,
  not the source VM, not the target files;
* ``-q assess`` prints what went wrong (a blocked VM is an error line).
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.faultlab import RemoteLab, start_remote_lab

from scmt_cli.cli.main import main
from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.vcenter import start_estate, stop_estate

from .test_json_schemas import validate

ROOT = Path(__file__).resolve().parents[2]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    try:
        doc: Any = json.loads(out)
    except ValueError:
        doc = out
    return code, doc, err


# -- sync --every: a round at a time, and a summary when stopped ---------------------------------------


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[RemoteLab]:
    lab = start_remote_lab(tmp_path)
    try:
        yield lab
    finally:
        lab.stop()


class _Lines:
    """The lines of a running process's stream, read by a thread: ``next(timeout)`` never blocks for ever
    (a run that prints nothing until it ends must fail the test, not hang it)."""

    def __init__(self, stream: Any) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put("")

    def next(self, timeout: float = 60) -> str:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no line in {timeout:.0f} s")

    def rest(self) -> str:
        out = []
        while (line := self.next()) != "":
            out.append(line)
        return "".join(out)


def _every(lab: RemoteLab, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "scmt_cli", "--state", str(lab.state), *extra, "sync", str(lab.plan), "--vm",
            "redis-a", "--every", "1s"]
    return lab.track(subprocess.Popen(argv, env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))


@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGINT, 130, "interrupted (SIGINT)"),
                                                   (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_sync_every_json_prints_a_document_per_round_and_a_summary_when_stopped(
        remote: RemoteLab, sig: signal.Signals, code: int, said: str) -> None:
    proc = _every(remote, "--json")
    out = _Lines(proc.stdout)
    first = json.loads(out.next())  # while the run goes on: the first round, as it ended
    second = json.loads(out.next())
    assert proc.poll() is None, "the run ended by itself"
    proc.send_signal(sig)
    rest = out.rest()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    docs = [first, second, *(json.loads(line) for line in rest.splitlines())]
    for doc in docs:
        validate("sync", doc)
    rounds = [d for d in docs if "round" in d]
    assert [d["round"] for d in rounds] == list(range(1, len(rounds) + 1)) and len(rounds) >= 2
    assert [v["vm"] for v in first["vms"]] == ["redis-a"] and first["vms"][0]["kind"] == "seed"
    summary = docs[-1]
    assert "round" not in summary and summary["stopped"] == said and summary["exit_code"] == code
    assert summary["rounds"] == len(rounds) == len(summary["history"])
    assert [line for line in err.splitlines() if line.startswith("hint: ")]


def test_sync_every_human_prints_each_round_and_the_resolved_until(remote: RemoteLab) -> None:
    now = dt.datetime.now().astimezone()
    until = (now - dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    expected = until if until > now else until + dt.timedelta(days=1)  # 'HH:MM' is the next one: tomorrow
    proc = _every(remote, "--no-color")
    lines = _Lines(proc.stdout)
    head = [lines.next() for _ in range(3)]
    assert "sync of plan demo: round 1" in "".join(head), head
    proc.send_signal(signal.SIGINT)
    out = lines.rest()
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "round(s)" in out and "stopped: interrupted (SIGINT)" in out
    # --until: the resolved time is said as the run starts
    argv = [sys.executable, "-m", "scmt_cli", "--state", str(remote.state), "sync", str(remote.plan), "--vm",
            "redis-a", "--every", "1h", "--until", until.strftime("%H:%M")]
    proc = remote.track(subprocess.Popen(argv, env=remote.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True))
    err = _Lines(proc.stderr)
    line = err.next()
    while "sync rounds end at" not in line and line:
        line = err.next()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    day = "today" if expected.date() == now.date() else "tomorrow"
    assert f"sync rounds end at {expected.isoformat(timespec='seconds')} ({day} {expected:%H:%M}, in " in line


# -- the whole estate: status without a plan, events -----------------------------------------------------


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    estate = start_estate(demo_lab.write_lab(tmp_path / "lab"), tmp_path / "vcenter")
    try:
        plan = demo_lab.write_plan(tmp_path / "lab", url=estate.base_url + "/sdk",
                                   thumbprint=estate.http.thumbprint, user=estate.lab.user,
                                   vms=("db01", "web01", "redis-a", "redis-b"))
        plan.write_text(plan.read_text().replace("  - name: db01\n", "  - name: db01\n    method: managed\n"))
        yield plan
    finally:
        stop_estate(estate)


def test_status_without_a_plan_shows_every_plan_and_vm(lab: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "s.db"
    code, doc, _ = _run(capsys, "--state", str(state), "--json", "status")
    assert code == 0 and doc["plans"] == [] and not state.exists()  # no store: nothing created
    code, out, _ = _run(capsys, "--state", str(state), "status")
    assert code == 0 and "no plan in the state store" in out
    other = lab.with_name("other.yaml")
    other.write_text(lab.read_text().replace("name: demo", "name: other"))
    assert _run(capsys, "--state", str(state), "sync", str(lab), "--vm", "redis-a")[0] == 0
    assert _run(capsys, "--state", str(state), "status", str(other))[0] in (0, 1)
    assert _run(capsys, "--state", str(state), "sync", str(other), "--vm", "web01")[0] == 0
    other.unlink()
    code, doc, _ = _run(capsys, "--state", str(state), "--json", "status")
    validate("status overview", doc)
    assert code == 1  # a plan file is gone: a warning
    plans = {p["plan"]: p for p in doc["plans"]}
    assert plans["demo"]["file"] == str(lab) and plans["demo"]["file_state"] == "same"
    assert plans["other"]["file_state"] == "missing" and any("is gone" in w for w in doc["warnings"])
    states = {(p["plan"], v["vm"]): v["state"] for p in doc["plans"] for v in p["vms"]}
    assert states[("demo", "redis-a")] == "syncing" and states[("other", "web01")] == "syncing"
    assert states[("demo", "db01")] == "planned"
    demo = {v["vm"]: v for v in plans["demo"]["vms"]}
    assert demo["db01"]["next_commands"] == ["sync", "migrate"] and demo["redis-a"]["last_sync_at"]
    code, out, _ = _run(capsys, "--state", str(state), "status", "--vm", "redis-a")
    assert f"demo: {lab}" in out and "redis-a" in out and "web01" not in out


def test_events_reads_the_log_with_filters(lab: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "s.db"
    code, doc, _ = _run(capsys, "--state", str(state), "--json", "events")
    assert code == 0 and doc["events"] == [] and not state.exists()
    assert _run(capsys, "--state", str(state), "sync", str(lab), "--group", "redis")[0] == 0
    code, doc, _ = _run(capsys, "--state", str(state), "--json", "events", "--limit", "0")
    validate("events", doc)
    every = doc["events"]
    assert [e["id"] for e in every] == sorted(e["id"] for e in every) and not doc["truncated"]
    assert {"plan_recorded", "vm_state", "generation_started", "generation_finished"} <= {e["kind"] for e in every}
    code, doc, _ = _run(capsys, "--state", str(state), "--json", "events", "--vm", "redis-b", "--kind", "vm_state")
    assert [(e["vm"], e["data"]["to"]) for e in doc["events"]] == [("redis-b", "planned"), ("redis-b", "seeding"),
                                                                     ("redis-b", "syncing")]
    code, doc, _ = _run(capsys, "--state", str(state), "--json", "events", "--limit", "2")
    assert [e["id"] for e in doc["events"]] == [e["id"] for e in every[-2:]] and doc["truncated"]
    assert doc["matched"] == len(every)
    code, doc, _ = _run(capsys, "--state", str(state), "--json", "events", "--plan", "nosuch")
    assert doc["events"] == [] and doc["matched"] == 0
    code, doc, _ = _run(capsys, "--state", str(state), "--json", "events", "--since", "1h")
    assert len(doc["events"]) == len(every[-100:])
    time.sleep(1.1)
    code, doc, _ = _run(capsys, "--state", str(state), "--json", "events", "--since", "1s")
    assert code == 0 and doc["events"] == []
    later = (dt.datetime.now() + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    code, doc, _ = _run(capsys, "--state", str(state), "--json", "events", "--since", later)
    assert code == 2 and "in the future" in doc["message"]
    code, out, _ = _run(capsys, "--state", str(state), "events", "--vm", "redis-a", "--kind", "vm_state")
    assert "demo/redis-a  vm_state  from=seeding to=syncing" in out


# -- --dry-run changes nothing ---------------------------------------------------------------------------


def _store_dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def _source(lab: Path) -> Any:
    from scmt_cli.lab.vcenter import estate_for

    host, port = lab.read_text().split("url: https://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    estate = estate_for(host, int(port))
    assert estate is not None
    with estate.lock:
        return {name: (vm.power, [n.connected for n in vm.nics], [s.id for s in vm.snapshots], vm.cbt_config)
                for name, vm in estate.vms.items()}


def test_dry_run_previews_each_step_and_changes_nothing(lab: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "s.db"
    base = ["--state", str(state)]
    assert _run(capsys, *base, "sync", str(lab), "--group", "redis")[0] == 0  # the store exists; redis in sync
    target = lab.parent / "target"

    def snapshot() -> tuple[Any, ...]:
        return _store_dump(state), _files(target), _source(lab)

    before = snapshot()
    code, doc, err = _run(capsys, *base, "--json", "sync", str(lab), "--dry-run")
    validate("preview", doc)
    assert code == 0, err
    vms = {v["vm"]: v for v in doc["vms"]}
    assert [s["step"] for s in vms["web01"]["steps"]] == ["cbt", "snapshot", "seed", "snapshot"]
    assert "turn changed block tracking on" in vms["web01"]["steps"][0]["action"]
    assert vms["web01"]["bytes"] > 0 and vms["redis-a"]["steps"][1]["step"] == "incremental"
    code, doc, _ = _run(capsys, *base, "--json", "failover", str(lab), "--group", "redis", "--dry-run")
    validate("preview", doc)
    assert code == 0
    steps = [s["step"] for s in doc["vms"][0]["steps"]]
    assert steps[:5] == ["source-quiesced", "final-sync-done", "converted", "target-defined", "target-started"]
    actions = " ".join(s["action"] for s in doc["vms"][0]["steps"])
    assert "source action none" in actions and "guest conversion skipped" in actions and "start redis-a" in actions
    code, doc, _ = _run(capsys, *base, "--json", "failover", str(lab), "--vm", "web01", "--dry-run")
    assert code == 42 and doc["vms"][0]["proceeds"] is False and "failover needs 'syncing'" in doc["vms"][0]["reason"]
    code, doc, _ = _run(capsys, *base, "--json", "migrate", str(lab), "--vm", "db01", "--dry-run")
    validate("preview", doc)
    assert code == 0
    steps = [s["step"] for s in doc["vms"][0]["steps"]]
    assert steps[:3] == ["snapshot", "seed", "snapshot"] and "source-quiesced" in steps and "passes" in steps
    code, out, _ = _run(capsys, *base, "failover", str(lab), "--group", "redis", "--dry-run")
    assert "dry run: what it would do (nothing was changed)" in out and "1. source-quiesced" in out
    assert snapshot() == before
    code, doc, _ = _run(capsys, *base, "--json", "failover", str(lab), "--vm", "web01", "--test", "--dry-run")
    assert code == 2
    fresh = tmp_path / "new.db"  # a store that does not exist is not created by a preview
    code, doc, _ = _run(capsys, "--state", str(fresh), "--json", "sync", str(lab), "--dry-run")
    assert code == 0 and {v["state"] for v in doc["vms"]} == {"planned"} and not fresh.exists()
    assert snapshot() == before


# -- --quiet -----------------------------------------------------------------------------------------------


def test_quiet_assess_says_which_vms_are_blocked(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "-q", "assess", "--lab", str(ROOT / "examples" / "lab.yaml"), "--no-network")
    assert code == 20 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == ["error: centos7-legacy01: blocked for method managed by disk.rdm.physical",
                      "error: win2012-report01: blocked for method managed by device.usb"], err
    assert all(line.startswith(("warning: ", "error: ")) for line in err.splitlines())
