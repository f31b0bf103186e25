"""Build (once, cached by source hash) and run govmomi's vcsim for conformance tests.

The binary comes from ``tests/vcsim/main.go`` built with Debian's golang-go and
golang-github-vmware-govmomi-dev (``GO111MODULE=off GOPATH=/usr/share/gocode``).
It is cached under ``$SCMT_VCSIM_CACHE`` or the temp dir, keyed by the source hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "vcsim" / "main.go"
GOPATH = "/usr/share/gocode"
_BUILD_LOCK = threading.Lock()


class VcsimUnavailable(Exception):
    """Go or the govmomi sources are missing (the reason says which)."""


def binary() -> Path:
    """The built vcsim binary (built on first use)."""
    if shutil.which("go") is None:
        raise VcsimUnavailable("the Go toolchain is not installed (apt-get install golang-go)")
    if not (Path(GOPATH) / "src/github.com/vmware/govmomi/simulator").is_dir():
        raise VcsimUnavailable("govmomi sources missing (apt-get install golang-github-vmware-govmomi-dev)")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("SCMT_VCSIM_CACHE") or tempfile.gettempdir()) / f"scmt-vcsim-{digest}"
    exe = cache / "vcsim"
    with _BUILD_LOCK:
        if exe.is_file():
            return exe
        cache.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOCACHE=str(cache / "gocache"), GOFLAGS="")
        tmp = cache / f"vcsim.{os.getpid()}"
        proc = subprocess.run(
            ["go", "build", "-o", str(tmp), "."], cwd=SOURCE.parent, env=env, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"building vcsim failed:\n{proc.stderr[-4000:]}")
        tmp.replace(exe)
    return exe


@dataclass
class Vcsim:
    url: str
    thumbprint: str
    user: str
    password: str = field(repr=False)
    proc: subprocess.Popen[str] = field(repr=False)

    @property
    def host(self) -> str:
        return self.url.split("://")[1].split("/")[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.split("://")[1].split("/")[0].rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start(vms: int = 2) -> Vcsim:
    """Start vcsim (VPX model; ``vms`` per host and per resource pool) on 127.0.0.1 with TLS."""
    password = secrets.token_urlsafe(12)
    proc = subprocess.Popen(
        [str(binary()), "-password", password, "-vms", str(vms)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise RuntimeError(f"vcsim exited with {proc.returncode} before printing its URL")
    info = json.loads(line)
    return Vcsim(url=info["url"], thumbprint=info["thumbprint"], user="scmt", password=password, proc=proc)
