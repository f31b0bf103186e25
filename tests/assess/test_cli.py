"""``scmt assess`` and ``scmt plan estimate`` in-process: exit codes, JSON shape, formats, bad input."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from scmt_cli.cli.main import main

from .rvfixtures import TABS, tabs, write_csv_dir, write_xlsx

LAB = Path(__file__).resolve().parents[2] / "examples" / "lab.yaml"


def only(*names):
    data = tabs()
    for tname, (_, rows) in data.items():
        if tname in ("vHost", "vDatastore"):
            continue
        rows[:] = [r for r in rows if r[0] in names]
    return data


def run_json(capsys, args):
    rc = main(["--json", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_lab_json_shape_and_blocked_exit(capsys):
    rc, doc = run_json(capsys, ["assess", "--lab", str(LAB)])
    assert rc == 20
    assert doc["exit_code"] == 20
    names = {v["vm"] for v in doc["vms"]}
    assert {"win2019-app01", "centos7-legacy01"} <= names
    for v in doc["vms"]:
        assert v["verdict"] in ("ready", "warnings", "blocked")
        assert v["recommended_method"] in ("managed", "agentless", "agent", "hot-backup")
        for f in v["findings"]:
            assert set(f) >= {"id", "severity", "message", "remedy"}
    legacy = next(v for v in doc["vms"] if v["vm"] == "centos7-legacy01")
    assert legacy["verdict"] == "blocked"
    assert "disk.rdm.physical" in {f["id"] for f in legacy["findings"]}
    assert doc["summary"]["vms"] == len(doc["vms"])


def test_ready_estate_exits_0(tmp_path, capsys):
    rc, doc = run_json(capsys, ["assess", "-i", str(write_xlsx(tmp_path / "e.xlsx", only("web01")))])
    assert doc["vms"][0]["verdict"] == "ready", doc["vms"][0]["findings"]
    assert rc == 0


def test_warnings_exit_1(tmp_path, capsys):
    rc, doc = run_json(capsys, ["assess", "-i", str(write_xlsx(tmp_path / "e.xlsx", only("web01"))),
                                "--method", "agentless", "--vm", "web01", "--vm", "ghost"])
    assert rc == 1
    assert any("ghost" in s for s in doc["skipped"])


def test_blocked_still_prints_the_full_human_report(tmp_path, capsys):
    rc = main(["assess", "-i", str(write_xlsx(tmp_path / "e.xlsx", tabs())), "--details", "--method", "agentless"])
    out = capsys.readouterr().out
    assert rc == 20
    assert "db01" in out and "web01" in out
    assert "remedy:" in out and "snapshot.consolidation_needed" in out


def test_usb_tab_row_blocks_snapshot_methods(tmp_path, capsys):
    data = only("web01")
    data["vUSB"][1].append(["web01", "USB key", "True"])
    rc, doc = run_json(capsys, ["assess", "-i", str(write_xlsx(tmp_path / "e.xlsx", data)), "--method", "managed"])
    assert rc == 20
    assert [f["id"] for f in doc["vms"][0]["findings"] if f["severity"] == "blocker"] == ["device.usb"]


def test_csv_format(tmp_path, capsys):
    rc = main(["assess", "-i", str(write_csv_dir(tmp_path / "csv", tabs())), "--format", "csv", "--method", "managed"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 20
    assert lines[0].startswith("vm,os,verdict,method,recommended_method")
    assert {ln.split(",")[0] for ln in lines[1:]} == {"web01", "db01"}


def test_csv_details_one_row_per_finding(tmp_path, capsys):
    main(["assess", "-i", str(write_xlsx(tmp_path / "e.xlsx", tabs())), "--format", "csv", "--details"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("vm,verdict,method,severity,id")
    assert any(",disk.rdm.physical," in ln for ln in lines)


def test_corrupt_inventory_is_one_line_exit_3(tmp_path, capsys):
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"not a zip at all")
    assert main(["assess", "-i", str(bad)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "bad.xlsx" in err[0]
    assert "Traceback" not in "\n".join(err)


def test_lab_typo_is_exit_3(tmp_path, capsys):
    lab = tmp_path / "lab.yaml"
    lab.write_text(LAB.read_text().replace("esxi_version:", "esxi_versoin:", 1))
    assert main(["assess", "--lab", str(lab)]) == 3
    assert "lab.yaml" in capsys.readouterr().err


def test_nothing_to_assess_is_usage_error(capsys):
    assert main(["assess"]) == 2


def test_bad_method_is_usage_error(capsys):
    assert main(["assess", "--lab", str(LAB), "--method", "teleport"]) == 2


def test_unreachable_vcenter_is_exit_10_without_the_password(capsys, monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.delenv("SCMT_VCENTER_PASSWORD", raising=False)
    rc = main(["assess", "--vcenter", f"https://admin:Secret-Zq9@127.0.0.1:{port}/sdk"])
    err = capsys.readouterr().err
    assert rc == 10
    assert "Secret-Zq9" not in err
    assert f"127.0.0.1:{port}" in err


def test_vcenter_without_credentials_is_config_error(capsys, monkeypatch):
    for var in ("SCMT_VCENTER_PASSWORD", "GOVC_USERNAME", "GOVC_PASSWORD", "GOVC_URL"):
        monkeypatch.delenv(var, raising=False)
    assert main(["assess", "--vcenter", "https://127.0.0.1:1/sdk"]) == 5


@pytest.fixture
def listening():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


def test_preflight_closed_vcenter_port_exits_21(tmp_path, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    inv = write_xlsx(tmp_path / "e.xlsx", only("web01"))
    rc, doc = run_json(capsys, ["assess", "-i", str(inv), "--vcenter", f"https://127.0.0.1:{port}/sdk",
                                "--timeout", "2"])
    assert rc == 21
    results = doc["preflight"][0]["results"]
    assert {"host": "127.0.0.1", "port": port, "status": "closed"}.items() <= results[0].items()


def test_preflight_open_port_and_no_network(tmp_path, capsys, listening):
    inv = write_xlsx(tmp_path / "e.xlsx", only("web01"))
    rc, doc = run_json(capsys, ["assess", "-i", str(inv), "--vcenter", f"https://127.0.0.1:{listening}/sdk",
                                "--method", "managed"])
    assert doc["preflight"][0]["results"][0]["status"] == "open"
    assert doc["preflight"][0]["missing_roles"] == []  # esx1 came from the inventory
    rc, doc = run_json(capsys, ["assess", "-i", str(inv), "--vcenter", "https://127.0.0.1:1/sdk", "--no-network"])
    assert doc["preflight"] == []
    assert rc == 0


PLAN = """\
version: 1
name: wave-1
source:
  url: https://127.0.0.1:{port}/sdk
  username: svc@vsphere.local
  password_env: SCMT_VC_PW
  inventory: lab.yaml
target:
  type: dir
  path: out
defaults:
  method: agentless
  bandwidth: 300Mbit
  downtime_tolerance: 10m
groups:
  - name: redis
    vms: [redis-a, redis-b]
vms:
  - name: redis-a
  - name: redis-b
  - name: win2019-app01
"""


@pytest.fixture
def plan(tmp_path, listening):
    shutil.copy(LAB, tmp_path / "lab.yaml")
    p = tmp_path / "plan.yaml"
    p.write_text(PLAN.format(port=listening))
    return p


def test_assess_plan_uses_its_method_tolerance_and_groups(plan, capsys):
    rc, doc = run_json(capsys, ["assess", str(plan), "--no-network"])
    by = {v["vm"]: v for v in doc["vms"]}
    assert set(by) == {"redis-a", "redis-b", "win2019-app01"}
    assert by["redis-a"]["method"] == "agentless"
    assert by["redis-a"]["verdict"] == "blocked"  # shared disk under a snapshot method
    assert by["redis-a"]["recommended_method"] == "agent"
    assert by["redis-a"]["group"] == "redis"
    assert rc == 20


def test_estimate_plan_json(plan, capsys):
    rc, doc = run_json(capsys, ["plan", "estimate", str(plan)])
    assert rc == 0
    assert [v["vm"] for v in doc["vms"]] == ["redis-a", "redis-b", "win2019-app01"]
    for v in doc["vms"]:
        assert set(v) >= {"vm", "transfer_minutes", "switch_minutes", "downtime_minutes", "total_minutes", "inputs"}
        assert v["total_minutes"] == v["transfer_minutes"] + v["downtime_minutes"]
    win = doc["vms"][2]
    assert win["switch_minutes"] == 6  # the seed's lab: Windows agentless 5m07s
    assert [w["name"] for w in doc["waves"]] == ["redis", "(no group)"]
    assert doc["concurrency"] == 2


def test_estimate_plan_with_switch_override(plan, capsys):
    rc, doc = run_json(capsys, ["plan", "estimate", str(plan), "--switch", "5m", "--bandwidth", "1Gbit"])
    assert {v["switch_minutes"] for v in doc["vms"]} == {5}
    assert doc["vms"][0]["inputs"]["source_mbit_per_s"] == 1000


def test_fixture_tabs_cover_every_mapped_tab():
    from scmt_cli.inventory.columns import TABS as SPECS

    assert set(SPECS) == set(TABS)


AGENT_PLAN = """\
version: 1
name: agents
source:
  inventory: lab.yaml
target:
  type: dir
  path: out
defaults:
  method: agent
  bandwidth: 1Gbit
vms:
  - name: rhel8-db01
    agent:
      address: 127.0.0.1:{port}
      token_env: SCMT_AGENT_TOKEN
"""


def test_agent_plan_preflight_checks_the_agent_address(tmp_path, capsys, listening):
    shutil.copy(LAB, tmp_path / "lab.yaml")
    p = tmp_path / "plan.yaml"
    p.write_text(AGENT_PLAN.format(port=listening))
    rc, doc = run_json(capsys, ["assess", str(p)])
    (pre,) = doc["preflight"]
    assert pre["method"] == "agent"
    agent = [r for r in pre["results"] if r["role"] == "agent"]
    assert agent == [dict(agent[0], host="127.0.0.1", port=listening, status="open")]
    not_checked = {r["from"] for r in pre["results"] if r["status"] == "not_checked"}
    assert not_checked == {"source"}
    assert "target" in pre["missing_roles"]  # a dir target has no host to test
