"""Issue 16 §5: the tour's lab: ``--port``, ``--print-env``, and a clear error without SCMT_FAKE_VCENTER_RPC."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB = str(ROOT / "examples" / "lab.yaml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCMT_", "GOVC_"))}
    return {**env, **extra}


def _stop(pid: int) -> None:
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)


@pytest.fixture
def lab_process(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``python -m scmt_cli.lab`` in the foreground on a chosen port; its JSON line."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "scmt_cli.lab", "--lab", LAB, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["url"] == f"https://127.0.0.1:{port}/sdk" and info["pid"] == proc.pid
        yield info
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_print_env_starts_the_lab_in_the_background_and_prints_exports(tmp_path: Path) -> None:
    port = _free_port()
    res = subprocess.run([sys.executable, "-m", "scmt_cli.lab", "--lab", LAB, "--port", str(port), "--print-env"],
                         capture_output=True, text=True, env=_env(), timeout=60)
    assert res.returncode == 0, res.stderr
    exports = dict(re.findall(r"^export (\w+)=(.*)$", res.stdout, re.M))
    pid = int(exports["SCMT_LAB_PID"])
    try:
        assert exports["SCMT_FAKE_VCENTER_RPC"] == f"https://127.0.0.1:{port}/sdk/rpc"
        assert exports["SCMT_VCENTER_PASSWORD"] == "lab-password"
        cert = shlex.split(exports["GOVC_TLS_CA_CERTS"])[0]
        assert Path(cert).is_file()
        # the exports are all a shell needs: assess the lab through a live-vCenter URL, TLS verified by the CA
        env = _env(**{k: shlex.split(v)[0] for k, v in exports.items()})
        out = subprocess.run([sys.executable, "-m", "scmt_cli", "--json", "assess", "--no-network", "--vcenter",
                              f"https://127.0.0.1:{port}/sdk", "--vcenter-user", "administrator@vsphere.local"],
                             capture_output=True, text=True, env=env, timeout=120)
        doc = json.loads(out.stdout)
        assert out.returncode == doc["exit_code"] == 20 and len(doc["vms"]) == 7, out.stderr
        # a second lab on the same port says why it cannot start
        again = subprocess.run([sys.executable, "-m", "scmt_cli.lab", "--lab", LAB, "--port", str(port),
                                "--print-env"], capture_output=True, text=True, env=_env(), timeout=60)
        assert again.returncode == 5 and f"cannot listen on 127.0.0.1:{port}" in again.stderr
        assert again.stdout == ""
    finally:
        _stop(pid)


def test_without_the_rpc_variable_the_error_says_why(lab_process: dict[str, str], tmp_path: Path) -> None:
    url = lab_process["url"]
    env = _env(SCMT_VCENTER_PASSWORD="lab-password", SCMT_STATE=str(tmp_path / "s.db"))
    cmd = [sys.executable, "-m", "scmt_cli", "--json", "assess", "--no-network", "--vcenter", url,
           "--vcenter-user", "administrator@vsphere.local", "--vcenter-thumbprint", lab_process["thumbprint"]]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    doc = json.loads(res.stdout)
    assert res.returncode == doc["exit_code"] == 5 and doc["error"] == "config"
    assert "fake vCenter" in doc["message"] and "SCMT_FAKE_VCENTER_RPC is not set" in doc["message"]
    assert f"export SCMT_FAKE_VCENTER_RPC={lab_process['rpc']}" in doc["hint"] and "--print-env" in doc["hint"]
    assert "not a VIM server" not in res.stdout + res.stderr
    # with the variable the same command works
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env={**env, "SCMT_FAKE_VCENTER_RPC": lab_process["rpc"]})
    assert res.returncode == 20, res.stderr


def test_the_lab_always_stops_on_sigterm_even_when_signals_pile_up() -> None:
    """A SIGTERM handler that set an Event deadlocked when a signal landed inside that Event's own lock."""
    import signal as sig

    lab = Path(__file__).parents[2] / "examples" / "lab.yaml"
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-m", "scmt_cli.lab", "--lab", str(lab)], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout is not None and json.loads(proc.stdout.readline())["pid"] == proc.pid
            for _ in range(3):  # a supervisor that repeats its SIGTERM
                proc.send_signal(sig.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
