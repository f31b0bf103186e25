"""``scmt assess --vcenter`` against govmomi's vcsim (built from tests/vcsim/main.go)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from scmt_cli.cli.main import main

pytestmark = pytest.mark.vcsim
MAIN_GO = Path(__file__).resolve().parents[1] / "vcsim" / "main.go"


@pytest.fixture(scope="module")
def vcsim_binary(tmp_path_factory):
    given = os.environ.get("SCMT_VCSIM")
    if given:
        return given
    if shutil.which("go") is None or not Path("/usr/share/gocode/src/github.com/vmware/govmomi").is_dir():
        pytest.skip("needs golang-go and golang-github-vmware-govmomi-dev (or SCMT_VCSIM=/path/to/vcsim)")
    out = tmp_path_factory.mktemp("vcsim") / "vcsim"
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode")
    proc = subprocess.run(["go", "build", "-o", str(out), "."], cwd=MAIN_GO.parent, env=env,
                          capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        pytest.skip(f"vcsim did not build: {proc.stderr[-500:]}")
    return str(out)


@pytest.fixture
def vcsim(vcsim_binary):
    proc = subprocess.Popen([vcsim_binary, "-password", "pw"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_assess_live_vcsim_reports_every_vm(vcsim, capsys, monkeypatch):
    monkeypatch.setenv("SCMT_VCENTER_PASSWORD", "pw")
    rc = main(["--json", "assess", "--vcenter", vcsim["url"], "--vcenter-user", "scmt",
               "--vcenter-thumbprint", vcsim["thumbprint"], "--no-network"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["source"].startswith("vcenter:")
    assert len(doc["vms"]) == 4  # vcsim's VPX model: 2 VMs on the standalone host + 2 in the cluster
    assert all(v["verdict"] in ("ready", "warnings", "blocked") for v in doc["vms"])
    assert rc in (0, 1, 20)


def test_assess_live_vcsim_wrong_password(vcsim, capsys, monkeypatch):
    monkeypatch.setenv("SCMT_VCENTER_PASSWORD", "not-it-Zq9")
    rc = main(["assess", "--vcenter", vcsim["url"], "--vcenter-user", "scmt",
               "--vcenter-thumbprint", vcsim["thumbprint"], "--no-network"])
    assert rc == 11
    assert "not-it-Zq9" not in capsys.readouterr().err
