"""The agent under a pre-authentication flood (issue 15.3) while a real ``scmt copy agent://...`` runs.

Attackers on other loopback addresses (one peer, then eight; :mod:`tests.agent.flood`, in its own process)
keep many idle TCP connections open, trickle a TLS ClientHello byte by byte, and complete TLS to send a
wrong token or a garbage frame, reconnecting as fast as they are dropped.  Meanwhile the copy must succeed
byte-identical, short authenticated clients must never be refused (nor wait long), and an idle connection
must be dropped by the pre-authentication deadline (``PREAUTH_TIMEOUT``), not kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scmt_cli.agent import protocol as p
from scmt_cli.agent.server import PREAUTH_TIMEOUT
from scmt_cli.agent.wire import read_frame
from scmt_cli.transports import base as transports
from tests.agent.servers import agent_process

MiB = 1024 * 1024
SLACK = 1.5  # the reaper runs every 0.2 s; a loaded 2-core machine adds the rest
ROOT = Path(__file__).resolve().parents[2]
Probes = dict[str, list[float | str]]


def _probe(url: str, stop: threading.Event, out: Probes) -> None:
    """Authenticated clients from 127.0.0.1, one after another: connect, authenticate, read 1 MiB, close."""
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            disk = transports.open_source(url)
            try:
                disk.read(0, MiB)
            finally:
                disk.close()
            out["ok"].append(time.monotonic() - t0)
        except Exception as exc:  # noqa: BLE001 - every refusal is a test failure, listed
            out["refused"].append(f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")
        time.sleep(0.05)


def _under_flood(port: int, url: str, dst: Path,
                 state: Path) -> tuple[tuple[float, bytes], Probes, subprocess.CompletedProcess[str]]:
    """While the flood runs: one lone idle connection (alone on its address, so only the deadline can end
    it), authenticated probes, and the copy.  Returns (when and how the lone one ended, probes, the copy)."""
    lone = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.99", 0))
    lone.settimeout(PREAUTH_TIMEOUT + 30)
    lone_end: list[tuple[float, bytes]] = []
    lone_t0 = time.monotonic()

    def watch_lone() -> None:
        try:
            got = lone.recv(1)
        except OSError:
            got = b""
        lone_end.append((time.monotonic() - lone_t0, got))

    watcher = threading.Thread(target=watch_lone, daemon=True)
    watcher.start()
    time.sleep(1.0)  # the flood is on before the copy connects
    stop_probe = threading.Event()
    probes: Probes = {"ok": [], "refused": []}
    prober = threading.Thread(target=_probe, args=(url, stop_probe, probes), daemon=True)
    prober.start()
    copy = subprocess.run(
        [sys.executable, "-m", "scmt_cli", "--state", str(state), "--json", "copy", url, str(dst),
         "--bandwidth", "8MiB/s"], capture_output=True, text=True, timeout=180)
    watcher.join(PREAUTH_TIMEOUT + 30)
    lone.close()
    stop_probe.set()
    prober.join(30)
    assert len(lone_end) == 1, "the lone idle connection was never closed"
    return lone_end[0], probes, copy


@pytest.mark.parametrize("peers", [["127.0.0.2"], [f"127.0.0.{i}" for i in range(2, 10)]],
                         ids=["one-peer", "eight-peers"])
def test_a_preauth_flood_never_locks_out_an_authenticated_copy(tmp_path: Path, peers: list[str]) -> None:
    image = tmp_path / "disk.img"
    data = os.urandom(24 * MiB)
    image.write_bytes(data)
    dst = tmp_path / "copy.img"
    with agent_process({"disk0": image}, tmp_path) as agent:
        url = agent.url("disk0")
        flood = subprocess.Popen([sys.executable, "-m", "tests.agent.flood", str(agent.port), *peers],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert flood.stdout is not None and flood.stdout.readline().strip() == "started"
        try:
            (lone_lifetime, got), probes, copy = _under_flood(agent.port, url, dst, tmp_path / "st.db")
        finally:
            if flood.poll() is None:
                flood.send_signal(signal.SIGTERM)
            out = flood.communicate(timeout=60)[0]
    report = json.loads(out.splitlines()[-1])
    assert not report["errors"], report["errors"]
    assert copy.returncode == 0, copy.stderr
    assert dst.read_bytes() == data
    assert probes["refused"] == [], probes["refused"]
    assert len(probes["ok"]) >= 5, "too few authenticated clients ran during the flood to prove anything"
    assert got == b"" and PREAUTH_TIMEOUT - 0.5 <= lone_lifetime <= PREAUTH_TIMEOUT + SLACK, lone_lifetime
    assert report["opened"] > 10 * len(peers) and report["refused"] > 0  # the flood was real
    lifetimes = report["idle_lifetimes"]
    assert lifetimes and max(lifetimes) <= PREAUTH_TIMEOUT + SLACK, max(lifetimes)
    assert max(probes["ok"]) < 2.0, probes["ok"]  # an authenticated client does not wait behind the flood


def test_no_pool_entry_outlives_its_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused connection (wrong token, garbage frame) or a failed TLS handshake closed its socket before it
    left the pre-authentication pool; under a flood the descriptor went to the next connection, whose entry
    the old one's clean-up then removed (that connection escaped the limits and the deadline, or was refused
    "too many connections" after authenticating).  Whenever the pool is charged, every descriptor in it must
    still be open."""
    from scmt_cli.agent import server as srv
    from tests.agent.servers import running_agent

    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(MiB))
    stale: list[int] = []
    real_charge = srv.AgentServer._charge_preauth

    def charge(self: srv.AgentServer, seconds: float) -> None:  # runs as each connection leaves the pool
        with self._lock:
            for fd in self._preauth:
                try:
                    os.fstat(fd)
                except OSError:
                    stale.append(fd)
        real_charge(self, seconds)

    monkeypatch.setattr(srv.AgentServer, "_charge_preauth", charge)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with running_agent({"disk0": image}, tmp_path) as agent:
        for how in ("tls-garbage", "frame-garbage", "wrong-token") * 3:
            with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as raw:
                if how == "tls-garbage":
                    raw.sendall(os.urandom(512))
                    with contextlib.suppress(OSError):  # an alert or a reset: either way the agent gave up
                        raw.recv(1024)
                    continue
                with ctx.wrap_socket(raw) as s:
                    if how == "frame-garbage":
                        s.sendall(os.urandom(p.HEADER_SIZE))
                    else:
                        s.sendall(p.encode_frame(p.T_HELLO, 1, p.encode_json(
                            {"version": p.VERSION, "client_nonce": os.urandom(p.NONCE_SIZE).hex()})))
                        read_frame(s)
                        s.sendall(p.encode_frame(p.T_AUTH, 2, p.encode_json({"mac": os.urandom(32).hex()})))
                    reply = read_frame(s)
                    assert reply is not None and reply.type == p.T_ERROR
            time.sleep(0.1)
        disk = transports.open_source(agent.url("disk0"))  # the agent still serves an authenticated client
        disk.close()
    assert stale == []
