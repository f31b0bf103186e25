"""Helpers for command-level tests against vcsim: a running simulator, a plan for it, disk content."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.vsphere.settings import ConnectionSettings

from . import vcsim as vcsim_mod

VM = "DC0_H0_VM0"


def start_or_skip(vms: int = 1) -> vcsim_mod.Vcsim:
    try:
        return vcsim_mod.start(vms=vms)
    except vcsim_mod.VcsimUnavailable as exc:
        if os.environ.get("SCMT_REQUIRE_VCSIM"):
            raise
        pytest.skip(f"vcsim unavailable: {exc}")


def sim_fixture() -> Iterator[vcsim_mod.Vcsim]:
    sim = start_or_skip()
    try:
        yield sim
    finally:
        sim.stop()


def settings(sim: vcsim_mod.Vcsim, **over: Any) -> ConnectionSettings:
    kw: dict[str, Any] = {"host": sim.host, "port": sim.port, "user": sim.user, "password": sim.password,
                          "thumbprint": sim.thumbprint}  # fmt: skip
    kw.update(over)
    return ConnectionSettings(**kw)


def adapter(sim: vcsim_mod.Vcsim, **over: Any) -> Any:
    from scmt_cli.vsphere.adapter import PyVmomiVCenter

    vc = PyVmomiVCenter(settings(sim, **over))
    vc.connect()
    return vc


def write_plan(
    directory: Path, sim: vcsim_mod.Vcsim, *, url: str | None = None, password: str | None = None,
    thumbprint: str | None = None, ca_file: Path | None = None, name: str = "vc", vm: str = VM,
) -> Path:  # fmt: skip
    """An agentless plan for one vcsim VM (target ``dir`` under ``directory/target``)."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "vcenter.pass"
    secret.write_text((password if password is not None else sim.password) + "\n", encoding="utf-8")
    secret.chmod(0o600)
    tls = [f"  ca_file: {ca_file}"] if ca_file else [f'  thumbprint: "{thumbprint or sim.thumbprint}"']
    lines = [
        "version: 1", f"name: {name}", "source:", f"  url: {url or sim.url}", f"  username: {sim.user}",
        "  password_file: vcenter.pass", *tls,
        "target:", "  type: dir", "  path: target", "  networks:", '    "VM Network": default',
        "    DC0_DVPG0: default",
        "defaults:", "  method: agentless", "  concurrency: 1", "  source_action: disconnect-network",
        '  target_state: "off"', "vms:", f"  - name: {vm}",
    ]  # fmt: skip
    plan = directory / "plan.yaml"
    plan.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return plan


def upload_disk(sim: vcsim_mod.Vcsim, vm: str = VM) -> bytes:
    """Fill the VM's first disk (empty in vcsim) with random data and a zero half; return the content."""
    vc = adapter(sim)
    try:
        disk = (vc.inventory().vm(vm) or pytest.fail(f"{vm} missing in vcsim")).disks[0]
        assert disk.file is not None
        size = disk.capacity_bytes
        data = secrets.token_bytes(size // 2) + bytes(size - size // 2)
        vc.upload(disk.file[: -len(".vmdk")] + "-flat.vmdk", data)
        return data
    finally:
        vc.close()


def snapshots(sim: vcsim_mod.Vcsim, vm: str = VM) -> list[str]:
    """Names of the VM's snapshots, read over a fresh, correct connection."""
    vc = adapter(sim)
    try:
        return [s.name for s in vc.list_snapshots(vm)]
    finally:
        vc.close()
