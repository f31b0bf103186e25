"""TLS between the migration host and the agent: fingerprint pinning and CA verification."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from scmt_cli.agent.service import cert_fingerprint
from scmt_cli.agent.transport import open_agent_source
from scmt_cli.errors import SourceUnreachableError, TLSVerificationError
from tests.agent.servers import running_agent

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
        base = agent.url("sda")
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
            open_agent_source(base)  # plain client, TLS agent
