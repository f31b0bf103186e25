"""Agents for tests: in-process (:func:`serve_agent_inprocess`) and as a subprocess (:func:`agent_process`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scmt_cli.agent.client import ClientTLS
from scmt_cli.agent.server import AgentServer
from scmt_cli.agent.service import ServeRequest, build_config
from scmt_cli.events import RecordingReporter

TOKEN = "test-token-0123456789abcdef"  # noqa: S105 - a test token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_token(directory: Path, token: str = TOKEN) -> Path:
    path = directory / "agent.token"
    path.write_text(token + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass
class InProcessAgent:
    server: AgentServer
    port: int
    token_file: Path
    reporter: RecordingReporter

    @property
    def fingerprint(self) -> str | None:
        return self.server.config.tls_fingerprint

    @property
    def tls(self) -> ClientTLS | None:
        return ClientTLS(self.fingerprint) if self.fingerprint else None

    def url(self, disk: str) -> str:
        pin = f"fingerprint={self.fingerprint}" if self.fingerprint else "plaintext=1"
        return f"agent://127.0.0.1:{self.port}/{disk}?token_file={self.token_file}&{pin}"


@contextlib.contextmanager
def running_agent(disks: dict[str, Path], directory: Path, *, port: int = 0, config: dict[str, Any] | None = None,
                  **kw: object) -> Iterator[InProcessAgent]:
    """An agent in this process on 127.0.0.1 (``port``, 0: a free one) serving ``disks``; stopped on exit.

    ``kw`` are :class:`ServeRequest` fields, ``config`` overrides :class:`AgentConfig` fields (test knobs).
    No CPU limit unless ``cpu_limit`` is given: in this process it would count the test's own CPU time.
    """
    kw.setdefault("cpu_limit", 100.0)
    token_file = write_token(directory)
    req = ServeRequest(f"127.0.0.1:{port}", tuple(f"{n}={p}" for n, p in disks.items()), token_file,
                       **kw)  # type: ignore[arg-type]
    rep = RecordingReporter()
    cfg = build_config(req)
    for key, value in (config or {}).items():
        setattr(cfg, key, value)
    server = AgentServer(cfg, rep)
    _, port = server.start()
    try:
        yield InProcessAgent(server, port, token_file, rep)
    finally:
        server.stop()


@contextlib.contextmanager
def serve_agent_contract(image: Path, writable: bool) -> Iterator[str | None]:
    """Contract-suite entry: the image through an agent (always read-only)."""
    with running_agent({"disk0": image}, image.parent) as agent:
        yield agent.url("disk0")


@dataclass
class AgentProcess:
    proc: subprocess.Popen[str]
    port: int
    token_file: Path
    stderr_path: Path
    fingerprint: str | None = None

    def url(self, disk: str) -> str:
        pin = f"fingerprint={self.fingerprint}" if self.fingerprint else "plaintext=1"
        return f"agent://127.0.0.1:{self.port}/{disk}?token_file={self.token_file}&{pin}"

    @property
    def tls(self) -> ClientTLS | None:
        return ClientTLS(self.fingerprint) if self.fingerprint else None

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8")


@contextlib.contextmanager
def agent_process(disks: dict[str, Path], directory: Path, *extra: str) -> Iterator[AgentProcess]:
    """``python -m scmt_cli --log-json agent serve`` on 127.0.0.1 (free port); terminated by pid on exit."""
    token_file = write_token(directory)
    err = directory / "agent.stderr"
    args = [sys.executable, "-m", "scmt_cli", "--log-json", "agent", "serve", "--listen", "127.0.0.1:0",
            "--token-file", str(token_file), *extra]
    for name, path in disks.items():
        args += ["--disk", f"{name}={path}"]
    with open(err, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=fh, text=True,
                                env={**os.environ, "SCMT_STATE": str(directory / "agent-state.db")})
    try:
        port = 0
        fingerprint = None
        deadline = time.monotonic() + 30
        while not port and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited with {proc.returncode}: {err.read_text()}")
            for line in err.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                if rec.get("kind") == "agent_listening":
                    port = int(rec["port"])
                    fingerprint = rec.get("fingerprint")
            time.sleep(0.05)
        assert port, f"agent did not start: {err.read_text()}"
        yield AgentProcess(proc, port, token_file, err, fingerprint)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
