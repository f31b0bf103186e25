"""Test failover on a point-in-time clone, with stand-ins for QEMU, qemu-img and virt-v2v (seconds, not minutes).

* a sync of the VM runs (and succeeds) while the test copy boots, and the clone keeps the point in time it
  was taken at while the synced disk moves on;
* a test failover killed during its conversion commit leaves nothing beside the real disks, so the next real
  failover converts the real disks (the converter runs) instead of "finishing" the test's conversion.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conversion import fakev2v
from tests.e2e.faultlab import RemoteLab, start_remote_lab
from tests.guest.conftest import need

VM = "web01"

#: qemu-system-x86_64 stand-in: prints the ready line once $GO_FILE exists (so the test decides when it boots)
FAKE_QEMU = r"""#!/bin/sh
echo $$ > "$FAKE_QEMU_PID"
for a in "$@"; do case "$a" in file:*) log="${a#file:}";; esac; done
printf 'Booting from Hard Disk...\n' >> "$log"
while [ ! -e "$GO_FILE" ]; do sleep 0.1; printf '.' >> "$log"; done
printf '\nSCMT-GUEST-READY cafe files=1\n' >> "$log"
"""

#: qemu-img stand-in: 'commit' hangs (so scmt can be killed in the middle of it), the rest is the real one
FAKE_QEMU_IMG = r"""#!/bin/sh
if [ "$1" = commit ]; then echo $$ >> "$FAKE_COMMIT_PIDS"; exec sleep 600; fi
exec "$REAL_QEMU_IMG" "$@"
"""


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wait(cond: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RemoteLab]:
    """The remote lab with web01 seeded; its disk starts with an MBR, so scmt sees an operating system."""
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


def _env(lab: RemoteLab, **extra: str) -> dict[str, str]:
    bindir = lab.root / "bin"
    fakev2v.install(bindir)
    env = fakev2v.env_with(bindir, lab.env, lab.root / "v2v.pids", "ok")
    env.update(extra)
    return env


def _start(lab: RemoteLab, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "scmt_cli", "--state", str(lab.state), *args]
    return lab.track(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      cwd=lab.root))


def _write_source(lab: RemoteLab, data: bytes) -> None:
    vc = lab.client()
    try:
        key = vc.inventory().vm(VM).disks[0].key
        assert vc.control("guest_write", VM, key, 8 << 20, data.hex())
    finally:
        vc.close()


def test_a_sync_runs_while_the_test_copy_boots_and_the_clone_keeps_its_point_in_time(lab: RemoteLab) -> None:
    _script(lab.root / "bin" / "qemu-system-x86_64", FAKE_QEMU)
    go = lab.root / "go"
    env = _env(lab, FAKE_QEMU_PID=str(lab.root / "qemu.pid"), GO_FILE=str(go))
    folder = lab.root / "lab" / "target" / VM
    synced = folder / "disk0.raw"
    at_clone = _sha(synced)
    p = _start(lab, env, "--json", "failover", str(lab.plan), "--vm", VM, "--test", "--accel", "tcg",
               "--timeout", "120s")
    _wait(lambda: (lab.root / "qemu.pid").exists(), "the test copy to boot")
    clone = folder / "test-failover" / "disk0.raw"
    assert _sha(clone) == at_clone

    # the VM's lock was released after the clone: a sync runs now, and succeeds
    _write_source(lab, b"written after the clone" * 1000)
    sync = lab.run("--json", "sync", str(lab.plan), "--vm", VM)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert json.loads(sync.stdout)["vms"][0]["kind"] == "incremental"
    assert p.poll() is None, "the test failover ended before its boot was released"
    assert _sha(synced) != at_clone  # the sync moved the synced disk on ...
    assert _sha(clone) == at_clone  # ... and the clone stayed at its point in time

    go.touch()
    out, err = p.communicate(timeout=120)
    assert p.returncode in (0, 1), err
    doc = json.loads(out)
    assert doc["boot"]["booted"] is True and doc["boot"]["ready_line"].startswith("SCMT-GUEST-READY cafe")
    assert doc["clone"]["method"] in ("reflink", "sparse copy")
    assert doc["clone"]["disks"] == [str(clone)]
    assert doc["conversion"]["ran"] is True  # the fake converter, on the clone
    # nothing of the test's conversion beside the real disks
    assert not [p.name for p in folder.iterdir() if p.name.startswith((".v2v-", "v2v-commit", "convert.xml"))]
    assert (folder / "test-failover" / "convert.log").read_text().count("Converting") == 1

    cleaned = lab.run("--json", "failover", str(lab.plan), "--vm", VM, "--test", "--cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert str(folder / "test-failover") in json.loads(cleaned.stdout)["removed"]
    assert not (folder / "test-failover").exists() and not (folder / "test-failover.json").exists()
    assert not (folder / "test-failover.lock").exists()


def test_a_second_test_or_a_cleanup_while_a_test_runs_is_refused(lab: RemoteLab) -> None:
    _script(lab.root / "bin" / "qemu-system-x86_64", FAKE_QEMU)
    go = lab.root / "go"
    env = _env(lab, FAKE_QEMU_PID=str(lab.root / "qemu.pid"), GO_FILE=str(go))
    p = _start(lab, env, "failover", str(lab.plan), "--vm", VM, "--test", "--direct", "--accel", "tcg")
    _wait(lambda: (lab.root / "qemu.pid").exists(), "the test copy to boot")
    for args in (("--test",), ("--test", "--cleanup")):
        r = lab.run("--json", "failover", str(lab.plan), "--vm", VM, *args)
        assert r.returncode == 40, r.stdout + r.stderr
        assert "a test failover of this VM is running" in json.loads(r.stdout)["message"]
    go.touch()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "web01: test copy booted in" in out and "guest says: SCMT-GUEST-READY cafe" in out
    assert "test copy: a sparse copy of the synced disks" in out or "test copy: a reflink" in out
    assert "--test --cleanup" in out


def test_an_interrupted_sync_leaves_no_point_in_time_to_test(lab: RemoteLab) -> None:
    from scmt_cli.state import StateStore

    with StateStore.open(lab.state) as store:
        store.begin_generation("demo", VM, "incremental", {})  # a pass that never finished (scmt was killed)
    r = lab.run("--json", "failover", str(lab.plan), "--vm", VM, "--test")
    assert r.returncode == 42, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert "did not finish" in doc["message"] and "scmt sync" in doc["hint"]
    assert not (lab.root / "lab" / "target" / VM / "test-failover").exists()


def test_a_test_failover_killed_during_its_conversion_commit_cannot_skip_the_real_conversion(
        lab: RemoteLab) -> None:
    need("qemu-img")
    real = shutil.which("qemu-img") or ""
    _script(lab.root / "fakeimg" / "qemu-img", FAKE_QEMU_IMG)
    commits = lab.root / "commit.pids"
    env = _env(lab, REAL_QEMU_IMG=real, FAKE_COMMIT_PIDS=str(commits))
    env["PATH"] = f"{lab.root / 'fakeimg'}{os.pathsep}{env['PATH']}"
    folder = lab.root / "lab" / "target" / VM
    p = _start(lab, env, "failover", str(lab.plan), "--vm", VM, "--test")
    try:
        _wait(commits.exists, "the test conversion's commit", timeout=120)
        p.send_signal(signal.SIGKILL)  # scmt dies in the middle of committing the converted overlay
        p.communicate(timeout=30)
    finally:
        for pid in (int(x) for x in commits.read_text().split()) if commits.exists() else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert (folder / "test-failover" / "v2v-commit.json").exists()  # the marker is in the test's own folder
    assert not (folder / "v2v-commit.json").exists() and not list(folder.glob(".v2v-*"))

    converters = len(fakev2v.pids(lab.root / "v2v.pids", 1))
    cleaned = lab.run("failover", str(lab.plan), "--vm", VM, "--test", "--cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    p = _start(lab, _env(lab), "--json", "failover", str(lab.plan), "--vm", VM)
    out, err = p.communicate(timeout=120)
    assert p.returncode in (0, 1), err
    conv = json.loads(out)["vms"][0]["conversion"]
    assert conv["ran"] is True and conv["steps"], conv  # the converter's own steps: it ran on the real disks
    assert not any("finished by an earlier run" in c for c in conv["changes"])
    assert len(fakev2v.pids(lab.root / "v2v.pids", converters + 1)) == converters + 1
