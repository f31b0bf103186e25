"""``scmt agent serve``: open the disks, check the token, serve until stopped.

TLS is the default: without ``--tls-cert``/``--tls-key`` the agent uses its own
key and self-signed certificate, made at first start beside its token (or in
``--tls-dir``; :mod:`scmt_cli.agent.certs`), and logs the certificate's SHA-256
for the plan to pin (``agent.fingerprint``).  Plain TCP only with
``--plaintext``, and then a warning at every start.  A token file that group or
others may read is refused (as ssh refuses such a private key) unless
``--allow-open-token-file``.

:func:`serve_agent` blocks until ``stop`` is set (tests) or the process is
interrupted (Ctrl-C or SIGTERM: a normal stop, exit 0); the server is always
stopped and its disks closed.  The token is read once and kept only in the
server's memory; it is never logged.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.agent.disks import ServedDisk, parse_disk_arg
from scmt_cli.agent.limits import DEFAULT_CPU_LIMIT, DEFAULT_STORAGE_SHARE
from scmt_cli.agent.server import AgentConfig, AgentServer
from scmt_cli.agent.transport import load_token
from scmt_cli.errors import ConfigError, UsageError
from scmt_cli.events import Reporter

TOKEN_ENV = "SCMT_AGENT_TOKEN"  # noqa: S105 - the name of a variable, not a secret
DEFAULT_PORT = 20000
#: The seed's agent port range.
PORT_RANGE = (20000, 20047)


@dataclass(frozen=True)
class ServeRequest:
    """``listen`` is ``HOST:PORT``; ``disks`` are ``NAME=PATH``; ``bandwidth`` bytes/s (None: unlimited)."""

    listen: str
    disks: tuple[str, ...]
    token_file: Path | None = None
    queue_depth: int = 4
    bandwidth: float | None = None
    compress: bool = True
    max_connections: int = 16
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_dir: Path | None = None
    plaintext: bool = False
    allow_open_token_file: bool = False
    tracking: bool = True
    cpu_limit: float = DEFAULT_CPU_LIMIT  # percent of one CPU; 100: no limit
    storage_share: float = DEFAULT_STORAGE_SHARE  # percent of the time the agent's reads may be in flight


@dataclass
class ServeResult:
    address: str
    disks: list[dict[str, Any]]
    auth_failures: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "disks": self.disks, "auth_failures": self.auth_failures,
                "warnings": list(self.warnings)}


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); a bad value is a UsageError."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {listen!r}: expected HOST:PORT, e.g. 0.0.0.0:{DEFAULT_PORT}")
    return host.strip("[]"), int(port)


def build_config(req: ServeRequest, env: dict[str, str] | None = None) -> AgentConfig:
    """Check the request and open the disks (the caller closes them through the server)."""
    host, port = split_listen(req.listen)
    if not req.disks:
        raise UsageError("give at least one --disk NAME=PATH to serve")
    environ = dict(os.environ) if env is None else env
    if req.token_file is not None:
        check_token_mode(req.token_file, req.allow_open_token_file)
        token = load_token(token_file=req.token_file, where="agent")
    elif TOKEN_ENV in environ:
        token = load_token(token_env=TOKEN_ENV, env=environ, where="agent")
    else:
        raise ConfigError("the agent refuses to start without a token",
                          hint=f"give --token-file FILE or set {TOKEN_ENV} (at least 16 bytes)")
    if req.queue_depth < 1 or req.queue_depth > 64:
        raise UsageError(f"--queue-depth {req.queue_depth}: expected 1 to 64")
    names = [parse_disk_arg(d) for d in req.disks]
    dup = {n for n, _ in names if [m for m, _ in names].count(n) > 1}
    if dup:
        raise UsageError(f"--disk {sorted(dup)[0]!r} is given twice")
    opened: dict[str, ServedDisk] = {}
    try:
        for name, path in names:
            opened[name] = ServedDisk(name, path)
    except BaseException:
        for d in opened.values():
            d.close()
        raise
    try:
        tls, fp, created = _tls(req, environ)
        for name, value in (("--cpu-limit", req.cpu_limit), ("--storage-share", req.storage_share)):
            if not 0 < value <= 100:
                raise UsageError(f"{name} {value}: expected a percentage above 0 and at most 100")
    except BaseException:
        for d in opened.values():
            d.close()
        raise
    bw = req.bandwidth if req.bandwidth and req.bandwidth != float("inf") else None
    config = AgentConfig(host, port, opened, token, queue_depth=req.queue_depth, bandwidth=bw,
                         max_connections=req.max_connections, compress=req.compress, tls=tls,
                         tracking=req.tracking, cpu_share=req.cpu_limit / 100,
                         storage_share=req.storage_share / 100)
    config.tls_fingerprint, config.tls_created = fp, created
    return config


def check_token_mode(path: Path, allow_open: bool) -> None:
    """Refuse a token file that group or others may read or write (unless ``allow_open``)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"agent: cannot read the token file {path}: {exc.strerror}") from None
    if mode & 0o077 and not allow_open:
        raise ConfigError(f"agent: the token file {path} is accessible by group or others (mode "
                          f"{mode & 0o777:04o}); it must be private",
                          hint=f"chmod 600 {path} (or start with --allow-open-token-file)")


def tls_dir(req: ServeRequest, environ: dict[str, str]) -> Path:
    """Where the agent's own key and certificate live: --tls-dir, beside the token file, or the config dir."""
    if req.tls_dir is not None:
        return req.tls_dir
    if req.token_file is not None:
        return req.token_file.resolve().parent
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "/root")) / ".config")
    return Path(base) / "scmt" / "agent"


def _tls(req: ServeRequest, environ: dict[str, str]) -> tuple[ssl.SSLContext | None, str | None, bool]:
    """The server's TLS context, its certificate's fingerprint and whether it was made now."""
    from scmt_cli.agent.certs import ensure_identity, fingerprint

    if req.plaintext:
        if req.tls_cert is not None or req.tls_key is not None:
            raise UsageError("--plaintext and --tls-cert/--tls-key exclude each other")
        return None, None, False
    created = False
    cert, key = req.tls_cert, req.tls_key
    if cert is None and key is None:
        cert, key, created = ensure_identity(tls_dir(req, environ))
    ctx = server_tls_context(cert, key)
    assert cert is not None
    return ctx, fingerprint(cert), created


def server_tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A TLS 1.2+ server context from ``--tls-cert``/``--tls-key`` (both or neither)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("give both --tls-cert and --tls-key (or neither)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: cannot load: {exc}") from None
    return ctx


def cert_fingerprint(cert: Path) -> str:
    """SHA-256 (hex) of the first certificate of a PEM file: what ``fingerprint=`` pins."""
    from scmt_cli.agent.certs import fingerprint

    return fingerprint(cert)


def _announce(config: AgentConfig, req: ServeRequest, reporter: Reporter, port: int) -> None:
    """What a started agent says once: its TLS fingerprint (or that it serves plaintext), an unusual port."""
    fp = config.tls_fingerprint
    if fp is not None:
        if config.tls_created or req.tls_cert is not None:
            reporter.log("info", f"agent TLS certificate SHA-256 fingerprint: {fp} (pin it in the plan: "
                         f"agent.fingerprint: {fp}; in a URL: fingerprint={fp})")
        else:
            reporter.log("debug", f"agent TLS certificate SHA-256 fingerprint: {fp}")
        reporter.event("agent_tls", fingerprint=fp, created=config.tls_created)
    else:
        reporter.log("warning", "agent: PLAINTEXT (--plaintext): disk data crosses the network unencrypted and "
                     "is protected only by checksums (the token itself never crosses it); drop --plaintext to "
                     "serve TLS")
    if not PORT_RANGE[0] <= port <= PORT_RANGE[1]:
        reporter.log("debug", f"port {port} is outside the usual agent range {PORT_RANGE[0]}-{PORT_RANGE[1]}")


def serve_agent(req: ServeRequest, reporter: Reporter, *, stop: threading.Event | None = None) -> ServeResult:
    """Serve until ``stop`` is set or the process is interrupted; see the module doc."""
    config = build_config(req)
    server = AgentServer(config, reporter)
    host, port = config.host, config.port  # until start() has bound the socket
    try:
        # A stop request may come at any moment from here on (SIGTERM while binding or logging too):
        # it ends the agent normally, never as an interruption.
        try:
            host, port = server.start()
            _announce(config, req, reporter, port)
            if stop is None:
                server.serve_forever()
            else:
                stop.wait()
        except BaseException as exc:
            # Ctrl-C, or SIGTERM (the CLI raises its TerminatedSignal): a normal way to stop a server.
            if not isinstance(exc, KeyboardInterrupt) and type(exc).__name__ != "TerminatedSignal":
                raise
            how = "SIGINT" if isinstance(exc, KeyboardInterrupt) else "SIGTERM"
            reporter.log("info", f"agent: stop requested ({how})")
    finally:
        server.stop()
        reporter.log("info", "agent stopped")
    return ServeResult(f"{host}:{port}", [{"name": d.name, "size": d.size} for d in config.disks.values()],
                       auth_failures=server.auth_failures)
