"""A fleet of scmt worker processes ("hosts") on one fake vCenter and one state store, and the event-log checks.

:func:`start_fleet_lab` writes a lab of ``n`` VMs on two ESXi hosts and two
datastores, serves it with ``python -m scmt_cli.lab`` in its own process and
writes a plan for it.  :meth:`FleetLab.worker` starts ``scmt sync`` as one
host (``SCMT_HOST_ID``).  :func:`check_leases` replays the event log: every
lease must start while the VM is free and end by its holder's release, by
expiry or by a takeover, so two hosts never hold one VM; it returns the most
leases held at once, in all and per ESXi host.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.hooks import FAKE_RPC_ENV
from scmt_cli.state import EventRecord

ESXI = ("esx01.fleet.test", "esx02.fleet.test")
DATASTORES = ("ds-a", "ds-b")
MIB = 1024 * 1024


def vm_names(n: int) -> list[str]:
    return [f"app{i:02d}" for i in range(1, n + 1)]


def lab_yaml(n: int, disk_mib: int) -> str:
    lines = [
        "version: 1",
        "vcenter: {name: vcsa.fleet.test, version: \"7.0.3\", datacenter: DC1,"
        " user: administrator@vsphere.local, password: demo-password}",
        "hosts:",
        *[f"  - {{name: {h}, esxi_version: \"7.0.2\", esxi_build: \"17867351\", cluster: Prod}}" for h in ESXI],
        "datastores:",
        *[f"  - {{name: {d}, type: VMFS, capacity: 2 TiB, free: 900 GiB}}" for d in DATASTORES],
        "networks: [VM Network]",
        "vms:",
    ]
    for i, name in enumerate(vm_names(n)):
        lines += [
            f"  - name: {name}",
            "    guest_id: rhel8_64Guest",
            "    guest_full_name: Red Hat Enterprise Linux 8 (64-bit)",
            f"    host: {ESXI[i % 2]}",  # alternate, so the per-ESXi-host limit is met early
            "    firmware: efi",
            "    cpus: 2",
            "    memory: 2 GiB",
            "    tools: {status: running, version: \"12320\"}",
            "    cbt: true",
            "    disks:",
            f"      - size: {disk_mib} MiB",
            f"        datastore: {DATASTORES[(i // 2) % 2]}",
            "        layout:",
            f"          - {{at: 0, size: {disk_mib} MiB, fill: random, seed: {100 + i}}}",
            "    nics:",
            f"      - {{network: VM Network, mac: \"00:50:56:a1:20:{i:02x}\"}}",
        ]
    return "\n".join(lines) + "\n"


def plan_yaml(info: dict[str, Any], n: int, *, concurrency: int, per_esxi_host: int, bandwidth: str) -> str:
    lines = [
        "version: 1",
        "name: fleet",
        "source:",
        f"  url: {info['url']}",
        f"  username: {info['user']}",
        "  password_file: vcenter.pass",
        f"  thumbprint: \"{info['thumbprint']}\"",
        "target:",
        "  type: dir",
        "  path: target",
        "  networks:",
        '    "VM Network": default',
        "defaults:",
        "  method: agentless",
        f"  concurrency: {concurrency}",
        f"  concurrency_per_esxi_host: {per_esxi_host}",
        f"  bandwidth: {bandwidth}",
        "vms:",
        *[f"  - name: {vm}" for vm in vm_names(n)],
    ]
    return "\n".join(lines) + "\n"


@dataclass
class FleetLab:
    root: Path
    proc: subprocess.Popen[str]
    info: dict[str, Any]
    plan: Path
    state: str
    n: int
    workers: list[subprocess.Popen[str]] = field(default_factory=list)

    def worker(self, host: str, *args: str, lease: float = 3.0) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env.update({FAKE_RPC_ENV: self.info["rpc"], "SCMT_HOST_ID": host, "SCMT_LEASE_SECONDS": str(lease)})
        env.pop("SCMT_STATE", None)
        argv = [sys.executable, "-m", "scmt_cli", "--state", self.state, "--quiet", "--json", "sync", str(self.plan),
                *args]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=self.root)
        self.workers.append(proc)
        return proc

    def source_digest(self, index: int) -> str:
        name = vm_names(self.n)[index]
        folder = self.root / "vcenter" / "disks" / DATASTORES[(index // 2) % 2] / name
        files = sorted(folder.glob("*.vmdk"))
        assert len(files) == 1, files
        return hashlib.sha256(files[0].read_bytes()).hexdigest()

    def target_digest(self, index: int) -> str:
        name = vm_names(self.n)[index]
        return hashlib.sha256((self.root / "lab" / "target" / name / "disk0.raw").read_bytes()).hexdigest()

    def stop(self) -> None:
        for proc in [*self.workers, self.proc]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL if proc is not self.proc else signal.SIGTERM)
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def start_fleet_lab(root: Path, state: str, *, n: int = 12, disk_mib: int = 8, concurrency: int = 3,
                    per_esxi_host: int = 2, bandwidth: str = "16Mbit") -> FleetLab:
    (root / "lab").mkdir(parents=True, exist_ok=True)
    lab = root / "lab" / "lab.yaml"
    lab.write_text(lab_yaml(n, disk_mib), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "scmt_cli.lab", "--lab", str(lab), "--workdir",
                             str(root / "vcenter")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise RuntimeError("the fake vCenter did not start")
    info = json.loads(line)
    secret = root / "lab" / "vcenter.pass"
    secret.write_text(demo_lab.PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o600)
    plan = root / "lab" / "plan.yaml"
    plan.write_text(plan_yaml(info, n, concurrency=concurrency, per_esxi_host=per_esxi_host, bandwidth=bandwidth),
                    encoding="utf-8")
    return FleetLab(root, proc, info, plan, state, n)


@dataclass
class LeaseReplay:
    max_held: int = 0
    max_per_esxi: int = 0
    drivers: dict[str, list[str]] = field(default_factory=dict)  # VM -> hosts that leased it, in order
    expired: list[tuple[str, str]] = field(default_factory=list)  # (VM, host whose lease expired)


def check_leases(events: list[EventRecord]) -> LeaseReplay:
    """Replay lease events; AssertionError when a lease starts on a held VM or ends by someone else."""
    holder: dict[str, str] = {}  # VM -> owner
    esxi: dict[str, str | None] = {}
    out = LeaseReplay()
    for e in events:
        vm = str(e.vm)
        if e.kind == "lease_acquired":
            assert vm not in holder, f"event {e.id}: {e.data['host']} leased {vm} while {holder[vm]} held it"
            holder[vm] = e.data["owner"]
            esxi[vm] = e.data.get("esxi_host")
            out.drivers.setdefault(vm, []).append(e.data["host"])
            out.max_held = max(out.max_held, len(holder))
            per = Counter(esxi[v] for v in holder if esxi.get(v))
            out.max_per_esxi = max([out.max_per_esxi, *per.values()])
        elif e.kind == "lease_released":
            assert holder.get(vm) == e.data["owner"], f"event {e.id}: {vm} released by a non-holder"
            del holder[vm]
        elif e.kind in ("lease_expired", "lock_takeover"):
            prev = e.data["previous"]
            assert holder.get(vm) == prev["owner"], f"event {e.id}: {vm} expired for a non-holder"
            assert e.data["reason"] == "lease expired" or e.kind == "lease_expired", e.data
            out.expired.append((vm, prev["hostname"]))
            del holder[vm]
            if e.kind == "lock_takeover":
                holder[vm] = e.data["new_owner"]
    return out
