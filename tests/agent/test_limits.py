"""The agent's resource limits (CPU, storage share; defaults from the seed) and the figures it reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.agent.limits import CpuShare, StorageShare
from scmt_cli.agent.transport import AgentDisk
from tests.agent.servers import InProcessAgent, agent_process, running_agent

MiB = 1024 * 1024


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.cpu = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_storage_share_keeps_the_reads_in_flight_to_their_share_of_the_time() -> None:
    clock = FakeClock()
    gov = StorageShare(0.3, now=clock.now, sleep=clock.sleep)
    for _ in range(300):  # 300 reads of 10 ms, one after the other: 3 s busy
        gov.begin()
        clock.t += 0.01
        gov.end()
    assert clock.t >= 3.0 / 0.3 - 0.05  # paused ~7 s: busy stays at 30% of the time
    assert gov.slept == pytest.approx(clock.t - 3.0)
    # Reads in flight together keep the storage busy once, not once per read (like iostat's %util).
    both = StorageShare(0.3, now=clock.now, sleep=clock.sleep)
    both.begin()
    both.begin()
    clock.t += 0.1
    assert both.busy() == pytest.approx(0.1)


def test_cpu_share_keeps_the_agent_process_to_its_share_of_a_core() -> None:
    clock = FakeClock()
    gov = CpuShare(0.25, cpu=lambda: clock.cpu, now=clock.now, sleep=clock.sleep)
    for _ in range(200):  # requests that each burn 20 ms of CPU
        clock.cpu += 0.02
        clock.t += 0.02
        gov.pace()
    assert clock.cpu / clock.t <= 0.25 + 0.01
    assert CpuShare(1.0).share == 1.0  # 100%: pace() returns at once
    with pytest.raises(ValueError):
        StorageShare(0)


def _read_all(agent: InProcessAgent, size: int) -> tuple[dict[str, Any], float]:
    disk = AgentDisk("127.0.0.1", agent.port, "sda", agent.token_file.read_bytes().strip(), tls=agent.tls)
    try:
        t0 = time.monotonic()
        for off in range(0, size, 4 * MiB):
            disk.read(off, 4 * MiB)
        wall = time.monotonic() - t0
        return disk.agent_usage(), wall
    finally:
        disk.close()


def test_storage_share_defaults_to_the_seeds_30_percent_and_paces_the_reads(tmp_path: Path) -> None:
    image = tmp_path / "sda.raw"
    image.write_bytes(os.urandom(64 * MiB))
    with running_agent({"sda": image}, tmp_path) as agent:  # the defaults, except no CPU limit in-process
        used, _ = _read_all(agent, 64 * MiB)
    assert used["limits"]["storage_share_pct"] == 30 and used["limits"]["queue_depth"] == 4
    assert used["disk_busy_seconds"] > 0 and used["disk_bytes_read"] == 64 * MiB
    with running_agent({"sda": image}, tmp_path, storage_share=1.0) as agent:  # 1%: every read pauses
        used, wall = _read_all(agent, 16 * MiB)
    assert used["throttled_seconds"]["storage"] > 0
    # The reads' busy time over the wall time: the pauses keep it at the share (load slows both alike).
    assert used["disk_busy_seconds"] / wall <= 0.01 * 2, (used, wall)
    with running_agent({"sda": image}, tmp_path, storage_share=100.0) as agent:
        used, _ = _read_all(agent, 4 * MiB)
    assert used["limits"]["storage_share_pct"] is None and used["throttled_seconds"]["storage"] == 0


def test_cpu_limit_holds_an_agent_process_to_its_share_while_it_hashes(tmp_path: Path) -> None:
    image = tmp_path / "sda.raw"
    with open(image, "wb") as fh:
        for _ in range(64):
            fh.write(os.urandom(MiB))
    with agent_process({"sda": image}, tmp_path, "--cpu-limit", "10", "--storage-share", "100") as agent:
        disk = AgentDisk("127.0.0.1", agent.port, "sda", agent.token_file.read_bytes().strip(),
                         tls=agent.tls)
        try:
            t0 = time.monotonic()
            for _ in range(3):
                disk.remote_digests(MiB)  # hashing 3 x 64 MiB: CPU-bound on the agent
            wall = time.monotonic() - t0
            used = disk.agent_usage()
        finally:
            disk.close()
    assert used["limits"]["cpu_limit_pct"] == 10
    assert used["throttled_seconds"]["cpu"] > 0
    # CPU over wall time can only fall under contention, so this bound holds on a busy machine too.
    assert used["cpu_seconds"] / wall <= 0.10 * 1.5, (used, wall)


def test_agent_figures_in_copy_and_sync_json_and_the_serve_help(tmp_path: Path) -> None:
    image = tmp_path / "sda.raw"
    with open(image, "wb") as fh:
        fh.truncate(16 * MiB)
        fh.write(os.urandom(3 * MiB))
    run = [sys.executable, "-m", "scmt_cli", "--state", str(tmp_path / "state.db")]
    with agent_process({"sda": image}, tmp_path) as agent:
        res = subprocess.run([*run, "--json", "copy", agent.url("sda"), f"file://{tmp_path / 'out.raw'}"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        figures = json.loads(res.stdout)["stats"]["agent"]
        assert 0 < figures["peak_rss_bytes"] < 260 * MiB  # the seed's memory promise
        assert figures["cpu_seconds"] > 0 and figures["disk_bytes_read"] == 3 * MiB
        assert figures["limits"] == {"queue_depth": 4, "bandwidth_bytes_per_s": 37_500_000, "cpu_limit_pct": 25,
                                     "storage_share_pct": 30}
        res = subprocess.run([*run, "copy", agent.url("sda"), f"file://{tmp_path / 'out2.raw'}"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and "agent         CPU" in res.stdout and "peak RSS" in res.stdout, res.stdout
        plan = tmp_path / "plan.yaml"
        plan.write_text(f"""\
version: 1
name: figures
target: {{type: dir, path: target}}
defaults: {{method: agent}}
vms:
  - name: web01
    agent: {{address: 127.0.0.1:{agent.port}, token_file: {agent.token_file}, fingerprint: {agent.fingerprint}}}
""")
        res = subprocess.run([*run, "--json", "sync", str(plan)], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        vm = json.loads(res.stdout)["vms"][0]
        assert vm["agent"]["disk_bytes_read"] == 3 * MiB and vm["agent"]["peak_rss_bytes"] > 0
        assert "agent" not in vm["disks"][0]  # one figure per VM (per pass), not per disk
        res = subprocess.run([*run, "sync", str(plan)], capture_output=True, text=True, timeout=120)
        assert "web01: agent CPU" in res.stdout, res.stdout
    res = subprocess.run([*run, "agent", "serve", "--help"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "200"})
    assert "the seed's storage load" in res.stdout and "default: 30" in res.stdout.replace("default: 30.0", "default: 30")
    assert "--cpu-limit" in res.stdout and "default: 25" in res.stdout.replace("25.0", "25")


def test_peak_rss_is_the_agents_own_not_the_memory_of_whoever_started_it() -> None:
    """ru_maxrss survives execve: an agent started by a big process would report that process's memory."""
    code = (
        "import subprocess, sys\n"
        "big = bytearray(400 * 1024 * 1024)\n"
        "for i in range(0, len(big), 4096): big[i] = 1\n"
        "cmd = 'from scmt_cli.agent.limits import usage; print(usage()[\"peak_rss_bytes\"])'\n"
        "print(subprocess.run([sys.executable, '-c', cmd], capture_output=True, text=True, check=True).stdout)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert 0 < int(out.stdout.split()[0]) < 200 * MiB
