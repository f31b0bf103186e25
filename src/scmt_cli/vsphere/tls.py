"""TLS for vCenter connections: verified by default, pinned thumbprints, clear errors.

* :func:`make_ssl_context` builds the one context used for SOAP (pyvmomi) and
  for ``/folder`` reads (httpx): the system CA store, or ``ca_file``, or a
  pinned SHA-256 certificate thumbprint (checked on every handshake, before any
  credential is sent), or, only when asked, no verification at all.
* :func:`classify_connect_error` turns a low-level exception into the exit-code
  carrying error a user sees (TLS 12, unreachable 10).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from typing import Any

from scmt_cli.errors import ConfigError, ScmtError, SourceUnreachableError, TLSVerificationError


class ThumbprintMismatch(ssl.SSLError):
    """The server's certificate does not have the pinned SHA-256 thumbprint."""


def normalize_thumbprint(text: str) -> str:
    """``"aa:bb..."``/``"AABB.."``/``"sha256:aa bb"`` -> ``"AA:BB:..."`` (32 bytes); ConfigError otherwise."""
    raw = text.strip()
    if raw.lower().startswith("sha256:"):
        raw = raw[7:]
    hexdigits = "".join(c for c in raw if c not in ": -").upper()
    if any(c not in "0123456789ABCDEF" for c in hexdigits) or len(hexdigits) % 2:
        raise ConfigError(f"thumbprint {text!r} is not hexadecimal")
    if len(hexdigits) == 40:
        raise ConfigError(
            "a SHA-1 thumbprint was given; scmt pins SHA-256 thumbprints",
            hint="openssl s_client -connect HOST:443 </dev/null | openssl x509 -noout -fingerprint -sha256",
        )
    if len(hexdigits) != 64:
        raise ConfigError(f"thumbprint {text!r} is not a SHA-256 fingerprint (32 bytes)")
    return ":".join(hexdigits[i : i + 2] for i in range(0, 64, 2))


def cert_thumbprint(der: bytes) -> str:
    """SHA-256 thumbprint of a DER certificate, ``AA:BB:..`` spelling."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


class PinnedContext(ssl.SSLContext):
    """A client context that accepts exactly one certificate, by SHA-256 thumbprint.

    Chain and hostname checks are replaced by the pin (the usual vCenter case:
    a self-signed or VMCA certificate the operator has verified out of band).
    The check runs right after the handshake, before any byte is sent.
    """

    pinned: str = ""

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        wrapped = super().wrap_socket(sock, *args, **kwargs)
        if kwargs.get("do_handshake_on_connect", True) is False:
            wrapped.do_handshake()
        der = wrapped.getpeercert(binary_form=True)
        got = cert_thumbprint(der) if der else "none"
        if got != self.pinned:
            wrapped.close()
            raise ThumbprintMismatch(f"certificate thumbprint {got} does not match the pinned {self.pinned}")
        return wrapped


def make_ssl_context(*, thumbprint: str | None, ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    """The client TLS context for these settings (see module doc for the precedence)."""
    if thumbprint:
        pinned = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
        pinned.check_hostname = False
        pinned.verify_mode = ssl.CERT_NONE
        pinned.pinned = normalize_thumbprint(thumbprint)
        return pinned
    if insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context()
    if ca_file:
        for path in ca_file.split(os.pathsep):
            if not path:
                continue
            try:
                if os.path.isdir(path):
                    ctx.load_verify_locations(capath=path)
                else:
                    ctx.load_verify_locations(cafile=path)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load CA certificates from {path}: {exc}") from None
    return ctx


def server_thumbprint(host: str, port: int, timeout: float = 10.0) -> str:
    """Fetch the server certificate's SHA-256 thumbprint without verifying it (to show it to a user)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise classify_connect_error(exc, f"{host}:{port}") from None
    return cert_thumbprint(der or b"")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def classify_connect_error(exc: BaseException, where: str) -> ScmtError:
    """Map a connection failure to TLSVerificationError (12) or SourceUnreachableError (10)."""
    for e in _chain(exc):
        if isinstance(e, ScmtError):
            return e
        if isinstance(e, ThumbprintMismatch):
            return TLSVerificationError(
                f"{where}: {e.args[0] if e.args else 'thumbprint mismatch'}",
                hint="check the thumbprint with the vCenter administrator; never pin an unverified one",
            )
        if isinstance(e, ssl.SSLCertVerificationError):
            return TLSVerificationError(
                f"{where}: certificate not trusted ({e.verify_message or e.reason})",
                hint="pass --vcenter-thumbprint SHA256, a CA file (ca_file / GOVC_TLS_CA_CERTS), "
                     "or --insecure (GOVC_INSECURE=1) for a lab",
            )
        if isinstance(e, ssl.SSLError):
            return TLSVerificationError(f"{where}: TLS handshake failed ({e.reason or e})")
    for e in _chain(exc):
        if isinstance(e, socket.gaierror):
            return SourceUnreachableError(f"{where}: host name does not resolve")
        if isinstance(e, ConnectionRefusedError):
            return SourceUnreachableError(f"{where}: connection refused")
        if isinstance(e, TimeoutError | socket.timeout):
            return SourceUnreachableError(f"{where}: connection timed out")
        if isinstance(e, OSError):
            return SourceUnreachableError(f"{where}: {e.strerror or type(e).__name__}")
    detail = " ".join(str(exc).split())[:200]
    return SourceUnreachableError(
        f"{where}: {type(exc).__name__}" + (f": {detail}" if detail else ""),
        hint="check that the URL is a vCenter or ESXi SDK endpoint (https://HOST/sdk)",
    )
