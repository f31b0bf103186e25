"""Connection settings: precedence, govc fallbacks, TLS outcomes, and no secret leaks."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from scmt_cli.errors import (
    AuthenticationError,
    ConfigError,
    SourceUnreachableError,
    TLSVerificationError,
    UsageError,
)
from scmt_cli.events import RecordingReporter
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.lab.vcenter import FakeVCenter
from scmt_cli.vsphere.settings import resolve_settings
from scmt_cli.vsphere.tls import normalize_thumbprint, server_thumbprint

from .conftest import fake_settings

PIN = ":".join(["AB"] * 32)


def test_cli_beats_plan_beats_env_beats_govc(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    env = {"GOVC_URL": "https://gu:gp@govc.example:8443/sdk", "SCMT_VCENTER_PASSWORD": "from-env"}
    s = resolve_settings(url="vc.example", user="cli", password_file=str(pw), env=env)
    assert (s.host, s.port, s.path, s.user, s.password) == ("vc.example", 443, "/sdk", "cli", "from-file")
    assert not s.insecure and s.thumbprint is None
    s = resolve_settings(source={"vcenter": "https://plan.example/sdk", "user": "p", "password_env": "MYPW"},
                         env={**env, "MYPW": "plan-pw"})  # fmt: skip
    assert (s.host, s.user, s.password) == ("plan.example", "p", "plan-pw")
    s = resolve_settings(source={"vcenter": "plan.example", "user": "p"}, env=env)
    assert s.password == "from-env"
    s = resolve_settings(env={"GOVC_URL": "https://gu:g%40p@govc.example:8443/sdk"})
    assert (s.host, s.port, s.user, s.password) == ("govc.example", 8443, "gu", "g@p")
    s = resolve_settings(
        env={
            "GOVC_URL": "govc.example",
            "GOVC_USERNAME": "u",
            "GOVC_PASSWORD": "p",
            "GOVC_INSECURE": "1",
            "GOVC_TLS_CA_CERTS": "/etc/ca.pem",
        }  # fmt: skip
    )
    assert s.insecure and s.ca_file == "/etc/ca.pem" and s.user == "u"


def test_plan_relative_files_and_pins(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("pw")
    s = resolve_settings(
        source={
            "vcenter": "vc",
            "user": "u",
            "password_file": "secret",
            "ca_file": "ca.pem",
            "thumbprint": PIN.lower(),
        },
        base_dir=tmp_path,
    )
    assert s.password == "pw" and s.ca_file == str(tmp_path / "ca.pem") and s.thumbprint == PIN
    s = resolve_settings(source={"vcenter": "vc", "user": "u", "insecure": True, "thumbprint": PIN}, env={"X": "1"},
                         password_file=str(tmp_path / "secret"))  # fmt: skip
    assert not s.insecure  # a pin makes insecure pointless


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({}, ConfigError, "no vCenter given"),
        ({"url": "vc"}, ConfigError, "no user name"),
        ({"url": "vc", "user": "u"}, ConfigError, "no password for u@vc"),
        ({"url": "http://vc", "user": "u"}, UsageError, "plain http"),
        ({"url": "ftp://vc", "user": "u"}, UsageError, "not supported"),
        ({"url": "vc", "user": "u", "password_file": "/nonexistent/pw"}, ConfigError, "cannot read the password file"),
        ({"source": {"vcenter": "vc", "user": "u", "password_env": "NOPE"}}, ConfigError, "NOPE, which is not set"),
        ({"source": {"vcenter": "vc", "usr": "u"}}, ConfigError, "unknown connection keys usr"),
        (
            {"url": "vc", "user": "u", "thumbprint": "AB:CD", "env": {"SCMT_VCENTER_PASSWORD": "x"}},
            ConfigError,
            "SHA-256",
        ),
    ],
)
def test_bad_settings(kwargs: dict, error: type, needle: str) -> None:
    with pytest.raises(error, match=needle):
        resolve_settings(**kwargs)


def test_sha1_thumbprint_refused() -> None:
    with pytest.raises(ConfigError, match="SHA-1"):
        normalize_thumbprint(":".join(["AA"] * 20))
    assert normalize_thumbprint("sha256:" + "ab" * 32) == PIN


def test_repr_hides_password() -> None:
    s = resolve_settings(url="https://u:Sup3rSecret@vc/sdk")
    assert "Sup3rSecret" not in repr(s) and "Sup3rSecret" not in str(s) and "Sup3rSecret" not in s.url


def test_pinned_thumbprint_right_wrong_and_fetched(estate: FakeEstate) -> None:
    host, port = estate.base_url.split("://")[1].rsplit(":", 1)
    assert server_thumbprint(host, int(port)) == estate.http.thumbprint
    FakeVCenter(estate, fake_settings(estate)).connect()
    wrong = FakeVCenter(estate, fake_settings(estate, thumbprint=PIN))
    with pytest.raises(TLSVerificationError, match="does not match the pinned"):
        wrong.connect()
    logins = [r for r in estate.http.requests if r == ("POST", "/sdk/login")]
    assert len(logins) == 1  # the refused connection never sent credentials


def test_untrusted_certificate_ca_file_and_insecure(estate: FakeEstate) -> None:
    with pytest.raises(TLSVerificationError, match="certificate not trusted"):
        FakeVCenter(estate, fake_settings(estate, thumbprint=None)).connect()
    ok = FakeVCenter(estate, fake_settings(estate, thumbprint=None, ca_file=str(estate.http.cert_file)))
    ok.connect()
    ok.close()
    rep = RecordingReporter()
    FakeVCenter(estate, fake_settings(estate, thumbprint=None, insecure=True), rep).connect()
    assert any(r["level"] == "warning" and "NOT verified" in r["message"] for r in rep.of_type("log"))


def test_wrong_password_and_unreachable(estate: FakeEstate) -> None:
    with pytest.raises(AuthenticationError, match="login refused") as info:
        FakeVCenter(estate, fake_settings(estate, password="WrongPassw0rd!")).connect()
    assert info.value.exit_code == 11 and "WrongPassw0rd" not in str(info.value.to_dict())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(SourceUnreachableError, match="connection refused") as info2:
        FakeVCenter(estate, fake_settings(estate, port=port)).connect()
    assert info2.value.exit_code == 10


def test_expired_certificate_is_refused(tmp_path: Path) -> None:
    """A certificate past its validity is a TLS error (12), even when its CA is trusted."""
    import datetime
    import ssl
    import threading

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30)).not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        from scmt_cli.lab.vcenter import FakeVCenter

        settings = resolve_settings(url=f"https://127.0.0.1:{port}/sdk", user="u", ca_file=str(cert_file),
                                    env={"SCMT_VCENTER_PASSWORD": "pw"})  # fmt: skip
        with pytest.raises(TLSVerificationError, match="expired"):
            FakeVCenter(None, settings).connect()  # type: ignore[arg-type]
    finally:
        thread.join(timeout=5)
        listener.close()
