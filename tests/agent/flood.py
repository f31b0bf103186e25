"""A pre-authentication flood against an agent, in its own process (``python -m tests.agent.flood PORT PEER...``).

It runs until SIGTERM, then prints one JSON line: how many connections it opened, how many wrong-token or
garbage handshakes the agent refused, how long each idle connection lived before the agent closed it, and
any error of its own.  Its own process, so that its threads do not slow the clients the test measures.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import ssl
import sys
import threading
import time

from scmt_cli.agent import protocol as p
from scmt_cli.agent.server import MAX_STARTUPS_PER_PEER
from scmt_cli.agent.wire import read_frame


def _connect(src: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


class Flood:
    """Attack threads from ``peers`` against the agent on 127.0.0.1:``port`` until :meth:`stop`."""

    def __init__(self, port: int, peers: list[str]) -> None:
        self.port, self.peers = port, peers
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.idle_lifetimes: list[float] = []  # seconds an idle connection stayed open before the agent closed it
        self.opened = 0
        self.handshakes_refused = 0
        self.errors: list[str] = []

    def start(self) -> None:
        for peer in self.peers:
            self.threads.append(threading.Thread(target=self._idle, args=(peer, 3 * MAX_STARTUPS_PER_PEER),
                                                 daemon=True))
            self.threads.append(threading.Thread(target=self._slow, args=(peer,), daemon=True))
            self.threads.append(threading.Thread(target=self._wrong, args=(peer, "token"), daemon=True))
            self.threads.append(threading.Thread(target=self._wrong, args=(peer, "garbage"), daemon=True))
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(15)

    def _idle(self, peer: str, keep: int) -> None:
        """Keep ``keep`` connections open that never send a byte; reopen each one the agent drops."""
        sel = selectors.DefaultSelector()
        try:
            while not self.stopping.is_set():
                while len(sel.get_map()) < keep and not self.stopping.is_set():
                    try:
                        s = _connect(peer, self.port)
                    except OSError:
                        time.sleep(0.05)
                        break
                    s.setblocking(False)
                    sel.register(s, selectors.EVENT_READ, time.monotonic())
                    with self.lock:
                        self.opened += 1
                for key, _ in sel.select(timeout=0.1):
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    try:
                        data = s.recv(4096)
                    except OSError:
                        data = b""
                    if not data:  # the agent closed it
                        with self.lock:
                            self.idle_lifetimes.append(time.monotonic() - key.data)
                        sel.unregister(s)
                        s.close()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(f"idle {peer}: {exc!r}")
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            sel.close()

    def _slow(self, peer: str) -> None:
        """Trickle bytes of a TLS ClientHello, one every 0.3 s, on two connections at a time."""
        hello = bytes.fromhex("16030100c8010000c40303") + os.urandom(200)
        while not self.stopping.is_set():
            socks: list[socket.socket] = []
            try:
                socks = [_connect(peer, self.port) for _ in range(2)]
                for byte in hello:
                    if self.stopping.is_set():
                        break
                    for s in socks:
                        s.sendall(bytes([byte]))
                    time.sleep(0.3)
            except OSError:
                pass  # dropped at the deadline, as it should be
            finally:
                for s in socks:
                    s.close()

    def _wrong(self, peer: str, how: str) -> None:
        """Complete TLS, then send a wrong token (``token``) or a garbage frame (``garbage``); repeat."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        while not self.stopping.is_set():
            try:
                with ctx.wrap_socket(_connect(peer, self.port)) as s:
                    if how == "garbage":
                        s.sendall(os.urandom(p.HEADER_SIZE))
                    else:
                        s.sendall(p.encode_frame(p.T_HELLO, 1, p.encode_json(
                            {"version": p.VERSION, "client_nonce": os.urandom(p.NONCE_SIZE).hex()})))
                        read_frame(s)
                        s.sendall(p.encode_frame(p.T_AUTH, 2, p.encode_json({"mac": os.urandom(32).hex()})))
                    reply = read_frame(s)
                    if reply is not None and reply.type == p.T_ERROR:
                        with self.lock:
                            self.handshakes_refused += 1
            except (OSError, p.ProtocolError):
                pass
            time.sleep(0.02)  # hundreds of handshakes a second: enough to race, not to starve this very test


def main(argv: list[str]) -> int:
    flood = Flood(int(argv[0]), argv[1:])
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    flood.start()
    print("started", flush=True)
    done.wait()
    flood.stop()
    print(json.dumps({"opened": flood.opened, "refused": flood.handshakes_refused,
                      "idle_lifetimes": flood.idle_lifetimes, "errors": flood.errors}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
