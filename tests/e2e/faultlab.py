"""A fake vCenter in its own process (``python -m scmt_cli.lab``) and scmt subprocesses around it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.hooks import FAKE_RPC_ENV
from scmt_cli.lab.remote import RemoteFakeVCenter
from scmt_cli.vsphere.settings import ConnectionSettings


@dataclass
class RemoteLab:
    root: Path
    proc: subprocess.Popen[str]
    info: dict[str, Any]
    plan: Path
    state: Path
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[FAKE_RPC_ENV] = self.info["rpc"]
        env.pop("SCMT_STATE", None)
        return env

    def client(self) -> RemoteFakeVCenter:
        host, port = self.info["url"].split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
        settings = ConnectionSettings(host=host, port=int(port), user=self.info["user"], password=demo_lab.PASSWORD,
                                      thumbprint=self.info["thumbprint"])
        vc = RemoteFakeVCenter(self.info["rpc"], settings)
        vc.connect()
        return vc

    def scmt(self, *args: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "scmt_cli", "--state", str(self.state), "--quiet", *args]
        return self.track(subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True, cwd=self.root))

    def track(self, proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        """Remember ``proc`` so that :meth:`stop` ends it if a failing test left it running."""
        self.started.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = self.scmt(*args)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def kill_after(self, delay: float, *args: str) -> bool:
        """Start scmt, SIGKILL it after ``delay`` seconds; True if it was killed (still running)."""
        proc = self.scmt(*args)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        return killed

    def source_digests(self, vm: str, disks: int) -> list[str]:
        """SHA-256 of the live disk files the fake writes (``<workdir>/disks/<ds>/<vm>/<vm>[_N].vmdk``)."""
        folder = self.root / "vcenter" / "disks" / "ds-vmfs01" / vm
        files = sorted(folder.glob("*.vmdk"))
        assert len(files) == disks, files
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]

    def target_digests(self, vm: str, disks: int) -> list[str]:
        folder = self.root / "lab" / "target" / vm
        return [hashlib.sha256((folder / f"disk{i}.raw").read_bytes()).hexdigest() for i in range(disks)]

    def stop(self) -> None:
        for proc in self.started:  # SIGTERM first: scmt then stops and reaps its own children
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_remote_lab(root: Path, *, bandwidth: str | None = None) -> RemoteLab:
    lab = demo_lab.write_lab(root / "lab")
    proc = subprocess.Popen([sys.executable, "-m", "scmt_cli.lab", "--lab", str(lab), "--workdir",
                             str(root / "vcenter")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise RuntimeError("the fake vCenter did not start")
    info = json.loads(line)
    plan = demo_lab.write_plan(root / "lab", url=info["url"], thumbprint=info["thumbprint"], user=info["user"],
                               bandwidth=bandwidth)
    return RemoteLab(root, proc, info, plan, root / "state.db")
