"""Issue 16 §4: ``plan validate --inventory`` reports the assessment's blockers for the plan's methods.

A plan whose VMs ``sync`` would refuse is not "valid" without a word: each blocked VM
is a warning naming its rule ids (exit 1), and ``--strict`` fails (exit 20).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scmt_cli.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
LAB = str(ROOT / "examples" / "lab.yaml")

PLAN = """\
version: 1
name: wave
source:
  url: https://vc.example.com/sdk
  username: administrator@vsphere.local
  password_env: SCMT_VCENTER_PASSWORD
target:
  type: dir
  path: kvm
defaults:
  method: {method}
vms:
{vms}
"""


def _plan(tmp_path: Path, method: str, *vms: str) -> Path:
    path = tmp_path / "wave.yaml"
    path.write_text(PLAN.format(method=method, vms="\n".join(f"  - name: {v}" for v in vms)))
    return path


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["--json", *argv])
    return code, json.loads(capsys.readouterr().out)


def test_blocked_vms_are_warnings_with_their_rule_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(tmp_path, "agentless", "centos7-legacy01", "win2012-report01", "ubuntu22-web01")
    code, doc = _json(capsys, "plan", "validate", str(plan), "--inventory", LAB)
    assert code == doc["exit_code"] == 1 and doc["valid"] is True
    blockers = {(b["vm"], b["rule"]) for b in doc["files"][0]["blockers"]}
    assert blockers == {("centos7-legacy01", "disk.rdm.physical"), ("win2012-report01", "device.usb")}
    assert any("centos7-legacy01 is blocked for method agentless by disk.rdm.physical" in w for w in doc["warnings"])
    located = [w for w in doc["files"][0]["warnings"] if w["path"] == "vms[1].name"]
    assert located and located[0]["line"] == 14 and "device.usb" in located[0]["message"]
    code = main(["plan", "validate", str(plan), "--inventory", LAB])
    out, err = capsys.readouterr()
    assert code == 1 and "valid with warnings" in out
    assert f"warning: {plan}:14:11: vms[1].name: win2012-report01 is blocked for method agentless by device.usb" in err


def test_strict_fails_a_plan_with_blocked_vms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(tmp_path, "agentless", "centos7-legacy01", "ubuntu22-web01")
    code, doc = _json(capsys, "plan", "validate", str(plan), "--inventory", LAB, "--strict")
    assert code == doc["exit_code"] == 20 and doc["error"] == "blocked"
    assert "centos7-legacy01" in doc["message"] and "disk.rdm.physical" in doc["problems"][0]["message"]
    assert doc["files"][0]["blockers"][0]["rule"] == "disk.rdm.physical"


def test_a_plan_whose_vms_are_not_blocked_stays_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(tmp_path, "agent", "rhel8-db01")
    plan.write_text(plan.read_text().replace("  - name: rhel8-db01",
                                             "  - name: rhel8-db01\n    agent: {address: 'db01:20000', "
                                             "token_env: SCMT_AGENT_TOKEN}"))
    code, doc = _json(capsys, "plan", "validate", str(plan), "--inventory", LAB, "--strict")
    assert code == 0 and doc["files"][0]["blockers"] == [] and doc["strict"] is True


def test_the_method_decides_what_blocks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A shared disk blocks the snapshot methods, not the agent: the plan's method is what is assessed."""
    plan = _plan(tmp_path, "agentless", "redis-a")
    code, doc = _json(capsys, "plan", "validate", str(plan), "--inventory", LAB)
    assert code == 1 and doc["files"][0]["blockers"][0]["rule"] == "disk.shared"
    assert "method agent is not blocked" in doc["warnings"][0]


def test_without_an_inventory_nothing_is_assessed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(tmp_path, "agentless", "centos7-legacy01")
    code, doc = _json(capsys, "plan", "validate", str(plan))
    assert code == 0 and doc["files"][0]["blockers"] == []


def test_enable_cbt_false_blocks_a_vm_whose_cbt_is_off_as_sync_would(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """ubuntu22-web01 has CBT off in the lab: sync may turn it on unless the plan says enable_cbt: false."""
    plan = _plan(tmp_path, "agentless", "ubuntu22-web01")
    code, doc = _json(capsys, "plan", "validate", str(plan), "--inventory", LAB, "--strict")
    assert code == 0 and doc["files"][0]["blockers"] == []
    plan.write_text(plan.read_text().replace("  password_env: SCMT_VCENTER_PASSWORD\n",
                                             "  password_env: SCMT_VCENTER_PASSWORD\n  enable_cbt: false\n"))
    code, doc = _json(capsys, "plan", "validate", str(plan), "--inventory", LAB, "--strict")
    assert code == 20 and doc["files"][0]["blockers"][0]["rule"] == "cbt.disabled"
