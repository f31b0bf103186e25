"""A vCenter outage is reported as the outage (exit 10) by every command, never as a state error."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.faultlab import start_remote_lab


def test_after_an_outage_mid_sync_failover_reports_the_outage_and_changes_nothing(tmp_path: Path) -> None:
    lab = start_remote_lab(tmp_path)
    try:
        assert lab.run("sync", str(lab.plan), "--vm", "web01").returncode in (0, 1)
        lab.stop()  # vCenter goes away
        down = lab.run("--json", "sync", str(lab.plan), "--vm", "web01")
        assert down.returncode == 10, down.stderr
        state = json.loads(lab.run("--json", "status", str(lab.plan), "--vm", "web01").stdout)["vms"][0]
        assert state["state"] == "failed" and state["failed_from"] == "syncing"
        fo = lab.run("--json", "failover", str(lab.plan), "--vm", "web01")
        assert fo.returncode == 10, fo.stderr  # the outage, not "failed while syncing" (42)
        doc = json.loads(fo.stdout)
        assert doc["vms"][0]["error_code"] == 10 and "connection refused" in doc["vms"][0]["error"]
        state = json.loads(lab.run("--json", "status", str(lab.plan), "--vm", "web01").stdout)["vms"][0]
        assert state["state"] == "failed" and state["failed_from"] == "syncing"  # nothing was done to it
    finally:
        lab.stop()
