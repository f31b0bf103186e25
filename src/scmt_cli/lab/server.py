"""The fake vCenter's HTTP(S) endpoint on 127.0.0.1: login, and ``/folder`` with Range.

Routes (``/sdk`` is the session path, like vCenter's):

* ``POST /sdk/login`` with JSON ``{"user": .., "password": ..}`` -> 200 and a
  ``vmware_soap_session`` cookie, or 401.  ``POST /sdk/logout`` ends it.
* ``GET /sdk`` -> 200 ``{"name": .., "version": .., "scmt_fake_vcenter": true}`` (reachability
  probe; the marker lets a client that reached the lab without ``SCMT_FAKE_VCENTER_RPC`` say so).
* ``GET|HEAD|PUT /folder/<path>?dcPath=<dc>&dsName=<ds>`` with the cookie:
  a VM disk's flat file (``vm/vm-flat.vmdk``) is served from the fake's disk
  model through ``resolve``; other files live under ``root/<ds>/<path>`` (PUT
  creates them).  ``Range: bytes=a-b`` gives 206; bad ranges 416.

TLS uses a throwaway self-signed certificate (``openssl`` CLI) so clients can
pin its thumbprint.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from scmt_cli.errors import ConfigError
from scmt_cli.vsphere.tls import cert_thumbprint

COOKIE = "vmware_soap_session"


class FileView(Protocol):
    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


Resolver = Callable[[str, str], FileView | None]  # (datastore, relative path) -> view


@dataclass
class _LocalFile:
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def read(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)


def make_self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (EC P-256); returns (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "fake-vcenter.crt", directory / "fake-vcenter.key"
    cmd = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "7", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"cannot create a certificate for the fake vCenter with openssl: {exc}") from None
    return cert, key


class FakeHttpServer:
    """Threaded HTTP(S) server; ``start()`` returns the base URL (``https://127.0.0.1:PORT``)."""

    def __init__(
        self,
        root: Path,
        resolve: Resolver,
        *,
        user: str,
        password: str,
        info: dict[str, str],
        tls: bool = True,
    ) -> None:
        self.root = root
        self.resolve = resolve
        self._user = user
        self._password = password
        self._info = info
        self._tls = tls
        self._sessions: set[str] = set()
        self._lock = threading.Lock()
        self.fail_reads = 0  # answer the next N /folder GETs with 503
        # seconds added to every /folder GET before it is answered (a host some milliseconds away, for the
        # benchmark and for tests of the parallel reads); 0 answers at once
        self.delay = 0.0
        # /folder GETs being answered right now, and the most at once (tests: do ranged reads overlap?)
        self.folder_active = 0
        self.folder_peak = 0
        # POST /sdk/rpc handler (see fakeremote): JSON request -> (HTTP status, JSON answer)
        self.rpc: Callable[[dict[str, object]], tuple[int, dict[str, object]]] | None = None
        self.requests: list[tuple[str, str]] = []  # (method, path) without query
        self.thumbprint: str | None = None
        self.cert_file: Path | None = None
        self.port = 0  # the port to listen on (127.0.0.1); 0: any free port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- sessions ----------------------------------------------------------------
    def login(self, user: str, password: str) -> str | None:
        if not (secrets.compare_digest(user, self._user) and secrets.compare_digest(password, self._password)):
            return None
        token = secrets.token_hex(16)
        with self._lock:
            self._sessions.add(token)
        return token

    def valid(self, token: str | None) -> bool:
        with self._lock:
            return token is not None and token in self._sessions

    def logout(self, token: str | None) -> None:
        with self._lock:
            self._sessions.discard(token or "")

    def expire_sessions(self) -> None:
        """Drop every session (tests: the client must log in again)."""
        with self._lock:
            self._sessions.clear()

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"owner": self})
        try:
            server = _QuietServer(("127.0.0.1", self.port), handler)
        except OSError as exc:
            raise ConfigError(f"the fake vCenter cannot listen on 127.0.0.1:{self.port}: {exc.strerror or exc}",
                              hint="choose another --port (or 0 for any free port)") from None
        server.daemon_threads = True
        scheme = "http"
        if self._tls:
            cert, key = make_self_signed(self.root / ".tls")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            # the handshake runs in the handler thread, so a stalled client blocks only itself
            server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
            self.cert_file = cert
            der = ssl.PEM_cert_to_DER_cert(cert.read_text())
            self.thumbprint = cert_thumbprint(der)
            scheme = "https"
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-vcenter-http", daemon=True)
        self._thread.start()
        return f"{scheme}://127.0.0.1:{server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return None  # a client that hangs up (e.g. after a thumbprint mismatch) is not news


class _Handler(BaseHTTPRequestHandler):
    owner: FakeHttpServer
    protocol_version = "HTTP/1.1"
    timeout = 60

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        return None  # quiet: never echo cookies or paths to stderr

    # -- helpers -----------------------------------------------------------------
    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)) if not head else (headers or {}).get("X-Len", "0"))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _token(self) -> str | None:
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value.strip('"')
        return None

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n) if n else b""

    def _folder_target(self) -> tuple[str, str] | None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        ds = (query.get("dsName") or [""])[0]
        rel = unquote(parts.path[len("/folder/") :])
        if not ds or not rel or ".." in rel.split("/"):
            return None
        return ds, rel

    # -- verbs -------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        path = urlsplit(self.path).path
        self.owner.requests.append(("POST", path))
        body = self._body()
        if path == "/sdk/login":
            try:
                data = json.loads(body or b"{}")
                token = self.owner.login(str(data.get("user", "")), str(data.get("password", "")))
            except (ValueError, AttributeError):
                token = None
            if token is None:
                self._send(401, b'{"fault": "InvalidLogin"}', {"Content-Type": "application/json"})
                return
            cookie = f'{COOKIE}="{token}"; Path=/; HttpOnly; Secure'
            self._send(200, b"{}", {"Set-Cookie": cookie, "Content-Type": "application/json"})
        elif path == "/sdk/rpc" and self.owner.rpc is not None:
            if not self.owner.valid(self._token()):
                self._send(401, b'{"fault": "NotAuthenticated"}', {"Content-Type": "application/json"})
                return
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                self._send(400)
                return
            status, answer = self.owner.rpc(request)
            self._send(status, json.dumps(answer).encode(), {"Content-Type": "application/json"})
        elif path == "/sdk/logout":
            self.owner.logout(self._token())
            self._send(200, b"{}")
        else:
            self._send(404)

    def do_GET(self) -> None:  # noqa: N802
        self._get(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._get(head=True)

    def _get(self, head: bool) -> None:
        path = urlsplit(self.path).path
        self.owner.requests.append(("HEAD" if head else "GET", path))
        if path in ("/sdk", "/sdk/"):
            info = {**self.owner._info, "scmt_fake_vcenter": True}
            self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head)
            return
        if not path.startswith("/folder/"):
            self._send(404, head=head)
            return
        if not self.owner.valid(self._token()):
            self._send(401, head=head)
            return
        target = self._folder_target()
        view = None
        if target is not None:
            view = self.owner.resolve(*target)
            local = self.owner.root / target[0] / target[1]
            if view is None and local.is_file():
                view = _LocalFile(local)
        if view is None:
            self._send(404, head=head)
            return
        if head:
            self._answer(view, head)
            return
        owner = self.owner
        with owner._lock:
            owner.folder_active += 1
            owner.folder_peak = max(owner.folder_peak, owner.folder_active)
        try:
            if owner.delay > 0:
                time.sleep(owner.delay)
            if owner.fail_reads > 0:
                owner.fail_reads -= 1
                self._send(503)
                return
            self._answer(view, head)
        finally:
            with owner._lock:
                owner.folder_active -= 1

    def _answer(self, view: FileView, head: bool) -> None:
        size = view.size
        rng = self.headers.get("Range")
        if rng is None:
            self._send(200, b"" if head else view.read(0, size), {"X-Len": str(size)}, head)
            return
        start, end = _parse_range(rng, size)
        if start is None or end is None:
            self._send(416, headers={"Content-Range": f"bytes */{size}"}, head=head)
            return
        body = b"" if head else view.read(start, end - start + 1)
        headers = {"Content-Range": f"bytes {start}-{end}/{size}", "X-Len": str(end - start + 1)}
        self._send(206, body, headers, head)

    def do_PUT(self) -> None:  # noqa: N802
        self.owner.requests.append(("PUT", urlsplit(self.path).path))
        if not self.owner.valid(self._token()):
            self._body()
            self._send(401)
            return
        target = self._folder_target()
        data = self._body()
        if target is None or self.owner.resolve(*target) is not None:
            self._send(403 if target else 400)  # VM disks are locked like on a real datastore
            return
        dest = self.owner.root / target[0] / target[1]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        self._send(201)


def _parse_range(header: str, size: int) -> tuple[int | None, int | None]:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> inclusive (start, end); (None, None) if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None, None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            start, end = max(0, size - n), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
    except ValueError:
        return None, None
    end = min(end, size - 1)
    if start > end or start >= size:
        return None, None
    return start, end
