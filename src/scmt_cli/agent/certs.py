"""The agent's own TLS key and certificate, made at first start (TLS is the agent's default).

:func:`ensure_identity` returns ``(cert, key, created)`` for ``directory``: an
existing ``agent-tls.crt``/``agent-tls.key`` pair is reused; otherwise a P-256
key and a self-signed certificate (CN ``scmt-agent``, 10 years) are made with
the ``openssl`` command line, both files mode 0600 from the start (umask).
Clients do not need a CA: the plan pins the certificate's SHA-256
(``agent.fingerprint``), which :func:`fingerprint` computes.

The ``openssl`` CLI is used rather than a Python library so the agent, which
runs on production machines, needs no compiled dependency; when it is missing
the ``cryptography`` package is used if it happens to be installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
from pathlib import Path

from scmt_cli.errors import ConfigError

CERT_NAME = "agent-tls.crt"
KEY_NAME = "agent-tls.key"


def fingerprint(cert: Path) -> str:
    """SHA-256 (hex) of the first certificate of a PEM file: what the plan's ``agent.fingerprint`` pins."""
    try:
        text = cert.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS certificate {cert}: {exc.strerror}") from None
    start = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        raise ConfigError(f"{cert}: no PEM certificate in it")
    der = ssl.PEM_cert_to_DER_cert(text[start : end + len("-----END CERTIFICATE-----")])
    return hashlib.sha256(der).hexdigest()


def _with_openssl(cert: Path, key: Path) -> str:
    exe = shutil.which("openssl")
    if exe is None:
        return "openssl is not installed"
    args = [exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
            "-subj", "/CN=scmt-agent", "-keyout", str(key), "-out", str(cert)]
    res = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    return "" if res.returncode == 0 else f"openssl failed: {res.stderr.strip()[-300:]}"


def _with_cryptography(cert: Path, key: Path) -> str:
    try:
        import datetime as dt

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return "the cryptography package is not installed either"
    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scmt-agent")])
    now = dt.datetime.now(dt.UTC)
    crt = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pk.public_key())
           .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
           .not_valid_after(now + dt.timedelta(days=3650)).sign(pk, hashes.SHA256()))
    key.write_bytes(pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    cert.write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    return ""


def ensure_identity(directory: Path) -> tuple[Path, Path, bool]:
    """The agent's certificate and key in ``directory`` (made now if absent): ``(cert, key, created)``."""
    cert, key = directory / CERT_NAME, directory / KEY_NAME
    if cert.exists() and key.exists():
        return cert, key, False
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create {directory} for the agent's TLS key: {exc.strerror}") from None
    old = os.umask(0o077)
    try:
        why = _with_openssl(cert, key)
        if why:
            why2 = _with_cryptography(cert, key)
            if why2:
                raise ConfigError(f"cannot make the agent's TLS certificate: {why}; {why2}",
                                  hint="install openssl, or give --tls-cert/--tls-key")
    finally:
        os.umask(old)
    for f in (cert, key):
        f.chmod(0o600)
    return cert, key, True
