"""TLS between the migration host and the agent: fingerprint pinning and CA verification."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from scmt_cli.agent.certs import CERT_NAME, KEY_NAME
from scmt_cli.agent.service import ServeRequest, build_config, cert_fingerprint, serve_agent
from scmt_cli.agent.transport import open_agent_source
from scmt_cli.errors import ConfigError, SourceUnreachableError, TLSVerificationError, UsageError
from scmt_cli.events import RecordingReporter
from tests.agent.servers import running_agent, write_token

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")
MiB = 1024 * 1024


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "agent.crt", directory / "agent.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=agent.test",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_tls_with_pinned_fingerprint_or_ca(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(MiB) + b"text " * 200000)
    cert, key = make_cert(tmp_path)
    fp = cert_fingerprint(cert)
    with running_agent({"sda": image}, tmp_path, tls_cert=cert, tls_key=key) as agent:
        base = f"agent://127.0.0.1:{agent.port}/sda?token_file={agent.token_file}"
        with open_agent_source(f"{base}&fingerprint={fp}") as disk:  # type: ignore[attr-defined]
            assert disk.read(0, disk.size) == image.read_bytes()
        colons = ":".join(fp[i : i + 2] for i in range(0, 64, 2)).upper()
        with open_agent_source(f"{base}&fingerprint={colons}") as disk:  # type: ignore[attr-defined]
            assert disk.read(0, 4096) == image.read_bytes()[:4096]
        with open_agent_source(f"{base}&ca_file={cert}") as disk:  # type: ignore[attr-defined]
            assert disk.size == image.stat().st_size
        with pytest.raises(TLSVerificationError) as info:
            open_agent_source(f"{base}&fingerprint={'0' * 64}")
        assert info.value.exit_code == 12
        other, _ = make_cert(tmp_path / "other" if (tmp_path / "other").mkdir() is None else tmp_path)
        with pytest.raises(TLSVerificationError):
            open_agent_source(f"{base}&ca_file={other}")
        with pytest.raises(SourceUnreachableError, match="handshake"):
            open_agent_source(base + "&plaintext=1")  # plain client, TLS agent


def test_the_agent_serves_tls_by_default_with_a_certificate_it_makes_once(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(64 * 1024))
    with running_agent({"sda": image}, tmp_path) as agent:
        first = agent.fingerprint
        assert agent.server.config.tls is not None and first
        assert agent.server.config.tls_created
        for name in (CERT_NAME, KEY_NAME):  # beside the token, private from the start
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
        assert cert_fingerprint(tmp_path / CERT_NAME) == first
        with open_agent_source(agent.url("sda")) as disk:  # type: ignore[attr-defined]
            assert disk.read(0, disk.size) == image.read_bytes()
        with pytest.raises(UsageError, match="serves TLS"):  # no pin: refused, never an unverified TLS
            open_agent_source(f"agent://127.0.0.1:{agent.port}/sda?token_file={agent.token_file}")
        with pytest.raises(SourceUnreachableError):  # a plain client gets nothing
            open_agent_source(f"agent://127.0.0.1:{agent.port}/sda?token_file={agent.token_file}&plaintext=1")
    with running_agent({"sda": image}, tmp_path) as again:  # the next start reuses the same identity
        assert again.fingerprint == first and not again.server.config.tls_created


def test_plaintext_only_when_asked_and_loudly(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(64 * 1024))
    rep = RecordingReporter()
    stop = threading.Event()
    token = write_token(tmp_path)
    t = threading.Thread(target=serve_agent, args=(ServeRequest("127.0.0.1:0", (f"sda={image}",), token,
                                                                plaintext=True), rep), kwargs={"stop": stop})
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not any(e["kind"] == "agent_listening" for e in rep.of_type("event")) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(10)
    assert any(r["level"] == "warning" and "PLAINTEXT" in r["message"] for r in rep.of_type("log"))
    assert not (tmp_path / CERT_NAME).exists()


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(bytes(4096))
    token = write_token(tmp_path)
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="accessible by group or others") as info:
        build_config(ServeRequest("127.0.0.1:0", (f"sda={image}",), token, plaintext=True))
    assert info.value.exit_code == 5 and "chmod 600" in (info.value.hint or "")
    cfg = build_config(ServeRequest("127.0.0.1:0", (f"sda={image}",), token, plaintext=True,
                                    allow_open_token_file=True))
    for d in cfg.disks.values():
        d.close()
