"""Every bad input gives one clear ``error:`` line and the documented exit code, never a traceback.

Each case runs through ``scmt_cli.cli.main.main`` in-process three times: human
output (one ``error:`` line, optional ``hint:``/problem lines, nothing on
stdout), ``--json`` (exactly one JSON document on stdout: the ``exit_error``
object) and ``--log-json`` (every stderr line a JSON object with a ``type``,
the last one the ``exit_error``).  No case needs a reachable vCenter: the
plan points at a closed port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path

import pytest

from scmt_cli.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
LAB = str(ROOT / "examples" / "lab.yaml")
THUMBPRINT = ":".join(["AB"] * 32)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a valid plan (unreachable vCenter), a plan for an unknown VM and a small disk image."""
    root = tmp_path_factory.mktemp("bad-input")
    body = f"""version: 1
name: badinput
source:
  url: https://127.0.0.1:{_closed_port()}/sdk
  username: administrator@vsphere.local
  password_env: SCMT_VCENTER_PASSWORD
  thumbprint: "{THUMBPRINT}"
target:
  type: dir
  path: {root / "kvm"}
  networks: {{"VM Network": default, App-VLAN20: vlan20, DMZ-VLAN99: dmz}}
defaults:
  method: agentless
vms:
  - name: ubuntu22-web01
  - name: win2019-app01
"""
    (root / "plan.yaml").write_text(body)
    (root / "unreadable.yaml").write_text(body)
    (root / "ghost.yaml").write_text(body.replace("- name: win2019-app01", "- name: ghost-vm"))
    with open(root / "disk.img", "wb") as fh:
        fh.truncate(2 * 1024 * 1024)
    os.mkfifo(root / "fifo")
    (root / "random.bin").write_bytes(bytes(random.Random(15).randrange(256) for _ in range(4096)))
    (root / "zero-password.yaml").write_text(body.replace("password_env: SCMT_VCENTER_PASSWORD",
                                                          "password_file: /dev/zero"))
    return root


# (id, argv with {d} for the area folder, expected exit code)
CASES: list[tuple[str, list[str], int]] = [
    ("usage-unknown-option", ["sync", "{d}/plan.yaml", "--bogus"], 2),
    ("usage-missing-argument", ["sync"], 2),
    ("plan-missing-file", ["sync", "{d}/nosuch.yaml"], 2),
    ("plan-missing-file-validate", ["plan", "validate", "{d}/nosuch.yaml"], 2),
    ("plan-is-a-directory", ["failover", "{d}"], 2),
    ("plan-is-a-directory-show", ["plan", "show", "{d}"], 2),
    ("plan-unreadable", ["plan", "validate", "{d}/unreadable.yaml"], 2),
    ("plan-unreadable-sync", ["sync", "{d}/unreadable.yaml"], 2),
    ("plan-unknown-vm", ["plan", "validate", "{d}/ghost.yaml", "--inventory", LAB], 2),
    ("vm-not-in-plan-sync", ["sync", "{d}/plan.yaml", "--vm", "nosuchvm"], 2),
    ("vm-not-in-plan-failover", ["failover", "{d}/plan.yaml", "--vm", "nosuchvm"], 2),
    ("vm-not-in-plan-status", ["status", "{d}/plan.yaml", "--vm", "nosuchvm"], 2),
    ("vm-not-in-plan-finalize", ["finalize", "{d}/plan.yaml", "--vm", "nosuchvm"], 2),
    ("vm-not-in-plan-migrate", ["migrate", "{d}/plan.yaml", "--vm", "nosuchvm"], 2),
    ("vm-not-in-plan-restore", ["agent", "restore", "{d}/plan.yaml", "--vm", "nosuchvm"], 2),
    ("group-unknown-failover", ["failover", "{d}/plan.yaml", "--group", "nosuchgroup"], 2),
    ("group-unknown-rollback", ["rollback", "{d}/plan.yaml", "--group", "nosuchgroup"], 2),
    ("at-unparseable", ["failover", "{d}/plan.yaml", "--at", "tonight"], 2),
    ("at-bad-clock", ["failover", "{d}/plan.yaml", "--at", "25:99"], 2),
    ("at-in-the-past", ["failover", "{d}/plan.yaml", "--at", "2020-01-01T22:00"], 2),
    ("source-action-unknown", ["failover", "{d}/plan.yaml", "--source-action", "reboot"], 2),
    ("target-state-unknown", ["failover", "{d}/plan.yaml", "--target-state", "maybe"], 2),
    ("every-zero", ["sync", "{d}/plan.yaml", "--every", "0"], 2),
    ("every-negative", ["sync", "{d}/plan.yaml", "--every", "-5m"], 2),
    ("every-garbage", ["sync", "{d}/plan.yaml", "--every", "often"], 2),
    ("until-garbage", ["sync", "{d}/plan.yaml", "--every", "30m", "--until", "dawn"], 2),
    ("until-in-the-past", ["sync", "{d}/plan.yaml", "--every", "30m", "--until", "2020-01-01T06:00"], 2),
    ("until-without-every", ["sync", "{d}/plan.yaml", "--until", "06:00"], 2),
    ("status-interval-zero", ["status", "{d}/plan.yaml", "--interval", "0"], 2),
    ("migrate-max-passes-zero", ["migrate", "{d}/plan.yaml", "--max-passes", "0"], 2),
    ("copy-bandwidth-negative", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--bandwidth", "-5"], 2),
    ("copy-bandwidth-garbage", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--bandwidth", "fast"], 2),
    ("copy-bandwidth-bad-unit", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--bandwidth", "5Mfoo"], 2),
    ("copy-chunk-negative", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--chunk-size", "-1"], 2),
    ("copy-chunk-zero", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--chunk-size", "0"], 2),
    ("copy-chunk-garbage", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--chunk-size", "big"], 2),
    ("copy-chunk-too-big", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--chunk-size", "1TiB"], 2),
    ("copy-in-flight-zero", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--in-flight", "0"], 2),
    ("copy-checkpoint-negative", ["copy", "file://{d}/disk.img", "file://{d}/out.img",
                                  "--checkpoint-seconds", "-1"], 2),
    ("copy-plain-path-missing", ["copy", "{d}/nosuch.img", "{d}/out.img"], 10),
    ("copy-target-dir-missing", ["copy", "file://{d}/disk.img", "{d}/nodir/out.img"], 35),
    ("copy-unknown-scheme", ["copy", "gopher://x/y", "file://{d}/out.img"], 2),
    ("copy-since-missing", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--since", "{d}/nosuch.json"], 2),
    ("copy-since-directory", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--since", "{d}"], 3),
    ("copy-since-not-json", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--since", "{d}/plan.yaml"], 3),
    ("estimate-data-negative", ["plan", "estimate", "--data", "-5GiB", "--bandwidth", "300Mbit"], 2),
    ("estimate-data-garbage", ["plan", "estimate", "--data", "lots", "--bandwidth", "300Mbit"], 2),
    ("estimate-bandwidth-negative", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "-3Mbit"], 2),
    ("estimate-target-bandwidth-garbage", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "300Mbit",
                                           "--target-bandwidth", "slow"], 2),
    ("estimate-compression-zero", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "300Mbit",
                                   "--compression", "0"], 2),
    ("estimate-compression-above-one", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "300Mbit",
                                        "--compression", "5"], 2),
    ("estimate-compression-garbage", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "300Mbit",
                                      "--compression", "half"], 2),
    ("estimate-redundancy-negative", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "300Mbit",
                                      "--redundancy", "-1"], 2),
    ("estimate-switch-garbage", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "300Mbit",
                                 "--switch", "soon"], 2),
    ("estimate-increment-negative", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "300Mbit",
                                     "--increment", "-5G"], 2),
    ("estimate-pre-switch-garbage", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "300Mbit",
                                     "--pre-switch", "xyz"], 2),
    ("estimate-concurrency-zero", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "300Mbit",
                                   "--concurrency", "0"], 2),
    ("estimate-sync-interval-garbage", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "300Mbit",
                                        "--sync-interval", "hourly"], 2),
    ("estimate-without-inputs", ["plan", "estimate"], 2),
    ("estimate-missing-plan", ["plan", "estimate", "{d}/nosuch.yaml"], 2),
    ("plan-init-exists", ["plan", "init", "{d}/plan.yaml"], 2),
    ("plan-init-no-directory", ["plan", "init", "{d}/no/such/dir/p.yaml"], 2),
    ("plan-init-method-unknown", ["plan", "init", "{d}/new.yaml", "--method", "teleport"], 2),
    ("assess-lab-missing", ["assess", "--lab", "{d}/nosuch.yaml"], 2),
    ("assess-inventory-missing", ["assess", "-i", "{d}/nosuch.xlsx"], 2),
    ("assess-downtime-garbage", ["assess", "--lab", LAB, "--downtime", "brief"], 2),
    ("assess-method-unknown", ["assess", "--lab", LAB, "--method", "teleport"], 2),
    ("assess-format-unknown", ["assess", "--lab", LAB, "--format", "xml"], 2),
    ("assess-timeout-negative", ["assess", "--lab", LAB, "--timeout", "-1"], 2),
    ("assess-vcenter-unreachable", ["assess", "--vcenter", "https://127.0.0.1:{port}/sdk",
                                    "--vcenter-user", "u"], 10),
    ("agent-listen-garbage", ["agent", "serve", "--disk", "sda={d}/disk.img", "--listen", "nowhere"], 2),
    ("agent-bandwidth-negative", ["agent", "serve", "--disk", "sda={d}/disk.img", "--bandwidth", "-1"], 2),
    ("agent-queue-depth-zero", ["agent", "serve", "--disk", "sda={d}/disk.img", "--queue-depth", "0"], 2),
    ("agent-token-file-missing", ["agent", "serve", "--disk", "sda={d}/disk.img",
                                  "--token-file", "{d}/nosuch.token"], 5),
    # hostile inputs (issue 15.5): unbounded or sizeless files, rates below the floor
    ("copy-source-char-device", ["copy", "file:///dev/zero", "file://{d}/out.img"], 2),
    ("copy-source-fifo", ["copy", "{d}/fifo", "{d}/out.img"], 2),
    ("copy-since-random-bytes", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--since", "{d}/random.bin"],
     3),
    ("copy-since-dev-zero", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--since", "/dev/zero"], 3),
    ("copy-since-fifo", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--since", "{d}/fifo"], 3),
    ("copy-bandwidth-1bit", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--bandwidth", "1bit"], 2),
    ("copy-bandwidth-400-digits", ["copy", "file://{d}/disk.img", "file://{d}/out.img", "--bandwidth", "9" * 400],
     2),
    ("copy-agent-token-dev-zero", ["copy", "agent://127.0.0.1:{port}/sda?token_file=/dev/zero&plaintext=1",
                                   "{d}/out.img"], 5),
    ("agent-bandwidth-1bit", ["agent", "serve", "--disk", "sda={d}/disk.img", "--bandwidth", "1bit"], 2),
    ("agent-token-file-fifo", ["agent", "serve", "--disk", "sda={d}/disk.img", "--token-file", "{d}/fifo",
                               "--allow-open-token-file"], 5),
    ("estimate-bandwidth-1bit", ["plan", "estimate", "--data", "5GiB", "--bandwidth", "1bit"], 2),
    ("assess-password-file-urandom", ["assess", "--vcenter", "https://127.0.0.1:{port}/sdk", "--vcenter-user", "u",
                                      "--vcenter-password-file", "/dev/urandom"], 5),
    ("plan-password-file-dev-zero", ["sync", "{d}/zero-password.yaml"], 2),
    ("state-is-a-directory", ["--state", "{d}", "status", "{d}/plan.yaml"], 41),
    ("demo-keep-not-empty", ["demo", "--keep", "{d}"], 2),
]


@pytest.fixture
def env(area: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state store per case, the vCenter password set, the 'unreadable' plan unreadable."""
    monkeypatch.setenv("SCMT_VCENTER_PASSWORD", "lab-password")
    monkeypatch.setenv("SCMT_STATE", str(tmp_path / "state.db"))
    monkeypatch.delenv("SCMT_AGENT_TOKEN", raising=False)
    monkeypatch.delenv("SCMT_FAKE_VCENTER_RPC", raising=False)
    unreadable = area / "unreadable.yaml"
    unreadable.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the open fail as it would for a user
        real_open = Path.open

        def guarded_open(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            if self.name == unreadable.name:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "open", guarded_open)
    yield area  # type: ignore[misc]
    unreadable.chmod(0o600)


def _argv(template: list[str], area: Path) -> list[str]:
    port = str(_closed_port())
    return [a.replace("{d}", str(area)).replace("{port}", port) for a in template]


@pytest.mark.parametrize(("argv", "code"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_error_line(env: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                        code: int) -> None:
    args = _argv(argv, env)
    got = main(args)
    out, err = capsys.readouterr()
    assert got == code, err
    assert "Traceback" not in out + err
    assert out == "", f"stdout must stay empty on error: {out!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    # After the error line only problem lines ("file...: ...") and one optional hint follow.
    after = lines[lines.index(errors[0]) + 1:]
    assert sum(1 for line in after if line.startswith("hint: ")) <= 1, err
    assert all(line.startswith("hint: ") or ": " in line for line in after), err


@pytest.mark.parametrize(("argv", "code"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_json_and_log_json(env: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                     code: int) -> None:
    args = _argv(argv, env)
    got = main(["--json", "--log-json", *args])
    out, err = capsys.readouterr()
    assert got == code
    doc = json.loads(out)  # exactly one document: json.loads refuses trailing data
    assert doc["type"] == "exit_error" and doc["code"] == code and doc["message"]
    records = [json.loads(line) for line in err.splitlines()]
    assert records and all(r.get("type") in {"log", "progress", "event", "exit_error"} for r in records), err
    assert records[-1]["type"] == "exit_error" and records[-1]["code"] == code
    assert sum(1 for r in records if r["type"] == "exit_error") == 1


def test_unreachable_vcenter_during_sync_is_a_per_vm_failure_with_exit_10(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Per-VM commands report a failed VM in their result (the table / the JSON ``vms[]``), exit 10."""
    args = _argv(["sync", "{d}/plan.yaml", "--vm", "ubuntu22-web01"], env)
    assert main(["--json", "--log-json", *args]) == 10
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["failed"] == ["ubuntu22-web01"] and doc["vms"][0]["error_code"] == 10
    assert "connection refused" in doc["vms"][0]["error"]
    assert all(json.loads(line)["type"] in {"log", "progress", "event", "exit_error"} for line in err.splitlines())
    assert main(args) == 10
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "failed" in out
