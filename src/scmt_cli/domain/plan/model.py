"""The resolved plan model: what sync, failover and rollback read.

Every object is a frozen dataclass built by :func:`scmt_cli.domain.plan.load_plan`
from a plan file that passed the schema and the semantic checks, so consumers
never re-validate.  Units are resolved: sizes in bytes, rates in bytes per
second (``None`` = unlimited), durations in seconds, date-times timezone-aware,
paths absolute (relative paths in a plan are relative to the plan's directory).

Per-VM settings with defaults applied come from :meth:`Plan.effective`; the
precedence is VM entry > group entry > ``defaults`` > built-in default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from scmt_cli.errors import Problem

Method = Literal["managed", "agentless", "agent", "hot-backup"]
SourceAction = Literal["disconnect-network", "shutdown", "none"]
TargetState = Literal["on", "off"]
Compression = Literal["zstd", "none"]
DiskFormat = Literal["raw", "qcow2"]
TargetType = Literal["dir", "libvirt"]

METHODS: tuple[Method, ...] = ("managed", "agentless", "agent", "hot-backup")
AGENT_METHODS: frozenset[str] = frozenset({"agent", "hot-backup"})
VCENTER_METHODS: frozenset[str] = frozenset({"managed", "agentless"})

#: Built-in defaults (documented in the schema's descriptions).
DEFAULT_METHOD: Method = "agentless"
DEFAULT_SYNC_INTERVAL = 1800.0
DEFAULT_CONCURRENCY = 2  # the seed: "a maximum of two virtual machines are migrated concurrently"
DEFAULT_HOOK_TIMEOUT = 300.0
DEFAULT_SOURCE_ACTION: SourceAction = "disconnect-network"
DEFAULT_TARGET_STATE: TargetState = "on"
DEFAULT_COMPRESSION: Compression = "zstd"


def _frozen_map(data: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True)
class Source:
    """The vCenter the VMs come from.  Credentials are references, never values."""

    url: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    thumbprint: str | None = None  # normalised: upper-case, colon-separated SHA-256
    insecure: bool = False
    datacenter: str | None = None
    vddk_libdir: Path | None = None
    inventory: Path | None = None
    enable_cbt: bool = True  # sync may turn CBT on (a stun); False: VMs without CBT are blocked

    @property
    def host(self) -> str | None:
        """Host name of :attr:`url` (None without a URL)."""
        from urllib.parse import urlsplit

        return urlsplit(self.url).hostname if self.url else None

    @property
    def port(self) -> int:
        """TCP port of :attr:`url` (443 unless the URL names one)."""
        from urllib.parse import urlsplit

        return (urlsplit(self.url).port if self.url else None) or 443


@dataclass(frozen=True)
class Target:
    """Where VMs go.  ``networks``/``storage`` are read-only mappings."""

    type: TargetType
    path: Path | None = None
    uri: str | None = None
    networks: Mapping[str, str] = field(default_factory=_frozen_map)
    storage: Mapping[str, str] = field(default_factory=_frozen_map)
    disk_format: DiskFormat = "raw"
    migration_host: str | None = None
    v2v_timeout: float = 3600.0  # seconds one guest conversion may run
    v2v_stall_timeout: float = 600.0  # seconds the converter may print nothing
    v2v_accel: str = "auto"  # auto | kvm | tcg
    domain_type: str = "auto"  # libvirt: auto | kvm | qemu

    def network_for(self, vmware_network: str) -> str | None:
        """The KVM network mapped from ``vmware_network`` (None when unmapped)."""
        return self.networks.get(vmware_network)

    def storage_for(self, datastore: str | None) -> str | None:
        """Pool/directory for ``datastore``: its entry, else the ``*`` fallback, else None."""
        if datastore is not None and datastore in self.storage:
            return self.storage[datastore]
        return self.storage.get("*")


@dataclass(frozen=True)
class CutoverWindow:
    """When failover may run; both ends timezone-aware, ``end > start``."""

    start: dt.datetime
    end: dt.datetime

    def contains(self, when: dt.datetime) -> bool:
        return self.start <= when <= self.end


@dataclass(frozen=True)
class HookPhase:
    """argv lists run before/after one phase; ``timeout`` seconds per command."""

    pre: tuple[tuple[str, ...], ...] = ()
    post: tuple[tuple[str, ...], ...] = ()
    timeout: float = DEFAULT_HOOK_TIMEOUT


@dataclass(frozen=True)
class Hooks:
    sync: HookPhase | None = None
    failover: HookPhase | None = None
    rollback: HookPhase | None = None

    def merged(self, override: Hooks) -> Hooks:
        """Phases set in ``override`` replace this object's phases."""
        return Hooks(
            sync=override.sync or self.sync,
            failover=override.failover or self.failover,
            rollback=override.rollback or self.rollback,
        )


@dataclass(frozen=True)
class Defaults:
    """Plan-wide settings, every built-in default already applied."""

    method: Method = DEFAULT_METHOD
    sync_interval: float = DEFAULT_SYNC_INTERVAL
    bandwidth: float | None = None  # bytes/s; None = unlimited
    compression: Compression = DEFAULT_COMPRESSION
    concurrency: int = DEFAULT_CONCURRENCY
    #: At most this many VMs read from one ESXi host / one datastore at a time (None: no limit), across all hosts.
    concurrency_per_esxi_host: int | None = None
    concurrency_per_datastore: int | None = None
    cutover_window: CutoverWindow | None = None
    source_action: SourceAction = DEFAULT_SOURCE_ACTION
    target_state: TargetState = DEFAULT_TARGET_STATE
    direct: bool = False
    downtime_tolerance: float | None = None
    hooks: Hooks = field(default_factory=Hooks)


@dataclass(frozen=True)
class Group:
    """VMs that fail over and roll back together."""

    name: str
    vms: tuple[str, ...]
    description: str | None = None
    source_action: SourceAction | None = None
    target_state: TargetState | None = None


@dataclass(frozen=True)
class NicSpec:
    """One NIC mapping.  ``mac`` is ``"keep"``, ``"generate"`` or a MAC (lower case, colons)."""

    label: str | None = None
    source: str | None = None
    network: str | None = None  # the KVM network, resolved through target.networks when not given
    mac: str = "keep"
    ip: str | None = None  # CIDR, e.g. 10.0.0.10/24
    gateway: str | None = None
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiskSpec:
    """Selection/sizing of one source disk, named by ``label`` and/or device ``key``."""

    label: str | None = None
    key: int | None = None
    include: bool = True
    size: int | None = None  # bytes; None = the source size
    datastore: str | None = None
    storage: str | None = None


@dataclass(frozen=True)
class AgentSpec:
    address: str
    host: str
    port: int
    token_env: str | None = None
    token_file: Path | None = None
    ca_file: Path | None = None
    fingerprint: str | None = None  # SHA-256 of the agent's TLS certificate (hex, colons optional)
    plaintext: bool = False


@dataclass(frozen=True)
class VMSpec:
    """A VM as the plan lists it; ``overrides`` names the settings it sets itself."""

    name: str
    target_name: str
    method: Method | None = None
    cpus: int | None = None
    memory: int | None = None  # bytes
    nics: tuple[NicSpec, ...] = ()
    disks: tuple[DiskSpec, ...] = ()
    agent: AgentSpec | None = None
    hooks: Hooks = field(default_factory=Hooks)
    overrides: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Effective:
    """One VM's settings with group and defaults applied: what the engine obeys.

    ``cpus``/``memory`` ``None`` means "as the source"; ``overridden`` names the
    settings that came from the VM or its group rather than from defaults.
    """

    name: str
    target_name: str
    group: str | None
    method: Method
    sync_interval: float
    bandwidth: float | None
    compression: Compression
    cutover_window: CutoverWindow | None
    source_action: SourceAction
    target_state: TargetState
    direct: bool
    downtime_tolerance: float | None
    hooks: Hooks
    cpus: int | None
    memory: int | None
    nics: tuple[NicSpec, ...]
    disks: tuple[DiskSpec, ...]
    agent: AgentSpec | None
    overridden: frozenset[str] = frozenset()

    @property
    def uses_agent(self) -> bool:
        return self.method in AGENT_METHODS

    def disk_spec(self, key: int, label: str | None = None) -> DiskSpec | None:
        """The plan entry for the source disk with device ``key`` (or ``label``), if the plan lists it."""
        for spec in self.disks:
            if spec.key is not None and spec.key == key:
                return spec
        if label is not None:
            for spec in self.disks:
                if spec.key is None and spec.label == label:
                    return spec
        return None

    def includes_disk(self, key: int, label: str | None = None) -> bool:
        """Whether the source disk is migrated (disks the plan does not list are)."""
        spec = self.disk_spec(key, label)
        return spec is None or spec.include

    def target_disk_size(self, key: int, source_bytes: int, label: str | None = None) -> int:
        """Size of the target disk: the plan's size when larger, never smaller than the source."""
        spec = self.disk_spec(key, label)
        return max(source_bytes, spec.size or 0) if spec is not None else source_bytes

    def nic_spec(self, label: str, network: str | None = None) -> NicSpec | None:
        """The plan entry for the source NIC ``label`` (or, without a label entry, on VMware ``network``)."""
        for spec in self.nics:
            if spec.label is not None and spec.label == label:
                return spec
        if network is not None:
            for spec in self.nics:
                if spec.label is None and spec.source == network:
                    return spec
        return None


@dataclass(frozen=True)
class Plan:
    """A validated plan.  Look-ups raise :class:`KeyError` for unknown names."""

    file: Path
    name: str
    source: Source
    target: Target
    defaults: Defaults
    groups: tuple[Group, ...]
    vms: tuple[VMSpec, ...]
    version: int = 1
    description: str | None = None
    effective_by_vm: Mapping[str, Effective] = field(default_factory=lambda: MappingProxyType({}))

    def vm(self, name: str) -> VMSpec:
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(name)

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def group_of(self, vm: str) -> Group | None:
        """The group ``vm`` belongs to, or None."""
        for g in self.groups:
            if vm in g.vms:
                return g
        return None

    def failover_units(self) -> tuple[tuple[str, ...], ...]:
        """VM names grouped as they fail over: each group once (at its first VM), other VMs alone, plan order."""
        units: list[tuple[str, ...]] = []
        done: set[str] = set()
        for vm in self.vms:
            if vm.name in done:
                continue
            group = self.group_of(vm.name)
            unit = group.vms if group is not None else (vm.name,)
            units.append(unit)
            done.update(unit)
        return tuple(units)

    def effective(self, vm: str | VMSpec) -> Effective:
        """Settings of ``vm`` (a name or a :class:`VMSpec`) with group and defaults applied."""
        name = vm if isinstance(vm, str) else vm.name
        return self.effective_by_vm[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings, date-times ISO-8601, rates bytes/s)."""
        data = to_jsonable(self)
        assert isinstance(data, dict)
        data.pop("effective_by_vm", None)
        data["effective"] = [to_jsonable(self.effective_by_vm[v.name]) for v in self.vms]
        return data


@dataclass(frozen=True)
class LoadedPlan:
    """A plan plus what the checks noticed without rejecting it.

    ``warnings`` make ``plan validate`` exit 1; ``notes`` are information only
    (e.g. "sizes were not checked against a source inventory").
    """

    plan: Plan
    warnings: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()


def to_jsonable(value: Any) -> Any:
    """Recursively turn model objects into JSON-serialisable data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, (tuple, list)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value
