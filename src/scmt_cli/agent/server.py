"""The agent server: serves :class:`~scmt_cli.agent.disks.ServedDisk` objects read-only.

Contract:

* every connection authenticates first (challenge-response, see
  :mod:`scmt_cli.agent.protocol`); a failure is answered with an ``ERROR``
  frame (code ``E_AUTH``), logged with the peer address (never the token or
  the MAC), and the connection is closed;
* after authentication, requests are read continuously and executed by a
  pool of ``queue_depth`` workers shared by all connections; the reader
  blocks while ``queue_depth`` requests are running, so memory stays bounded
  by about ``queue_depth`` x 2 x :data:`~scmt_cli.agent.protocol.MAX_PAYLOAD`
  whatever the number of connections (at most ``max_connections``);
* replies are sent under a per-connection lock, throttled by an optional
  token bucket (bytes/s on the wire);
* nothing is ever written to a served disk.

Exposure (an agent is reachable from the source VM's network): a connection
that has not authenticated within ``preauth_timeout`` seconds (TLS handshake
included) is closed; at most ``max_startups`` connections may be
unauthenticated at once, at most ``max_startups_per_peer`` from one address
(a newcomer evicts that address's oldest, so idle sockets cannot lock a peer
out for long); authenticated sessions are counted apart (``max_connections``),
so unauthenticated ones never starve them (as OpenSSH's MaxStartups), and the
CPU they cost (accepting, TLS handshakes, refusals) is left out of the CPU
share, so a flood cannot make the governor pause the real sessions either.
A refused or failed connection leaves the pools before its socket is closed
(a descriptor reused by the next connection must not lose that one's entry).
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from scmt_cli.agent import protocol as p
from scmt_cli.agent.control import Control
from scmt_cli.agent.disks import ServedDisk
from scmt_cli.agent.freeze import Freezer
from scmt_cli.agent.limits import DEFAULT_CPU_LIMIT, DEFAULT_STORAGE_SHARE
from scmt_cli.agent.tracking import Tracking
from scmt_cli.agent.wire import read_frame as _read_frame
from scmt_cli.blocks.plan import CHUNK_ALIGN, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from scmt_cli.errors import ConfigError, SourceUnreachableError
from scmt_cli.events import NullReporter, Reporter
from scmt_cli.transports.wrappers import TokenBucket

PREAUTH_TIMEOUT = 5.0
MAX_STARTUPS = 32
MAX_STARTUPS_PER_PEER = 4
#: Connections the kernel queues until accepted.  A burst of connections beyond it (a flood) makes the
#: kernel drop handshakes, which clients retry 1, 2, 4... s later: an authenticated client would wait behind
#: the flood and an idle one would live seconds past its deadline (measured: 16 let both happen).  128 is
#: OpenSSH's and Python's default.
LISTEN_BACKLOG = 128
MAX_DIGEST_BATCH = 4096
MAX_EXTENT_RANGE = 64 * 1024 * 1024 * 1024


@dataclass
class AgentConfig:
    """What ``scmt agent serve`` was asked to do.  ``bandwidth`` in bytes/s (None: unlimited)."""

    host: str
    port: int
    disks: Mapping[str, ServedDisk]
    token: bytes = field(repr=False)
    queue_depth: int = 4
    bandwidth: float | None = None
    max_connections: int = 16
    compress: bool = True
    tls: ssl.SSLContext | None = None
    preauth_timeout: float = PREAUTH_TIMEOUT
    max_startups: int = MAX_STARTUPS
    max_startups_per_peer: int = MAX_STARTUPS_PER_PEER
    tracking: bool = True
    #: Agent CPU share (0-1] and share of the time its reads may be in flight (0-1]; 1 = unlimited.
    cpu_share: float = DEFAULT_CPU_LIMIT / 100
    storage_share: float = DEFAULT_STORAGE_SHARE / 100
    #: Tests: trace buffer per CPU (KiB) and whether a thread consumes events between cuts.
    track_buffer_kb: int = 4096
    track_reader: bool = True
    #: SHA-256 of the served certificate (None without TLS) and whether it was made at this start.
    tls_fingerprint: str | None = None
    tls_created: bool = False

    def __post_init__(self) -> None:
        if len(self.token) < p.MIN_TOKEN_BYTES:
            raise ConfigError(f"the agent token must be at least {p.MIN_TOKEN_BYTES} bytes long",
                              hint="generate one with: head -c 32 /dev/urandom | base64 > agent.token")
        if self.queue_depth < 1:
            raise ConfigError("--queue-depth must be at least 1")


class _Request(Exception):
    """A request the agent refuses with an ERROR frame (the connection stays usable)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AgentServer:
    """A listening agent; :meth:`start` binds and serves in background threads, :meth:`stop` ends it."""

    def __init__(self, config: AgentConfig, reporter: Reporter | None = None) -> None:
        self.config = config
        self.reporter = reporter or NullReporter()
        self._sock: socket.socket | None = None
        self._pool = ThreadPoolExecutor(max_workers=config.queue_depth, thread_name_prefix="scmt-agent-io")
        self._slots = threading.BoundedSemaphore(config.queue_depth)
        self._bucket = TokenBucket(config.bandwidth, burst=max(config.bandwidth / 4, 1 << 20)) \
            if config.bandwidth else None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self.address: tuple[str, int] = (config.host, config.port)
        self.auth_failures = 0
        self._preauth: dict[int, tuple[str, float]] = {}  # socket fd -> (peer address, deadline)
        self._authed: set[int] = set()
        self.preauth_dropped = 0
        #: CPU seconds spent on connections before they authenticated (accepting, TLS handshakes, refusals):
        #: left out of the CPU share, or a flood of unauthenticated connections would pause the real sessions.
        self.preauth_cpu = 0.0
        self.control = Control(config.disks, self.reporter, cpu_share=config.cpu_share,
                               storage_share=config.storage_share,
                               cpu_clock=lambda: time.process_time() - self.preauth_cpu)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        try:
            infos = socket.getaddrinfo(self.config.host, self.config.port, type=socket.SOCK_STREAM)
            family, _, _, _, addr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            raise SourceUnreachableError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}") from None
        self._sock = sock
        self.address = sock.getsockname()[:2]
        self.control.start(tracking=self.config.tracking, buffer_kb=self.config.track_buffer_kb,
                           reader=self.config.track_reader)
        self._accept_thread = threading.Thread(target=self._accept_loop, name="scmt-agent-accept", daemon=True)
        self._accept_thread.start()
        threading.Thread(target=self._reap_loop, name="scmt-agent-reaper", daemon=True).start()
        disks = ", ".join(f"{d.name} ({d.size} bytes)" for d in self.config.disks.values())
        tls = " (TLS)" if self.config.tls is not None else ""
        self.reporter.log("info", f"agent listening on {self.address[0]}:{self.address[1]}{tls}; disks: {disks}")
        self.reporter.event("agent_listening", host=self.address[0], port=self.address[1],
                            tls=self.config.tls is not None, fingerprint=self.config.tls_fingerprint,
                            disks=[{"name": d.name, "size": d.size} for d in self.config.disks.values()])
        return self.address

    def stop(self) -> None:
        self._stopping.set()
        # Thaw first: the joins below can be cut short by a second Ctrl-C/SIGTERM (or the process killed while
        # it waits), and a source file system must never stay frozen after the agent is gone.
        self.control.thaw()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.control.close()
        for d in self.config.disks.values():
            d.close()

    @property
    def tracking(self) -> Tracking | None:
        return self.control.tracking

    @property
    def freezer(self) -> Freezer | None:
        return self.control.freezer

    def serve_forever(self) -> None:
        """Block until :meth:`stop` is called from another thread (or a signal handler raises).

        Sleeps and polls rather than waiting on the Event: a signal handler that raises inside
        ``Event.wait`` can leave the Event's lock held, and ``stop()``'s ``set()`` then waits on it forever
        (seen: 1 SIGTERM in 8).  ``is_set()`` and ``time.sleep`` hold no lock.
        """
        while not self._stopping.is_set():
            time.sleep(0.2)

    # -- connections -----------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, peer = self._sock.accept()
            except OSError:
                return
            t0 = time.thread_time()
            self._admit(conn, str(peer[0]))
            threading.Thread(target=self._serve_conn, args=(conn, peer), name="scmt-agent-conn",
                             daemon=True).start()
            self._charge_preauth(time.thread_time() - t0)

    def _admit(self, conn: socket.socket, ip: str) -> None:
        """Put ``conn`` in the pre-authentication pool, evicting the oldest of its peer (or of the greediest)."""
        cfg = self.config
        with self._lock:
            victim = None
            mine = [c for c, (who, _) in self._preauth.items() if who == ip]
            if len(mine) >= cfg.max_startups_per_peer:
                victim = min(mine, key=lambda c: self._preauth[c][1])
            elif len(self._preauth) >= cfg.max_startups:
                counts: dict[str, int] = {}
                for who, _ in self._preauth.values():
                    counts[who] = counts.get(who, 0) + 1
                greedy = max(counts, key=lambda k: counts[k])
                victim = min((c for c, (w, _) in self._preauth.items() if w == greedy),
                             key=lambda c: self._preauth[c][1])
            if victim is not None:
                self._preauth.pop(victim, None)
                self.preauth_dropped += 1
                _shutdown_fd(victim)
            self._preauth[conn.fileno()] = (ip, time.monotonic() + cfg.preauth_timeout)
            self._conns.add(conn)

    def _reap_loop(self) -> None:
        """Close the connections that did not authenticate by their deadline."""
        while not self._stopping.wait(0.2):
            now = time.monotonic()
            with self._lock:  # shut down under the lock: a closed fd leaves the pool before it is closed
                for fd in [fd for fd, (_, dl) in self._preauth.items() if dl <= now]:
                    self._preauth.pop(fd, None)
                    self.preauth_dropped += 1
                    _shutdown_fd(fd)

    def _authenticated(self, fd: int) -> bool:
        """Move ``fd`` from the pre-authentication pool to the sessions; False when that one is full."""
        with self._lock:
            if fd not in self._preauth:  # reaped at its deadline meanwhile
                return False
            self._preauth.pop(fd, None)
            if len(self._authed) >= self.config.max_connections:
                return False
            self._authed.add(fd)
            return True

    def _refuse(self, conn: socket.socket, code: int, message: str, rid: int = 0) -> None:
        """Send an ERROR frame; :meth:`_serve_conn` closes the socket, after it left the pools: closed here,
        its descriptor could be reused by a new connection whose pool entry the old one would then remove."""
        try:
            conn.sendall(p.encode_frame(p.T_ERROR, rid, p.error_payload(code, message)))
        except OSError:
            pass

    def _charge_preauth(self, seconds: float) -> None:
        with self._lock:
            self.preauth_cpu += seconds

    def _serve_conn(self, conn: socket.socket, peer: Any) -> None:
        cpu0 = time.thread_time()  # this thread's CPU until it authenticates: see preauth_cpu
        charged = False
        who = f"{peer[0]}:{peer[1]}"
        send_lock = threading.Lock()
        closed = threading.Event()
        raw = conn
        fd = conn.fileno()
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(self.config.preauth_timeout + 1)
            if self.config.tls is not None:
                # The handshake is not done by wrap_socket: a failing one would close the socket there,
                # before it left the pools (see _refuse); the finally below closes it.
                conn = self.config.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                with self._lock:
                    self._conns.discard(raw)
                    self._conns.add(conn)
                try:
                    conn.do_handshake()
                except (ssl.SSLError, OSError) as exc:
                    self.reporter.log("warning", f"agent: TLS handshake with {who} failed: {exc}")
                    return
            if not self._handshake(conn, who):
                return
            if not self._authenticated(fd):
                self._refuse(conn, p.E_BUSY, "too many connections")
                return
            self._charge_preauth(time.thread_time() - cpu0)
            charged = True
            conn.settimeout(None)
            self.reporter.event("agent_client", peer=who, authenticated=True)
            while not self._stopping.is_set():
                frame = _read_frame(conn)
                if frame is None:
                    return
                if frame.type == p.T_BYE:
                    return
                if frame.type == p.T_WATCH:
                    self._start_watch(conn, send_lock, frame, closed)
                    continue
                self._slots.acquire()
                try:
                    self._pool.submit(self._run_request, conn, send_lock, frame, fd)
                except RuntimeError:  # pool shut down
                    self._slots.release()
                    return
        except p.ProtocolError as exc:
            self.reporter.log("warning", f"agent: connection from {who} closed: {exc}")
            self._refuse(conn, p.E_BAD_REQUEST, str(exc))
        except OSError:
            pass
        finally:
            if not charged:
                self._charge_preauth(time.thread_time() - cpu0)
            closed.set()
            if self.control.thaw(owner=fd):
                self.reporter.log("warning", f"agent: the connection from {who} that froze the file systems closed;"
                                  " thawed them")
            with self._lock:
                self._conns.discard(conn)
                self._conns.discard(raw)
                self._preauth.pop(fd, None)
                self._authed.discard(fd)
            try:
                conn.close()
            except OSError:
                pass

    def _handshake(self, conn: socket.socket, who: str) -> bool:
        hello = _read_frame(conn)
        if hello is None:
            return False
        if hello.type != p.T_HELLO:
            raise p.ProtocolError("expected HELLO")
        body = p.decode_json(hello.payload)
        if p.int_field(body, "version", hi=255) != p.VERSION:
            self._refuse(conn, p.E_VERSION, f"this agent speaks protocol version {p.VERSION}", hello.request_id)
            return False
        client_nonce = p.hex_field(body, "client_nonce", p.NONCE_SIZE)
        server_nonce = os.urandom(p.NONCE_SIZE)
        conn.sendall(p.encode_frame(p.T_CHALLENGE, hello.request_id, p.encode_json(
            {"version": p.VERSION, "server_nonce": server_nonce.hex(), "agent": "scmt"})))
        auth = _read_frame(conn)
        if auth is None:
            return False
        if auth.type != p.T_AUTH:
            raise p.ProtocolError("expected AUTH")
        mac = p.hex_field(p.decode_json(auth.payload), "mac", 32)
        token = self.config.token
        if not p.macs_equal(mac, p.client_mac(token, server_nonce, client_nonce)):
            with self._lock:
                self.auth_failures += 1
            self.reporter.log("warning", f"agent: authentication failed for {who}; connection closed")
            self.reporter.event("agent_auth_failed", peer=who)
            time.sleep(0.2)  # slows guessing down a little
            self._refuse(conn, p.E_AUTH, "authentication failed", auth.request_id)
            return False
        conn.sendall(p.encode_frame(p.T_AUTH | p.REPLY, auth.request_id, p.encode_json(
            {"mac": p.server_mac(token, server_nonce, client_nonce).hex()})))
        return True

    def _start_watch(self, conn: socket.socket, send_lock: threading.Lock, frame: p.Frame,
                     closed: threading.Event) -> None:
        """Start a :class:`~scmt_cli.agent.watch.Watcher` for a WATCH request (an ERROR reply if it is bad)."""
        from scmt_cli.agent.watch import MAX_INTERVAL, MIN_INTERVAL, Watcher

        def send(data: bytes) -> None:
            if self._bucket is not None:
                self._bucket.consume(len(data))
            with send_lock:
                conn.sendall(data)

        try:
            body = p.decode_json(frame.payload)
            disk = self._disk(body)
            chunk = p.int_field(body, "chunk_size", lo=MIN_CHUNK_SIZE, hi=MAX_CHUNK_SIZE)
            interval = body.get("interval")
            if not isinstance(interval, (int, float)) or not MIN_INTERVAL <= interval <= MAX_INTERVAL:
                raise _Request(p.E_BAD_REQUEST, f"interval must be {MIN_INTERVAL} to {MAX_INTERVAL} seconds")
        except (_Request, p.ProtocolError) as exc:
            code = exc.code if isinstance(exc, _Request) else p.E_BAD_REQUEST
            send(p.encode_frame(p.T_ERROR, frame.request_id, p.error_payload(code, str(exc))))
            return
        Watcher(disk, chunk, float(interval), frame.request_id, send, self._slots, closed,
                self.control.pace_cpu).start()

    # -- requests ----------------------------------------------------------------------
    def _run_request(self, conn: socket.socket, send_lock: threading.Lock, frame: p.Frame,
                     owner: object = None) -> None:
        try:
            try:
                ftype, payload, flags = self._answer(frame, owner)
            except _Request as exc:
                ftype, payload, flags = p.T_ERROR, p.error_payload(exc.code, exc.message), 0
            except p.ProtocolError as exc:
                ftype, payload, flags = p.T_ERROR, p.error_payload(p.E_BAD_REQUEST, str(exc)), 0
            except OSError as exc:
                ftype, payload, flags = p.T_ERROR, p.error_payload(p.E_IO, exc.strerror or str(exc)), 0
            data = p.encode_frame(ftype, frame.request_id, payload, flags)
            del payload
            if self._bucket is not None:
                self._bucket.consume(len(data))
            with send_lock:
                conn.sendall(data)
        except OSError:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        finally:
            self._slots.release()
            self.control.pace_cpu()

    def _disk(self, body: dict[str, Any]) -> ServedDisk:
        name = p.str_field(body, "disk", max_len=64)
        disk = self.config.disks.get(name)
        if disk is None:
            raise _Request(p.E_NO_SUCH_DISK, f"no disk named {name!r} is served")
        return disk

    def _range(self, disk: ServedDisk, offset: int, length: int) -> None:
        if offset + length > disk.size:
            raise _Request(p.E_OUT_OF_RANGE, f"range {offset}+{length} is past the end of {disk.name} "
                                             f"({disk.size} bytes)")

    def _answer(self, frame: p.Frame, owner: object = None) -> tuple[int, bytes, int]:
        reply = frame.type | p.REPLY
        if frame.flags:
            raise _Request(p.E_BAD_REQUEST, "requests are never compressed")
        body = p.decode_json(frame.payload)
        if frame.type == p.T_LIST:
            disks = [{"name": d.name, "size": d.size, "id": d.identity()} for d in self.config.disks.values()]
            return reply, p.encode_json({"disks": disks}), 0
        if frame.type == p.T_READ:
            disk = self._disk(body)
            offset = p.int_field(body, "offset")
            length = p.int_field(body, "length", hi=p.MAX_READ)
            self._range(disk, offset, length)
            compress = self.config.compress and body.get("compress", True) is not False
            packed, flags = p.pack_data(disk.read(offset, length), compress=compress)
            return p.T_DATA, packed, flags
        if frame.type == p.T_EXTENTS:
            disk = self._disk(body)
            offset = p.int_field(body, "offset")
            length = p.int_field(body, "length", hi=MAX_EXTENT_RANGE)
            self._range(disk, offset, length)
            exts = disk.extents(offset, length)
            if len(exts) > 100_000:  # keep the reply small: report the tail as data
                cut = exts[99_999][0]
                exts = [*exts[:99_999], (cut, offset + length - cut, "data")]
            return reply, p.encode_json({"extents": [list(e) for e in exts]}), 0
        if frame.type == p.T_DIGESTS:
            disk = self._disk(body)
            chunk = p.int_field(body, "chunk_size", lo=MIN_CHUNK_SIZE, hi=MAX_CHUNK_SIZE)
            if chunk % CHUNK_ALIGN:
                raise _Request(p.E_BAD_REQUEST, f"chunk_size must be a multiple of {CHUNK_ALIGN}")
            start = p.int_field(body, "start")
            count = p.int_field(body, "count", lo=1, hi=MAX_DIGEST_BATCH)
            out: list[str] = []
            nread = 0
            for i in range(start, start + count):
                off = i * chunk
                if off >= disk.size:
                    break
                dg, n = disk.chunk_digest_counted(off, min(chunk, disk.size - off))
                out.append(dg)
                nread += n
                self.control.pace_cpu()  # a batch hashes up to MAX_DIGEST_BATCH chunks: pace each one
            return reply, p.encode_json({"start": start, "digests": out, "bytes_read": nread}), 0
        if frame.type in (p.T_CHANGES, p.T_FREEZE, p.T_THAW, p.T_STATS):
            return reply, p.encode_json(self._control(frame.type, body, owner)), 0
        raise _Request(p.E_BAD_REQUEST, f"unexpected frame type {frame.type}")

    def _control(self, ftype: int, body: dict[str, Any], owner: object) -> dict[str, object]:
        """Replies of CHANGES, FREEZE, THAW and STATS (see :mod:`scmt_cli.agent.control`)."""
        if ftype == p.T_CHANGES:
            return self.control.changes(self._disk(body), body)
        if ftype == p.T_FREEZE:
            return self.control.freeze(body, owner)
        if ftype == p.T_THAW:
            return {"thawed": self.control.thaw()}
        stats = self.control.stats(self.config.queue_depth, self.config.bandwidth)
        stats["preauth_dropped"] = self.preauth_dropped
        return stats


def _shutdown_fd(fd: int) -> None:
    """Shut the connection of socket ``fd`` down (through a duplicate: whoever owns ``fd`` sees it end)."""
    try:
        dup = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()
