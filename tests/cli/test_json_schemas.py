"""Issue 16 §4: one JSON Schema per command's ``--json`` document, and real output validated against it.

Every command's document (and the error document) has a schema in the package
(``scmt_cli/cli/schemas``), printed by ``scmt schema COMMAND``; every document
carries ``schema_version``, ``exit_code`` and ``warnings``.  The scenario below
runs every command for real on the lab (in process) and validates what it printed.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from tests.guest.test_boot_runner import FAKE_QEMU

from scmt_cli.cli.contract import walk
from scmt_cli.cli.docschema import DOCUMENTS, document_schema, file_name
from scmt_cli.cli.main import main
from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.vcenter import start_estate, stop_estate

from .cliparse import root

ROOT = Path(__file__).resolve().parents[2]
LAB = str(ROOT / "examples" / "lab.yaml")
SCHEMAS = ROOT / "src" / "scmt_cli" / "cli" / "schemas"


def validate(name: str, doc: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(document_schema(name))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}" for e in errors[:5])


class Run:
    """Runs ``scmt --json ...`` in process and validates each document against its command's schema."""

    def __init__(self, capsys: pytest.CaptureFixture[str], state: Path) -> None:
        self.capsys = capsys
        self.state = state
        self.seen: set[str] = set()

    def __call__(self, document: str, *argv: str, code: int | tuple[int, ...] = (0, 1),
                 lines: bool = False) -> dict[str, Any]:
        """Run and validate; ``lines``: the output is JSON lines (sync --every), each line a document."""
        rc = main(["--json", "--state", str(self.state), *argv])
        out = self.capsys.readouterr().out
        docs = [json.loads(line) for line in out.splitlines()] if lines else [json.loads(out)]
        for doc in docs:
            name = "exit_error" if doc.get("type") == "exit_error" else document
            validate(name, doc)
            self.seen.add(name)
        doc = docs[-1]
        assert rc == doc.get("exit_code", rc), (argv, rc, doc)
        assert rc in ((code,) if isinstance(code, int) else code), (argv, rc, doc)
        return doc


# -- the schemas themselves -----------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCUMENTS)
def test_each_document_has_a_valid_stand_alone_schema(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    schema = document_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert (SCHEMAS / file_name(name)).is_file()
    assert "common.json" not in json.dumps(schema)  # every reference resolved inside the document
    assert main(["schema", *name.split()]) == 0
    assert json.loads(capsys.readouterr().out) == schema


def test_every_command_has_a_document() -> None:
    commands = {path for path, cmd in walk(root()) if not getattr(cmd, "commands", None)}
    assert commands <= set(DOCUMENTS), sorted(commands - set(DOCUMENTS))


def test_schema_lists_the_documents_and_refuses_an_unknown_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "schema"]) == 0
    doc = json.loads(capsys.readouterr().out)
    validate("schema", doc)
    assert [d["document"] for d in doc["documents"]] == list(DOCUMENTS)
    assert {d["document"] for d in doc["documents"] if d["schema_version"] is None} == {"plan schema", "schema"}
    assert main(["--json", "schema", "plan", "valdate"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert "did you mean 'plan validate'" in doc["message"]
    validate("exit_error", doc)


def test_a_document_that_grows_a_field_fails_its_schema() -> None:
    """The schemas are closed: a new field must be documented, so output and schema cannot drift."""
    doc = {"schema_version": 1, "version": "1", "python": "3", "platform": "x", "tools": {}, "warnings": [],
           "exit_code": 0}
    validate("version", doc)
    with pytest.raises(AssertionError):
        validate("version", {**doc, "surprise": True})
    with pytest.raises(AssertionError):
        validate("version", {k: v for k, v in doc.items() if k != "exit_code"})


# -- real documents -------------------------------------------------------------------------------


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    bin_dir = tmp_path / "bin"  # a stand-in qemu-system-x86_64 that prints the ready line (tests/guest)
    bin_dir.mkdir()
    exe = bin_dir / "qemu-system-x86_64"
    exe.write_text(FAKE_QEMU)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PID", str(tmp_path / "qemu.pid"))
    monkeypatch.setenv("SCRIPT_LINES", "Linux version 6.1\\nSCMT-GUEST-READY abc123 files=2\\n")
    monkeypatch.setenv("SCRIPT_END", "exit")
    estate = start_estate(demo_lab.write_lab(tmp_path / "lab"), tmp_path / "vcenter")
    try:
        plan = demo_lab.write_plan(tmp_path / "lab", url=estate.base_url + "/sdk",
                                   thumbprint=estate.http.thumbprint, user=estate.lab.user,
                                   vms=("db01", "web01", "redis-a", "redis-b"))
        # web01 is the managed VM that 'scmt migrate' migrates (it leaves the other methods alone)
        plan.write_text(plan.read_text().replace("  - name: web01\n", "  - name: web01\n    method: managed\n"))
        yield plan
    finally:
        stop_estate(estate)


def test_every_commands_real_output_matches_its_schema(lab: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = Run(capsys, tmp_path / "s.db")
    plan = str(lab)
    run("version", "version")
    run("help", "help")
    run("help", "help", "exit-codes")
    run("plan schema", "plan", "schema")
    run("plan init", "plan", "init", str(tmp_path / "new.yaml"), "--method", "agent")
    run("plan validate", "plan", "validate", plan)
    run("plan validate", "plan", "validate", plan, "--inventory", str(lab.parent / "lab.yaml"))
    run("plan show", "plan", "show", plan)
    run("plan estimate", "plan", "estimate", "--data", "500GiB", "--bandwidth", "300Mbit")
    run("plan estimate", "plan", "estimate", plan, "-i", str(lab.parent / "lab.yaml"), "--bandwidth", "1Gbit")
    run("assess", "assess", "--lab", LAB, code=20)
    run("assess", "assess", plan, "--details", code=(0, 1, 20, 21))
    run("status", "status", plan)
    run("sync", "sync", plan)
    run("sync", "sync", plan, "--vm", "db01", "--every", "1s", "--until-ready", lines=True)
    run("status", "status", plan)
    run("status overview", "status")
    run("events", "events", "--limit", "3")
    run("preview", "sync", plan, "--dry-run")
    run("preview", "failover", plan, "--group", "redis", "--dry-run")
    run("preview", "migrate", plan, "--vm", "web01", "--dry-run")
    run("preview", "migrate", plan, "--vm", "db01", "--dry-run", code=2)  # not managed: refused, as migrate does
    run("failover", "failover", plan, "--vm", "web01", "--test", "--direct")
    run("failover", "failover", plan, "--vm", "web01", "--test", "--cleanup")
    run("failover", "failover", plan, "--vm", "db01", "--direct")
    run("failover", "failover", plan, "--group", "redis", "--direct")
    run("boot", "boot", plan, "--vm", "db01", "--expect", "abc123")
    run("status", "status", plan)
    run("rollback", "rollback", plan, "--group", "redis")
    run("finalize", "finalize", plan, "--vm", "db01")
    run("migrate", "migrate", plan, "--vm", "db01", code=2)  # agentless: refused, an exit_error document
    run("migrate", "migrate", plan, "--vm", "web01", "--max-passes", "1")
    run("rollback", "rollback", plan, "--vm", "db01", code=42)  # committed: nothing to roll back, an error
    run("sync", "sync", plan, "--vm", "ghost", code=2)
    run("plan validate", "plan", "validate", str(tmp_path / "nosuch.yaml"), code=2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nvms: [{name: a, cpus: many}]\n")
    run("plan validate", "plan", "validate", str(bad), code=2)
    src = tmp_path / "src.img"
    with open(src, "wb") as fh:
        fh.write(b"scmt" * 300_000)
        fh.truncate(8 * 1024 * 1024)
    run("copy", "copy", str(src), str(tmp_path / "dst.img"), "--verify", "--manifest", str(tmp_path / "m.json"))
    run("copy", "copy", str(src), str(tmp_path / "dst.img"), "--since", str(tmp_path / "m.json"))
    for name in ("schema", "exit_error"):
        run.seen.add(name)  # test_schema_lists_the_documents_and_refuses_an_unknown_one
    missing = set(DOCUMENTS) - run.seen - {"agent serve", "agent restore", "demo"}  # below
    assert not missing, sorted(missing)


def test_agent_documents_match_their_schemas(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.agent.conftest import lab_plan
    from tests.agent.servers import TOKEN, running_agent, write_token

    from scmt_cli.events import RecordingReporter
    from scmt_cli.services.migration.context import open_context
    from scmt_cli.services.migration.sync import SyncRequest, run_sync
    from scmt_cli.state import StateStore

    disk = tmp_path / "sda.raw"
    with open(disk, "wb") as fh:
        fh.truncate(4 * 1024 * 1024)
        fh.write(b"first")
    # agent serve: its document comes when it stops
    token = write_token(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "scmt_cli", "--json", "--log-json", "agent", "serve",
                             "--listen", "127.0.0.1:0", "--token-file", str(token), "--disk", f"sda={disk}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SCMT_STATE": str(tmp_path / "agent.db")})
    try:
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            rec = json.loads(proc.stderr.readline() or "{}")
            if rec.get("kind") == "agent_tls":  # the last record before the agent serves (and handles SIGTERM)
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    doc = json.loads(out)
    assert doc.get("type") != "exit_error", doc
    validate("agent serve", doc)
    # agent restore: the restore points of a hot-backup VM
    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", TOKEN)
    estate = start_estate(demo_lab.write_lab(tmp_path / "lab"), tmp_path / "vcenter")
    try:
        with running_agent({"sda": disk}, tmp_path) as agent:
            plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "hot-backup"},
                            address=f"127.0.0.1:{agent.port}", fingerprint=agent.fingerprint)
            with StateStore.open(tmp_path / "state.db") as store:
                ctx = open_context(plan, store, RecordingReporter())
                try:
                    gen = run_sync(SyncRequest(plan), ctx).last["web01"].data["generation"]
                finally:
                    ctx.close()
        run = Run(capsys, tmp_path / "state.db")
        doc = run("agent restore", "agent", "restore", str(plan), "--vm", "web01")
        assert [p["generation"] for p in doc["restore_points"]] == [gen]
        doc = run("agent restore", "agent", "restore", str(plan), "--vm", "web01", "--generation", str(gen),
                  "--out", str(tmp_path / "pit"))
        assert doc["files"]
    finally:
        stop_estate(estate)


@pytest.mark.slow
def test_demo_document_matches_its_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = Run(capsys, tmp_path / "unused.db")
    doc = run("demo", "demo", "--keep", str(tmp_path / "demo"))
    assert doc["ok"] is True
