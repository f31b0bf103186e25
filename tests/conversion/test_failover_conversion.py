"""Guest conversion inside a real ``scmt failover`` subprocess, with a fake converter on PATH.

The lab VM gets an MBR written by its "guest" before the seed, so scmt sees an
operating system and runs the converter through the real code path.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.errors import LockedError
from scmt_cli.targets.disklock import DiskLock
from tests.conversion import fakev2v
from tests.e2e.faultlab import RemoteLab, start_remote_lab

VM = "web01"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RemoteLab]:
    lab = start_remote_lab(tmp_path)
    try:
        vc = lab.client()
        try:
            key = vc.inventory().vm(VM).disks[0].key
            assert vc.control("guest_write", VM, key, 0, bytes(fakev2v.MBR).hex())
        finally:
            vc.close()
        seed = lab.run("sync", str(lab.plan), "--vm", VM)
        assert seed.returncode == 0, seed.stderr
        yield lab
    finally:
        lab.stop()


def scmt(lab: RemoteLab, mode: str, *args: str, log_json: bool = False) -> subprocess.Popen[str]:
    bindir = lab.root / "bin"
    fakev2v.install(bindir)
    env = fakev2v.env_with(bindir, lab.env, lab.root / "v2v.pids", mode)
    out = ["--log-json"] if log_json else ["--quiet"]
    argv = [sys.executable, "-m", "scmt_cli", "--state", str(lab.state), *out, *args]
    return lab.track(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      cwd=lab.root))


def status_doc(lab: RemoteLab) -> dict:
    r = lab.run("--json", "status", str(lab.plan), "--vm", VM)
    return json.loads(r.stdout)["vms"][0]


def disk(lab: RemoteLab) -> Path:
    return lab.root / "lab" / "target" / VM / "disk0.raw"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_failover_stops_and_reaps_the_converter(lab: RemoteLab, sig: int, code: int) -> None:
    before = lab.target_digests(VM, 1)
    p = scmt(lab, "hang", "failover", str(lab.plan), "--vm", VM)
    leader, kid = fakev2v.pids(lab.root / "v2v.pids", 2)
    # while it runs: status shows the step, and the disk is locked against a second writer
    view = status_doc(lab)
    assert view["step"] == "converting" and view["step_seconds"] >= 0 and view["step_log"].endswith(".log")
    with pytest.raises(LockedError, match="scmt guest conversion of web01"):
        DiskLock(disk(lab), what="test").acquire()
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert not fakev2v.running(leader) and not fakev2v.running(kid)
    DiskLock(disk(lab), what="test").acquire().release()  # the lock went with them
    assert lab.target_digests(VM, 1) == before  # the converter only ever saw an overlay
    assert not list(disk(lab).parent.glob(".v2v-*"))
    assert status_doc(lab)["step"] is None


def test_a_converter_that_ignores_sigterm_is_killed_before_scmt_exits(lab: RemoteLab) -> None:
    p = scmt(lab, "ignore-term", "failover", str(lab.plan), "--vm", VM)
    (leader,) = fakev2v.pids(lab.root / "v2v.pids", 1)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode == 143
    assert not fakev2v.running(leader)


def test_a_silent_converter_is_stopped_as_stalled_and_the_source_rolled_back(lab: RemoteLab) -> None:
    before = lab.target_digests(VM, 1)
    p = scmt(lab, "silent", "--json", "failover", str(lab.plan), "--vm", VM, "--v2v-stall-timeout", "2s")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 52, err
    doc = json.loads(out)
    o = doc["vms"][0]
    assert o["error_code"] == 52
    assert "stalled: no output for 2 s" in o["error"]
    assert "[   0.0] Setting up the source" in o["error"]  # its last lines
    assert o["state"] == "rolled-back" and o["source_restored"] is True
    assert o["conversion"]["ok"] is False and o["conversion"]["why"] == "stall"
    assert all(not fakev2v.running(pid) for pid in fakev2v.pids(lab.root / "v2v.pids", 2))
    assert lab.target_digests(VM, 1) == before
    vc = lab.client()
    try:
        assert vc.power_state(VM) == "poweredOn"
        assert all(n.connected for n in vc.inventory().vm(VM).nics)  # network given back
    finally:
        vc.close()


def test_a_timed_out_conversion_with_keep_source_down_can_be_retried(lab: RemoteLab) -> None:
    p = scmt(lab, "hang", "--json", "failover", str(lab.plan), "--vm", VM, "--v2v-timeout", "2s",
             "--keep-source-down")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 52, err
    o = json.loads(out)["vms"][0]
    assert "timed out after 2 s" in o["error"]
    assert f"scmt failover {lab.plan} --vm {VM}" in o["error"] and "scmt rollback" in o["error"]
    assert o["state"] == "failed"
    vc = lab.client()
    try:
        assert not any(n.connected for n in vc.inventory().vm(VM).nics)  # still quiesced, as asked
    finally:
        vc.close()
    # the retry resumes at the conversion and reports what the converter did
    p = scmt(lab, "ok", "--json", "failover", str(lab.plan), "--vm", VM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, err  # the converter's warning
    o = json.loads(out)["vms"][0]
    conv = o["conversion"]
    assert o["state"] == "cut-over" and conv["ok"] and conv["ran"]
    assert conv["guest"] == "Debian GNU/Linux 12 (bookworm)"
    assert conv["virtio_drivers"] is True
    assert any("Grub2" in w for w in conv["warnings"]) and any("Grub2" in w for w in o["warnings"])
    assert Path(conv["log"]).is_file() and "Finishing off" in Path(conv["log"]).read_text()
    assert conv["seconds"] >= 0 and conv["steps"][-1] == "Finishing off"


def test_log_json_reports_the_start_with_its_log_and_the_converter_lines(lab: RemoteLab) -> None:
    p = scmt(lab, "ok", "failover", str(lab.plan), "--vm", VM, log_json=True)
    _, err = p.communicate(timeout=120)
    assert p.returncode in (0, 1), err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    started = [e for e in events if e.get("kind") == "guest_conversion_started"]
    assert started and started[0]["log"].endswith(".log") and started[0]["stall_timeout_s"] == 600
    lines = [e["line"] for e in events if e.get("kind") == "guest_conversion_output"]
    assert "[  10.0] Finishing off" in lines
    assert any(e.get("kind") == "guest_conversion_done" for e in events)
