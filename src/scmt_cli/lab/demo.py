"""The demo's lab and plan, generated at run time (the package needs no repository files).

:func:`write_lab` writes a four-VM lab file (see ``examples/lab.yaml`` for the
format): a web server with CBT off (so the demo shows it being turned on), a
database with two disks and a two-node Redis cluster that fails over as a
group.  :func:`write_plan` writes an agentless plan for a running fake
vCenter, with a ``dir`` target under the lab directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

LAB_YAML = """\
# scmt demo lab: four small VMs on a fake vCenter (format: see examples/lab.yaml)
version: 1
vcenter:
  name: vcsa.demo.test
  version: "7.0.3"
  datacenter: DC1
  user: administrator@vsphere.local
  password: demo-password
hosts:
  - {name: esx01.demo.test, esxi_version: "7.0.2", esxi_build: "17867351", cluster: Prod}
datastores:
  - {name: ds-vmfs01, type: VMFS, capacity: 2 TiB, free: 900 GiB}
networks: [VM Network, App-VLAN20]
vms:
  - name: web01
    guest_id: ubuntu64Guest
    guest_full_name: Ubuntu Linux (64-bit)
    host: esx01.demo.test
    firmware: efi
    cpus: 2
    memory: 2 GiB
    hostname: web01.demo.test
    tools: {status: running, version: "12352"}
    hardware_version: vmx-19
    cbt: false
    disks:
      - size: 24 MiB
        datastore: ds-vmfs01
        layout:
          - {at: 0, size: 1 MiB, fill: counter}
          - {at: 2 MiB, size: 8 MiB, fill: random, seed: 11}
    nics:
      - {network: VM Network, mac: "00:50:56:a1:10:01", ips: [192.168.10.11]}
    partitions:
      - {mount: /, capacity: 22 MiB, free: 10 MiB, filesystem: ext4}
  - name: db01
    guest_id: rhel8_64Guest
    guest_full_name: Red Hat Enterprise Linux 8 (64-bit)
    host: esx01.demo.test
    firmware: bios
    cpus: 4
    memory: 4 GiB
    hostname: db01.demo.test
    tools: {status: running, version: "12320"}
    hardware_version: vmx-19
    cbt: true
    disks:
      - size: 16 MiB
        datastore: ds-vmfs01
        layout:
          - {at: 0, size: 512 KiB, fill: counter}
          - {at: 1 MiB, size: 6 MiB, fill: random, seed: 21}
      - size: 24 MiB
        datastore: ds-vmfs01
        label: Hard disk 2 (data)
        layout:
          - {at: 0, size: 12 MiB, fill: random, seed: 22}
          - {at: 20 MiB, size: 1 MiB, fill: byte, value: 0xAB}
    nics:
      - {network: App-VLAN20, mac: "00:50:56:a1:10:02", ips: [10.20.0.21]}
    partitions:
      - {mount: /, capacity: 15 MiB, free: 6 MiB, filesystem: xfs}
  - name: redis-a
    guest_id: rhel8_64Guest
    guest_full_name: Red Hat Enterprise Linux 8 (64-bit)
    host: esx01.demo.test
    firmware: efi
    cpus: 2
    memory: 2 GiB
    hostname: redis-a.demo.test
    tools: {status: running, version: "12320"}
    cbt: true
    annotation: "cluster: redis (pair with redis-b)"
    disks:
      - size: 16 MiB
        datastore: ds-vmfs01
        layout:
          - {at: 0, size: 1 MiB, fill: counter}
          - {at: 2 MiB, size: 4 MiB, fill: random, seed: 31}
    nics:
      - {network: App-VLAN20, mac: "00:50:56:a1:10:03", ips: [10.20.0.31]}
  - name: redis-b
    guest_id: rhel8_64Guest
    guest_full_name: Red Hat Enterprise Linux 8 (64-bit)
    host: esx01.demo.test
    firmware: efi
    cpus: 2
    memory: 2 GiB
    hostname: redis-b.demo.test
    tools: {status: running, version: "12320"}
    cbt: true
    annotation: "cluster: redis (pair with redis-a)"
    disks:
      - size: 16 MiB
        datastore: ds-vmfs01
        layout:
          - {at: 0, size: 1 MiB, fill: counter}
          - {at: 2 MiB, size: 4 MiB, fill: random, seed: 41}
    nics:
      - {network: App-VLAN20, mac: "00:50:56:a1:10:04", ips: [10.20.0.32]}
"""

#: A VM whose disk is the real, bootable lab guest (``image: guest``; see :mod:`scmt_cli.lab.guest`).
GUEST_VM = "app01"
GUEST_VM_YAML = """\
  - name: app01
    guest_id: debian11_64Guest
    guest_full_name: Debian GNU/Linux 12 (64-bit)
    host: esx01.demo.test
    firmware: bios
    cpus: 1
    memory: 512 MiB
    hostname: app01.demo.test
    tools: {status: running, version: "12352"}
    cbt: true
    disks:
      - image: guest
        datastore: ds-vmfs01
        controller: scsi
        controller_model: pvscsi
    nics:
      - {network: VM Network, mac: "00:50:56:a1:10:05", ips: [192.168.10.15]}
"""

DEMO_VMS: tuple[str, ...] = ("web01", "db01", "redis-a", "redis-b")
PASSWORD = "demo-password"  # noqa: S105 - the fake lab's login, not a secret


def write_lab(directory: Path, *, guest: bool = False) -> Path:
    """Write the demo lab file into ``directory``; return its path.

    ``guest`` adds :data:`GUEST_VM`, whose disk is the bootable lab guest (built
    and cached on first use: about a minute).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "lab.yaml"
    path.write_text(LAB_YAML + (GUEST_VM_YAML if guest else ""), encoding="utf-8")
    return path


def write_plan(
    directory: Path,
    *,
    url: str,
    thumbprint: str | None,
    user: str,
    password: str = PASSWORD,
    vms: Sequence[str] = DEMO_VMS,
    group_hooks: dict[str, list[list[str]]] | None = None,
    concurrency: int = 2,
    name: str = "demo",
    bandwidth: str | None = None,
) -> Path:
    """Write an agentless plan for the fake vCenter at ``url`` into ``directory``; return its path.

    The password goes to ``vcenter.pass`` (mode 0600) next to the plan.
    ``group_hooks`` maps a Redis VM to its failover ``pre`` commands;
    ``bandwidth`` (e.g. ``"64Mbit"``) limits the sync read rate.
    """
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "vcenter.pass"
    secret.write_text(password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    lines = [
        "version: 1",
        f"name: {name}",
        "description: scmt demo - agentless point-to-point migration of a small lab",
        "source:",
        f"  url: {url}",
        f"  username: {user}",
        "  password_file: vcenter.pass",
        *([f'  thumbprint: "{thumbprint}"'] if thumbprint else ["  insecure: true"]),
        "target:",
        "  type: dir",
        "  path: target",
        "  networks:",
        '    "VM Network": default',
        "    App-VLAN20: vlan20",
        "defaults:",
        "  method: agentless",
        "  sync_interval: 30m",
        f"  concurrency: {concurrency}",
        *([f"  bandwidth: {bandwidth}"] if bandwidth else []),
        "  source_action: disconnect-network",
        "  target_state: \"on\"",
        "  downtime_tolerance: 5m",
    ]
    redis = [v for v in vms if v.startswith("redis-")]
    if len(redis) >= 2:
        lines += [
            "groups:",
            "  - name: redis",
            "    description: the Redis pair fails over and rolls back together",
            f"    vms: [{', '.join(redis)}]",
            "    source_action: none",
        ]
    lines.append("vms:")
    for vm in vms:
        lines.append(f"  - name: {vm}")
        pre = (group_hooks or {}).get(vm)
        if pre:
            lines += ["    hooks:", "      failover:", "        pre:"]
            lines += ["          - [" + ", ".join(_quote(a) for a in argv) + "]" for argv in pre]
            lines.append("        timeout: 30s")
    path = directory / "plan.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _quote(arg: str) -> str:
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
