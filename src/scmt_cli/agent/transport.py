"""``agent://host:port/DISK``: a read-only BlockSource served by ``scmt agent serve``.

URL query parameters (exactly one token reference is required; the token
itself never appears in a URL)::

    agent://web01:20000/sda?token_file=/etc/scmt/web01.token
    agent://web01:20000/sda?token_env=SCMT_AGENT_TOKEN
    agent://web01:20000/sda?token_file=t&fingerprint=SHA256HEX   (TLS, certificate pinned)
    agent://web01:20000/sda?token_file=t&ca_file=/etc/scmt/ca.pem (TLS, CA-verified)
    agent://web01:20000/sda?token_file=t&plaintext=1             (an agent started with --plaintext)

The agent serves TLS by default, so one of ``fingerprint`` (what ``scmt agent
serve`` logs), ``ca_file`` or ``plaintext=1`` is required.

The source is thread-safe: several requests are pipelined on one
connection.  Optional capabilities beyond the contract:

* :meth:`AgentDisk.remote_digests` - the agent's per-chunk digests (same
  algorithm and grid as :mod:`scmt_cli.blocks.digest`), so an incremental
  copy reads only chunks whose digest differs;
* :meth:`AgentDisk.wire_stats` - DATA bytes received on the wire vs the
  bytes they decoded to (zstd compression), and ``source_bytes_read``: the
  bytes the agent read from the disk to find (digests) and send (reads) data;
* :meth:`AgentDisk.tracked_changes` - the agent's kernel change tracking
  (chunks written since a cursor, see :mod:`scmt_cli.agent.tracking`);
* :meth:`AgentDisk.freeze` / :meth:`AgentDisk.thaw`;
* :meth:`AgentDisk.agent_usage` - what the agent used since the disk was
  opened (CPU seconds, bytes read, pauses for its limits, peak RSS), also
  in :meth:`AgentDisk.stats` as ``agent``.

Opening it as a target raises ReadOnlyTargetError: the agent never writes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from scmt_cli.agent import protocol as p
from scmt_cli.agent.client import AgentConnection, ClientTLS
from scmt_cli.agent.limits import usage_since
from scmt_cli.errors import (
    ConfigError,
    ReadOnlyTargetError,
    ScmtError,
    SizeMismatchError,
    TransportError,
    UsageError,
    redact_url,
)
from scmt_cli.secretfile import read_secret_file
from scmt_cli.transports.base import BlockTarget, Extent, ExtentKind, Identity, Scheme, SourceDefaults, register

DEFAULT_PORT = 20000
#: Disk bytes one DIGESTS request covers (64 chunks of 4 MiB): at the default 30% storage share a source
#: disk reading 10 MiB/s answers in about 85 s, well within the client's reply timeout (300 s).
DIGEST_BATCH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class TrackedChanges:
    """Answer of :meth:`AgentDisk.tracked_changes`: ``cursor`` None when the disk is not tracked;
    ``changed`` None when the caller must compare digests (``reason`` says why)."""

    cursor: dict[str, Any] | None
    changed: list[int] | None
    reason: str
_EXAMPLE = "use agent://host:port/DISK?token_file=PATH (or ?token_env=NAME)"


@dataclass(frozen=True)
class AgentAddress:
    host: str
    port: int
    disk: str
    token_file: str | None = None
    token_env: str | None = None
    fingerprint: str | None = None
    ca_file: str | None = None
    plaintext: bool = False

    @property
    def tls(self) -> ClientTLS | None:
        return ClientTLS(self.fingerprint, self.ca_file) if self.fingerprint or self.ca_file else None

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"agent://{host}:{self.port}/{quote(self.disk)}"


def parse_agent_url(url: str) -> AgentAddress:
    """Parse ``url``; anything malformed is a UsageError naming the (redacted) URL."""
    def bad(why: str) -> UsageError:
        return UsageError(f"malformed agent URL {redact_url(url)!r}: {why}", hint=_EXAMPLE)

    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parts.scheme != "agent":
        raise bad("the scheme must be agent://")
    if parts.username is not None or parts.password is not None:
        raise bad("agent URLs take no user name or password (give the token by token_file or token_env)")
    if not parts.hostname:
        raise bad("no host")
    disk = unquote(parts.path.lstrip("/"))
    if not disk or "/" in disk:
        raise bad("the path must name one disk the agent serves, e.g. /sda")
    try:
        query = parse_qs(parts.query, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise bad(str(exc)) from None
    unknown = set(query) - {"token_file", "token_env", "fingerprint", "ca_file", "plaintext"}
    if unknown:
        raise bad(f"unknown parameter {sorted(unknown)[0]!r} (known: token_file, token_env, fingerprint, ca_file, "
                  "plaintext)")
    if any(len(v) != 1 for v in query.values()):
        raise bad("each parameter may be given once")
    tf, te = query.get("token_file", [None])[0], query.get("token_env", [None])[0]
    if (tf is None) == (te is None):
        raise bad("give exactly one of token_file and token_env")
    fp, ca = query.get("fingerprint", [None])[0], query.get("ca_file", [None])[0]
    if fp is not None and not re.fullmatch(r"[0-9a-fA-F]{64}|([0-9a-fA-F]{2}:){31}[0-9a-fA-F]{2}", fp):
        raise bad("fingerprint must be the certificate's SHA-256 in hex (64 digits, colons optional)")
    plain = query.get("plaintext", [None])[0]
    if plain is not None and plain not in ("1", "true", "yes"):
        raise bad("plaintext takes 1 (plain TCP to an agent started with --plaintext)")
    if plain is not None and (fp is not None or ca is not None):
        raise bad("plaintext excludes fingerprint and ca_file")
    if plain is None and fp is None and ca is None:
        raise bad("the agent serves TLS: give fingerprint= (the SHA-256 `scmt agent serve` logs) or ca_file= "
                  "(plaintext=1 only for an agent started with --plaintext)")
    return AgentAddress(parts.hostname, port, disk, tf, te, fp, ca, plain is not None)


def load_token(*, token_file: str | Path | None = None, token_env: str | None = None,
               env: Mapping[str, str] | None = None, where: str = "agent") -> bytes:
    """The token bytes (surrounding whitespace stripped); a missing/short one is a ConfigError without the value."""
    environ = os.environ if env is None else env
    if token_file is not None:
        raw = read_secret_file(token_file, where, "token file").strip()  # a regular file of at most 64 KiB
        origin = f"token file {token_file}"
    elif token_env is not None:
        value = environ.get(token_env)
        if value is None:
            raise ConfigError(f"{where}: environment variable {token_env} (the agent token) is not set")
        raw = value.strip().encode("utf-8")
        origin = f"environment variable {token_env}"
    else:
        raise ConfigError(f"{where}: no agent token given", hint="use a token file or token variable")
    if len(raw) < p.MIN_TOKEN_BYTES:
        raise ConfigError(f"{where}: the token in {origin} is shorter than {p.MIN_TOKEN_BYTES} bytes")
    return raw


class AgentDisk(SourceDefaults):
    """One disk of an agent (read-only BlockSource; thread-safe)."""

    def __init__(self, host: str, port: int, disk: str, token: bytes, *, where: str | None = None,
                 compress: bool = True, tls: ClientTLS | None = None) -> None:
        self._where = where or AgentAddress(host, port, disk).describe()
        self.disk = disk
        self.compress = compress
        self._conn = AgentConnection(host, port, token, where=self._where, tls=tls)
        try:
            listing = self._conn.json(p.T_LIST, {})
            sizes = {str(d.get("name")): int(d.get("size", 0)) for d in listing.get("disks", [])}
            ids = {str(d.get("name")): d.get("id") for d in listing.get("disks", [])}
            self._usage0 = self._conn.json(p.T_STATS, {})  # the baseline of agent_usage()
        except BaseException:
            self._conn.close()
            raise
        if disk not in sizes:
            self._conn.close()
            raise UsageError(f"{self._where}: the agent serves no disk named {disk!r} "
                             f"(it serves: {', '.join(sorted(sizes)) or 'none'})")
        self._size = sizes[disk]
        raw_id = ids.get(disk)
        self._device = {str(k): int(v) for k, v in raw_id.items() if isinstance(v, int)} \
            if isinstance(raw_id, dict) else {}
        self.disks = sizes
        self._digest_bytes = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def thread_safe(self) -> bool:
        return True

    @property
    def read_only(self) -> bool:
        return True

    def describe(self) -> str:
        return self._where

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise SizeMismatchError(f"{self._where}: range {offset}+{length} is past the end of the disk "
                                    f"({self._size} bytes)")

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        parts: list[bytes] = []
        pos, end = offset, offset + length
        while pos < end:
            n = min(p.MAX_READ, end - pos)
            parts.append(self._conn.read(self.disk, pos, n, compress=self.compress))
            pos += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, offset: int, buf: memoryview) -> None:
        buf[:] = self.read(offset, len(buf))

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        if length is None:
            length = self._size - offset
        self._check(offset, length)
        pos, end = offset, offset + length
        step = 64 * 1024 * 1024 * 1024
        while pos < end:
            n = min(step, end - pos)
            body = self._conn.json(p.T_EXTENTS, {"disk": self.disk, "offset": pos, "length": n})
            cursor = pos
            for item in body.get("extents", []):
                o, ln, kind = int(item[0]), int(item[1]), str(item[2])
                if o != cursor or ln <= 0 or kind not in ("data", "hole", "zero"):
                    raise SizeMismatchError(f"{self._where}: the agent's allocation map is inconsistent")
                ek: ExtentKind = "data" if kind == "data" else ("hole" if kind == "hole" else "zero")
                yield Extent(o, ln, ek)
                cursor += ln
            if cursor != pos + n:
                raise SizeMismatchError(f"{self._where}: the agent's allocation map does not cover the range")
            pos += n

    def remote_digests(self, chunk_size: int, batch_bytes: int = DIGEST_BATCH_BYTES) -> list[str]:
        """The agent's digest of every chunk on the ``chunk_size`` grid (``"0"`` for all-zero chunks).

        One DIGESTS request covers ``batch_bytes`` of the disk: the agent reads it at its storage share,
        and a slow source disk must still answer one request well within the reply timeout.
        """
        count = -(-self._size // chunk_size) if self._size else 0
        batch = max(1, batch_bytes // chunk_size)
        out: list[str] = []
        while len(out) < count:
            n = min(batch, count - len(out))
            body = self._conn.json(p.T_DIGESTS, {"disk": self.disk, "chunk_size": chunk_size,
                                                 "start": len(out), "count": n})
            got = body.get("digests", [])
            if not isinstance(got, list) or len(got) != n or not all(isinstance(d, str) for d in got):
                raise SizeMismatchError(f"{self._where}: the agent returned {len(got)} digests, {n} expected")
            nread = body.get("bytes_read")
            if not isinstance(nread, int) or isinstance(nread, bool) or nread < 0:
                raise TransportError(f"{self._where}: the agent's DIGESTS reply has no valid bytes_read")
            self._digest_bytes += nread
            out.extend(got)
        return out

    def tracked_changes(self, chunk_size: int, cursor: dict[str, Any] | None) -> TrackedChanges:
        """The chunks written since ``cursor`` (None: start tracking), and the new cursor."""
        body: dict[str, Any] = {"disk": self.disk, "chunk_size": chunk_size}
        if cursor:
            body.update(epoch=cursor.get("epoch"), seq=cursor.get("seq"))
        reply = self._conn.json(p.T_CHANGES, body)
        if not reply.get("tracking"):
            return TrackedChanges(None, None, str(reply.get("reason") or "not tracked")[:300])
        new = {"epoch": str(reply.get("epoch")), "seq": int(reply.get("seq", 0))}
        raw = reply.get("changed")
        if raw is None:
            return TrackedChanges(new, None, str(reply.get("reason") or "")[:300])
        changed: list[int] = []
        count = -(-self._size // chunk_size)
        for item in raw if isinstance(raw, list) else [None]:
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, int) for x in item)
                    and item[0] >= 0 and item[1] > 0 and item[0] + item[1] <= count):
                raise TransportError(f"{self._where}: malformed CHANGES reply from the agent", transient=True)
            changed.extend(range(item[0], item[0] + item[1]))
        return TrackedChanges(new, changed, "")

    def freeze(self, limit: float) -> dict[str, Any]:
        """Ask the agent to sync and freeze the file systems on its disks for at most ``limit`` seconds."""
        return self._conn.json(p.T_FREEZE, {"limit": limit})

    def thaw(self) -> list[str]:
        return list(self._conn.json(p.T_THAW, {}).get("thawed", []))

    def agent_stats(self) -> dict[str, Any]:
        """The agent's ``STATS`` reply: its totals since it started (peak RSS, CPU seconds, bytes read from its
        disks, seconds paused per limit) and its limits."""
        return self._conn.json(p.T_STATS, {})

    def agent_usage(self) -> dict[str, Any]:
        """What the agent used since this disk was opened (:func:`~scmt_cli.agent.limits.usage_since`)."""
        return usage_since(self._usage0, self.agent_stats())

    def identity(self) -> Identity:
        """The disk's name, size and the device (or file) the agent serves under that name.

        That is what the agent can prove: a resumed copy still reads the same device.  A live disk
        changes while it is read, so its content is not sampled (``stable=False``).
        """
        return Identity({"disk": self.disk, "size": self._size, **self._device}, stable=False)

    def stats(self) -> dict[str, Any]:
        """The interface's transport counters: :meth:`wire_stats`, and ``agent``: :meth:`agent_usage` (left
        out when the agent does not answer; the copy is not failed for a figure)."""
        out: dict[str, Any] = dict(self.wire_stats())
        try:
            out["agent"] = self.agent_usage()
        except ScmtError:
            pass
        return out

    def wire_stats(self) -> dict[str, int]:
        """DATA bytes received (``bytes_on_wire``, ``bytes_of_data``) and ``source_bytes_read`` so far."""
        return {"bytes_on_wire": self._conn.wire_bytes, "bytes_of_data": self._conn.data_bytes,
                "source_bytes_read": self._conn.data_bytes + self._digest_bytes}

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AgentDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_agent_source(url: str, **options: Any) -> AgentDisk:
    """Factory of the ``agent://`` scheme (``token=`` bytes may be passed by services)."""
    addr = parse_agent_url(url)
    token = options.get("token")
    if not isinstance(token, bytes):
        token = load_token(token_file=addr.token_file, token_env=addr.token_env, where=addr.describe())
    return AgentDisk(addr.host, addr.port, addr.disk, token, where=addr.describe(), tls=addr.tls)


def open_agent_target(url: str, **options: Any) -> BlockTarget:
    parse_agent_url(url)
    raise ReadOnlyTargetError(f"{redact_url(url)}: the scmt agent serves disks read-only; it cannot be a target")


__all__ = ["AgentAddress", "AgentDisk", "load_token", "open_agent_source", "parse_agent_url"]

register(Scheme("agent", open_agent_source, open_agent_target,
                help="agent://host:port/DISK?token_file=PATH - a disk served read-only by `scmt agent serve`"))
