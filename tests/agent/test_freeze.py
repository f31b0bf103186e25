"""The consistent final pass: freeze a mounted, busy file system, read the last delta, thaw - whatever happens."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.agent.freeze import ROOT_REASON
from scmt_cli.events import RecordingReporter
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.services.migration import agentsync
from scmt_cli.services.migration.context import open_context
from scmt_cli.services.migration.failover import FailoverRequest, run_failover
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from scmt_cli.state import StateStore
from tests.agent.conftest import lab_plan
from tests.agent.kernel import fsck_clean, loop_device, mounted
from tests.agent.servers import TOKEN, running_agent

MiB = 1024 * 1024
BLOCK = 4096


def payload(i: int) -> bytes:
    """Version ``i`` of a file: a header naming ``i``, then bytes derived from it (self-checking)."""
    body = hashlib.sha256(str(i).encode()).digest() * ((i * 7919) % 3000 + 1)
    return f"{i}:".encode() + body


def block(i: int) -> bytes:
    """Version ``i`` of one 4 KiB block of the file rewritten in place."""
    head = f"{i}:".encode()
    return head + hashlib.sha256(head).digest() * ((BLOCK - len(head)) // 32) + bytes((BLOCK - len(head)) % 32)


class BusyWriter(threading.Thread):
    """Replaces small files (write to a temporary name, rename) and rewrites blocks of a big file in place."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.count = root, 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.big = root / "big"
        self.big.write_bytes(bytes(4 * MiB))

    def run(self) -> None:
        try:
            fd = os.open(self.big, os.O_WRONLY)
            try:
                while not self.stop.is_set():
                    i = self.count = self.count + 1
                    tmp = self.root / f"w{i % 300}.tmp"
                    with open(tmp, "wb") as fh:
                        fh.write(payload(i))
                        if i % 10 == 0:
                            os.fsync(fh.fileno())
                    tmp.rename(self.root / f"w{i % 300}")
                    os.pwrite(fd, block(i), (i * 104729 % (4 * MiB // BLOCK)) * BLOCK)
            finally:
                os.close(fd)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def check_files(root: Path) -> int:
    """Every file the writer finished holds one whole version; returns how many were checked."""
    n = 0
    for path in root.glob("w*"):
        if path.suffix == ".tmp":
            continue  # created, maybe not written yet when frozen: never renamed over a finished file
        data = path.read_bytes()
        i = int(data.split(b":", 1)[0])
        assert data == payload(i), f"{path.name} holds a torn version"
        n += 1
    big = (root / "big").read_bytes()
    for k in range(0, len(big), BLOCK):
        blk = big[k:k + BLOCK]
        if blk != bytes(BLOCK):
            assert blk == block(int(blk.split(b":", 1)[0])), f"block {k // BLOCK} of big is torn"
    return n


def test_failover_of_a_busy_file_system_gives_a_clean_target_equal_to_the_source_at_the_freeze(
        tmp_path: Path, estate: FakeEstate, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.agent.kernel import ensure_tracefs

    ensure_tracefs()
    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", TOKEN)
    image = tmp_path / "sda.img"
    at_freeze: dict[str, Any] = {}
    real_freeze = agentsync._freeze

    def freeze_and_look(*args: Any, **kw: Any) -> Any:
        out = real_freeze(*args, **kw)
        at_freeze["image"] = image.read_bytes()  # frozen: the device holds exactly this until the thaw
        at_freeze["writes"] = writer.count
        return out

    monkeypatch.setattr(agentsync, "_freeze", freeze_and_look)
    with loop_device(image, 64 * MiB) as dev, mounted(dev, tmp_path / "mnt") as mnt, \
            running_agent({"sda": dev}, tmp_path) as agent:
        plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "agent"}, address=f"127.0.0.1:{agent.port}",
                        fingerprint=agent.fingerprint)
        store = StateStore.open(tmp_path / "state.db")
        ctx = open_context(plan, store, RecordingReporter())
        writer = BusyWriter(mnt)
        writer.start()
        try:
            for _ in range(3):  # seed, then tracked incrementals while the writer runs
                out = run_sync(SyncRequest(plan), ctx).last["web01"]
                assert out.ok, out.error
            assert out.data["disks"][0]["mode"] == "tracked"
            fo = run_failover(FailoverRequest(plan, direct=True), ctx).outcomes[0]
            assert fo.ok, fo.error
            time.sleep(0.5)
            after = writer.count
        finally:
            writer.stop.set()
            writer.join(30)
            ctx.close()
            store.close()
        assert writer.error is None, writer.error
        final = fo.data["final_sync"]
        assert final["freeze"]["frozen"] == [str(mnt)] and not final["freeze"]["refused"], final
        assert after > at_freeze["writes"] > 0  # the writer ran up to the freeze and again after the thaw
    target = tmp_path / "lab" / "target" / "web01" / "disk0.raw"
    assert target.read_bytes() == at_freeze["image"], "the target differs from the source at the freeze"
    clean, report = fsck_clean(target)
    assert clean, report
    with loop_device_of(target) as tdev, mounted(tdev, tmp_path / "tmnt", mkfs=False, options="ro,noload") as tm:
        assert check_files(tm) > 0


def loop_device_of(image: Path) -> Any:
    """A loop device over an existing image (read-only)."""
    import contextlib

    @contextlib.contextmanager
    def attach() -> Any:
        res = subprocess.run(["losetup", "-f", "--show", "-r", str(image)], capture_output=True, text=True,
                             check=True)
        dev = Path(res.stdout.strip())
        try:
            yield dev
        finally:
            subprocess.run(["losetup", "-d", str(dev)], capture_output=True, check=False)

    return attach()


CLIENT = """\
import json, sys, time
from scmt_cli.agent.transport import AgentDisk
disk = AgentDisk("127.0.0.1", int(sys.argv[1]), "sda", open(sys.argv[2], "rb").read().strip(), where="test")
print(json.dumps(disk.freeze(float(sys.argv[3]))), flush=True)
time.sleep(600)
"""


def _write_blocks(path: Path, done: threading.Event) -> None:
    with open(path, "wb") as fh:
        fh.write(b"after the freeze")
        os.fsync(fh.fileno())
    done.set()


@pytest.mark.parametrize("how", ["kill -9", "hung"])
def test_the_agent_thaws_when_the_migration_host_dies_mid_freeze(tmp_path: Path, how: str) -> None:
    """kill -9 of the client: thawed as its connection closes; a client that hangs: thawed by the watchdog."""
    image = tmp_path / "sda.img"
    limit = 60.0 if how == "kill -9" else 3.0
    with loop_device(image, 32 * MiB) as dev, mounted(dev, tmp_path / "mnt") as mnt, \
            running_agent({"sda": dev}, tmp_path, plaintext=True) as agent:
        proc = subprocess.Popen([sys.executable, "-c", CLIENT, str(agent.port), str(agent.token_file), str(limit)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            reply = json.loads(proc.stdout.readline())
            assert reply["frozen"] == [str(mnt)]
            done = threading.Event()
            threading.Thread(target=_write_blocks, args=(mnt / "f", done), daemon=True).start()
            assert not done.wait(1.0), "a write went through a frozen file system"
            t0 = time.monotonic()
            proc.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGSTOP)
            assert done.wait(limit + 15), "the file system stayed frozen"
            waited = time.monotonic() - t0
        finally:
            proc.kill()
            proc.wait()
        assert agent.server.freezer.frozen == []
        logs = [r["message"] for r in agent.reporter.of_type("log")]
        if how == "kill -9":
            assert waited < limit and any("that froze the file systems closed" in m for m in logs), logs
        else:  # the connection is still open: only the watchdog could thaw
            assert waited >= limit - 1.5 and any("thawed them (watchdog)" in m for m in logs), logs
            assert any(e["kind"] == "agent_freeze_expired" for e in agent.reporter.of_type("event"))


def test_a_root_or_unfreezable_file_system_is_reported_with_the_advice(
        tmp_path: Path, estate: FakeEstate, monkeypatch: pytest.MonkeyPatch) -> None:
    """The root file system is never frozen; one whose FIFREEZE fails neither: the final pass says what to do."""
    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", TOKEN)
    image = tmp_path / "sda.img"
    with loop_device(image, 32 * MiB) as dev, mounted(dev, tmp_path / "mnt") as mnt, \
            running_agent({"sda": dev}, tmp_path) as agent:
        (mnt / "data").write_bytes(os.urandom(MiB))
        st = os.stat(dev)
        devno = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        # The agent's view of the mounts: the device also holds "/" (as a root disk would).
        fake = tmp_path / "mountinfo"
        fake.write_text(f"21 1 {devno} / / rw,relatime shared:1 - ext4 {dev} rw\n"
                        f"99 21 {devno} / {mnt} rw,relatime shared:2 - ext4 {dev} rw\n")
        agent.server.freezer.mountinfo = fake
        subprocess.run(["fsfreeze", "-f", str(mnt)], check=True)  # frozen by someone else: FIFREEZE says EBUSY
        try:
            plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "agent"}, address=f"127.0.0.1:{agent.port}",
                            fingerprint=agent.fingerprint)
            store = StateStore.open(tmp_path / "state.db")
            ctx = open_context(plan, store, RecordingReporter())
            try:
                assert run_sync(SyncRequest(plan), ctx).last["web01"].ok
                fo = run_failover(FailoverRequest(plan, direct=True), ctx).outcomes[0]
                frozen_image = image.read_bytes()  # still frozen (by the test): what the final pass read
            finally:
                ctx.close()
                store.close()
        finally:
            subprocess.run(["fsfreeze", "-u", str(mnt)], check=False)
        assert fo.ok, fo.error
        refused = {r["mount"]: r["reason"] for r in fo.data["final_sync"]["freeze"]["refused"]}
        assert refused["/"] == ROOT_REASON
        assert "FIFREEZE failed" in refused[str(mnt)]
        advice = [w for w in fo.warnings if "cannot freeze" in w and "stop the services that write to it" in w]
        assert len(advice) == 2 and any("failover pre hooks" in w for w in advice), fo.warnings
        target = tmp_path / "lab" / "target" / "web01" / "disk0.raw"
        assert target.read_bytes() == frozen_image
