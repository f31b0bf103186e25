"""Commented starter plans written by ``scmt plan init``.

Contract: :func:`starter_plan` returns YAML text for one method and one target
type that passes :func:`scmt_cli.domain.plan.parse_plan` unchanged (a test
checks every combination), with comments that explain each field and its
alternatives.  The default target, ``dir`` (raw/qcow2 files and a domain XML),
works on a fresh machine; ``libvirt`` needs a libvirt host.
"""

from __future__ import annotations

from scmt_cli.domain.plan.model import METHODS

_HEADER = """\
# scmt migration plan ({method}).
# Check it with:   scmt plan validate {file}
# Every field:     scmt plan schema
# Secrets are never written here: use *_env (environment variable names) or *_file.
# Relative paths are relative to this file's directory.
version: 1
name: wave-1
description: "First wave - {what}"

"""

_SOURCE = """\
source:
  url: https://vcenter.example.com/sdk      # the vCenter SDK endpoint
  username: svc-migrate@vsphere.local
  password_env: SCMT_VCENTER_PASSWORD       # or: password_file: /etc/scmt/vcenter.pass
  # TLS: the system trust store by default; or pin the certificate:
  # ca_file: vcenter-ca.pem
  # thumbprint: "AB:CD:...:EF"              # SHA-256, 64 hex digits
  # insecure: true                          # labs only; always reported as a warning
  # datacenter: DC1
  # vddk_libdir: /opt/vmware-vix-disklib-distrib
  # inventory: inventory.xlsx               # offline inventory (RVTools export)
  enable_cbt: true                          # turn CBT on at the first sync where it is off (a VM stun);
                                            # false: such VMs are blocked until you enable it yourself

"""

_SOURCE_AGENT = """\
# The agent methods read disks through the scmt agent on each VM; vCenter is
# optional (used for the inventory and to disconnect the source NIC).
# source:
#   url: https://vcenter.example.com/sdk
#   username: svc-migrate@vsphere.local
#   password_env: SCMT_VCENTER_PASSWORD

"""

TARGETS: tuple[str, ...] = ("dir", "libvirt")

_TARGET = {
    "dir": """\
target:
  type: dir                      # a folder per VM: disks, domain.xml for 'virsh define', state.json
  path: kvm                      # next to this file; e.g. /var/lib/scmt/images on a migration host
  # or: type: libvirt + uri: qemu:///system (scmt plan init FILE --target libvirt)
  networks:                      # VMware network -> KVM network (named in domain.xml)
    "VM Network": default
  disk_format: raw               # raw | qcow2
  # migration_host: 10.0.0.5     # address the port preflight checks

""",
    "libvirt": """\
target:
  type: libvirt                  # or: type: dir  +  path: /var/lib/scmt/images
  uri: qemu:///system
  networks:                      # VMware network -> KVM network
    "VM Network": default
  storage:                       # source datastore -> libvirt pool ('*' = any other)
    "*": default
  disk_format: qcow2             # raw | qcow2
  # migration_host: 10.0.0.5     # address the port preflight checks

""",
}

_DEFAULTS = """\
defaults:
  method: {method}
{method_defaults}  bandwidth: 300Mbit                # per VM; or 50MB/s, unlimited
  compression: zstd                # zstd | none
  concurrency: 2                   # VMs copied at the same time
  source_action: {source_action}   # disconnect-network | shutdown | none
  target_state: on                 # on | off after failover
  direct: false                    # true: boot as copied, no driver injection / IP setup
  # downtime_tolerance: 10m
  # cutover_window:                # ISO-8601 with a time zone; must be in the future
  #   start: "2030-01-18T22:00:00+01:00"
  #   end: "2030-01-19T02:00:00+01:00"
  # hooks:                         # argv lists, never shell strings
  #   failover:
  #     pre: [[/usr/local/bin/drain, --vm, web01]]
  #     post: [[curl, -fsS, "http://web01.example.com/health"]]
  #     timeout: 5m

"""

_VMS = """\
# groups:                          # VMs that fail over together (clusters)
#   - name: redis
#     vms: [redis-1, redis-2, redis-3]
#     source_action: none          # stop the service yourself (pre-hook), keep the cluster sane

vms:
  - name: web01                    # as named in vCenter
    # cpus: 4                      # may only grow (never fewer than the source)
    # memory: 8GiB                 # may only grow
    nics:
      - label: Network adapter 1
        network: default           # a value of target.networks
        mac: keep                  # keep | generate | 52:54:00:12:34:56
        # ip: 10.0.0.10/24
        # gateway: 10.0.0.1
        # dns: [10.0.0.2, 10.0.0.3]
    disks:
      - label: Hard disk 1
        # size: 120GiB             # may only grow
      # - label: Hard disk 2
      #   include: false           # not migrated
{agent}"""

_AGENT = """\
    agent:
      address: web01.example.com:20000   # the scmt agent on the VM
      token_env: SCMT_AGENT_TOKEN        # or: token_file: agent-web01.token
"""

_WHAT = {
    "managed": "fully automatic: seed, sync, shut the source down, final sync, boot",
    "agentless": "vCenter snapshots + CBT, cutover when the operator says",
    "agent": "the scmt agent reads the disks inside each VM (no snapshots)",
    "hot-backup": "the scmt agent streams every change; cutover in about a minute",
}


def starter_plan(method: str, file: str = "plan.yaml", target: str = "dir") -> str:
    """Commented starter plan text for ``method`` (one of :data:`METHODS`) and ``target`` (:data:`TARGETS`).

    ``file`` is named in its header.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if target not in TARGETS:
        raise ValueError(f"unknown target type {target!r}; expected one of {', '.join(TARGETS)}")
    agent = method in ("agent", "hot-backup")
    if method == "hot-backup":
        method_defaults = "  # hot-backup streams changes continuously: no sync_interval\n"
    else:
        method_defaults = "  sync_interval: 30m               # incremental sync after the seed\n"
    return (
        _HEADER.format(method=method, what=_WHAT[method], file=file)
        + (_SOURCE_AGENT if agent else _SOURCE)
        + _TARGET[target]
        + _DEFAULTS.format(
            method=method,
            method_defaults=method_defaults,
            source_action="shutdown" if method == "managed" else "disconnect-network",
        )
        + _VMS.format(agent=_AGENT if agent else "")
    )
