"""The agent as a real process: ``scmt agent serve``, ``scmt copy agent://...``, ``scmt sync`` of an agent plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.servers import TOKEN, agent_process

MiB = 1024 * 1024
SIZE = 64 * MiB


def scmt(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scmt_cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A 64 MiB sparse image: about 12 MiB of data, half random, half text."""
    path = tmp_path / "source.raw"
    with open(path, "wb") as fh:
        fh.truncate(SIZE)
        for i, off in enumerate((0, 9 * MiB, 30 * MiB, 50 * MiB)):
            fh.seek(off)
            fh.write(os.urandom(1536 * 1024) + f"log line {i}: all quiet\n".encode() * 70000)
    return path


def test_copy_through_a_subprocess_agent_is_identical_then_incremental_sends_only_changes(
        tmp_path: Path, image: Path) -> None:
    state = ["--state", str(tmp_path / "state.db")]
    with agent_process({"sda": image}, tmp_path) as agent:
        out, manifest = tmp_path / "copy.raw", tmp_path / "copy.manifest.json"
        res = scmt(*state, "--json", "copy", agent.url("sda"), f"file://{out}", "--manifest", str(manifest))
        assert res.returncode == 0, res.stderr
        assert out.read_bytes() == image.read_bytes()
        assert os.stat(out).st_blocks * 512 < SIZE // 2  # holes stayed holes
        full = json.loads(res.stdout)["stats"]
        assert full["bytes_of_data"] == full["bytes_read"]
        assert full["bytes_on_wire"] < full["bytes_read"]  # the text halves were compressed
        assert full["compression_ratio"] > 1.2

        with open(image, "r+b") as fh:  # two small writes in two chunks
            fh.seek(10 * MiB)
            fh.write(b"new data" * 100)
            fh.seek(60 * MiB)
            fh.write(os.urandom(4096))
        res = scmt(*state, "--json", "copy", agent.url("sda"), f"file://{out}", "--since", str(manifest))
        assert res.returncode == 0, res.stderr
        assert out.read_bytes() == image.read_bytes()
        inc = json.loads(res.stdout)["stats"]
        assert inc["chunks_changed"] == 2 and inc["chunks_compared"] == SIZE // (4 * MiB)
        assert inc["bytes_read"] == 2 * 4 * MiB
        assert inc["bytes_on_wire"] < 5 * MiB < SIZE // 10  # not a full transfer
        # What finding the changes cost the source: every allocated byte hashed, plus the two chunks sent.
        assert inc["source_bytes_read"] >= inc["bytes_read"] + 2 * 4 * MiB

        bad = tmp_path / "bad.token"
        bad.write_text("this-is-the-wrong-token\n")
        res = scmt(*state, "--json", "copy", agent.url("sda").replace(str(agent.token_file), str(bad)),
                   f"file://{tmp_path / 'x.raw'}")
        assert res.returncode == 11
        assert "authentication failed" in res.stdout
        for text in (res.stdout, res.stderr, agent.stderr()):
            assert TOKEN not in text and "this-is-the-wrong-token" not in text
        assert any(json.loads(line).get("kind") == "agent_auth_failed" for line in agent.stderr().splitlines())
        # TLS by default: the agent logged the SHA-256 of the certificate it made, once, for the pin.
        logged = [json.loads(line).get("message", "") for line in agent.stderr().splitlines()]
        assert sum(f"fingerprint: {agent.fingerprint}" in m for m in logged) == 1


def test_agent_refuses_to_start_without_a_token(tmp_path: Path, image: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SCMT_AGENT_TOKEN"}
    res = subprocess.run([sys.executable, "-m", "scmt_cli", "agent", "serve", "--listen", "127.0.0.1:0",
                          "--disk", f"sda={image}"], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 5
    assert "refuses to start without a token" in res.stderr


PLAN = """\
version: 1
name: agentwave
target:
  type: dir
  path: target
defaults:
  method: agent
  source_action: disconnect-network
vms:
  - name: web01
    agent:
      address: 127.0.0.1:{port}
      token_file: {token}
      fingerprint: {fp}
"""


def test_scmt_sync_of_an_agent_plan_without_vcenter(tmp_path: Path, image: Path) -> None:
    state = ["--state", str(tmp_path / "state.db")]
    with agent_process({"sda": image}, tmp_path) as agent:
        plan = tmp_path / "plan.yaml"
        plan.write_text(PLAN.format(port=agent.port, token=agent.token_file, fp=agent.fingerprint))
        res = scmt(*state, "--json", "sync", str(plan))
        assert res.returncode == 0, res.stdout + res.stderr
        vm = json.loads(res.stdout)["vms"][0]
        assert vm["state"] == "syncing" and vm["kind"] == "seed" and vm["source"] == "agent"
        target = tmp_path / "target" / "web01" / "disk0.raw"
        assert target.read_bytes() == image.read_bytes()
        with open(image, "r+b") as fh:
            fh.seek(33 * MiB)
            fh.write(b"changed")
        res = scmt(*state, "--json", "sync", str(plan))
        # An image file cannot be tracked by the kernel: the pass compares digests, and says so (exit 1).
        assert res.returncode == 1, res.stdout + res.stderr
        out = json.loads(res.stdout)
        vm = out["vms"][0]
        assert vm["kind"] == "incremental" and vm["bytes_read"] == MiB and vm["bytes_on_wire"] <= MiB + 4096
        assert vm["disks"][0]["tracking"] == "scan" and "image file" in vm["disks"][0]["tracking_reason"]
        assert any("no reliable kernel change tracking" in w for w in out["warnings"])
        assert target.read_bytes() == image.read_bytes()
        # Without a vCenter, failover says what is missing instead of guessing.
        res = scmt(*state, "failover", str(plan))
        assert res.returncode == 4
        assert "needs the plan's vCenter" in res.stderr
        for text in (res.stdout, res.stderr, agent.stderr()):
            assert TOKEN not in text
