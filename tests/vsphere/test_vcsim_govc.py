"""Issue 13 §1: in a shell where govc works (GOVC_* set), ``scmt assess`` reads that vCenter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.vsphere.settings import ConnectionSettings

from . import vcsim as vcsim_mod

pytestmark = pytest.mark.vcsim
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim() -> Iterator[vcsim_mod.Vcsim]:
    try:
        s = vcsim_mod.start(vms=25)  # 4 hosts (one standalone, a cluster of 3), 50 VMs
    except vcsim_mod.VcsimUnavailable as exc:
        if os.environ.get("SCMT_REQUIRE_VCSIM"):
            raise
        pytest.skip(f"vcsim unavailable: {exc}")
    try:
        yield s
    finally:
        s.stop()


def _scmt(sim: vcsim_mod.Vcsim, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GOVC_", "SCMT_VCENTER"))}
    base.update({"GOVC_URL": sim.url, "GOVC_USERNAME": sim.user, "GOVC_PASSWORD": sim.password, **env})
    base["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + base.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "scmt_cli", *argv], env=base, capture_output=True, text=True,
                          timeout=120)


def _all_vm_names(sim: vcsim_mod.Vcsim) -> set[str]:
    from scmt_cli.vsphere.adapter import PyVmomiVCenter

    vc = PyVmomiVCenter(ConnectionSettings(host=sim.host, port=sim.port, user=sim.user, password=sim.password,
                                           thumbprint=sim.thumbprint))
    vc.connect()
    try:
        return {vm.name for vm in vc.inventory().vms}
    finally:
        vc.close()


def test_govc_variables_are_the_source_of_a_bare_assess(sim: vcsim_mod.Vcsim) -> None:
    proc = _scmt(sim, "--json", "assess", GOVC_INSECURE="1")
    doc = json.loads(proc.stdout)
    expected = _all_vm_names(sim)
    assert len(expected) >= 50
    assert {v["vm"] for v in doc["vms"]} == expected
    assert doc["source"] == f"vcenter:{sim.host}"
    assert proc.returncode == doc["exit_code"], proc.stderr
    assert sim.password not in proc.stdout + proc.stderr


def test_without_govc_insecure_a_self_signed_certificate_is_refused(sim: vcsim_mod.Vcsim) -> None:
    proc = _scmt(sim, "--json", "assess", "--no-network")
    assert proc.returncode == 12, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["error"] == "tls_verification"
    assert "GOVC_INSECURE" in doc["hint"]


def test_govc_datacenter_is_honoured(sim: vcsim_mod.Vcsim) -> None:
    proc = _scmt(sim, "--json", "assess", "--no-network", GOVC_INSECURE="1", GOVC_DATACENTER="DC0")
    assert len(json.loads(proc.stdout)["vms"]) == len(_all_vm_names(sim))
    proc = _scmt(sim, "--json", "assess", "--no-network", GOVC_INSECURE="1", GOVC_DATACENTER="DC9")
    assert proc.returncode == 5
    doc = json.loads(proc.stdout)
    assert "DC9" in doc["message"] and "DC0" in doc["hint"]


def test_govc_password_is_named_when_no_password_is_found(sim: vcsim_mod.Vcsim) -> None:
    proc = _scmt(sim, "--json", "assess", GOVC_INSECURE="1", GOVC_PASSWORD="")
    assert proc.returncode == 5
    assert "GOVC_PASSWORD" in json.loads(proc.stdout)["hint"]
