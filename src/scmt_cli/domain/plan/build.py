"""Turn a checked raw plan document into the resolved :mod:`model`.

Contract: :func:`build_plan` is only called on a document that passed the
schema and the semantic checks with no errors, so it may assume types and
parseable units; it applies the built-in defaults and computes every VM's
:class:`~scmt_cli.domain.plan.model.Effective` settings.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from scmt_cli.domain import units
from scmt_cli.domain.plan.model import (
    DEFAULT_HOOK_TIMEOUT,
    AgentSpec,
    CutoverWindow,
    Defaults,
    DiskFormat,
    DiskSpec,
    Effective,
    Group,
    HookPhase,
    Hooks,
    Method,
    NicSpec,
    Plan,
    Source,
    SourceAction,
    Target,
    TargetState,
    VMSpec,
)
from scmt_cli.domain.plan.semantic import split_address

#: Settings a VM (or a group, for the last two) may override.
OVERRIDABLE = (
    "method",
    "sync_interval",
    "bandwidth",
    "compression",
    "cutover_window",
    "source_action",
    "target_state",
    "direct",
    "downtime_tolerance",
    "hooks",
)


def _path(base: Path, value: Any) -> Path | None:
    if not isinstance(value, str):
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _rate(value: Any) -> float | None:
    if value is None:
        return None
    rate = units.parse_rate(value)
    return None if math.isinf(rate) else rate


def _window(value: Any) -> CutoverWindow | None:
    if not isinstance(value, dict):
        return None
    return CutoverWindow(
        start=dt.datetime.fromisoformat(value["start"].strip()),
        end=dt.datetime.fromisoformat(value["end"].strip()),
    )


def _hooks(value: Any) -> Hooks:
    phases: dict[str, HookPhase] = {}
    for name, spec in (value or {}).items():
        timeout = spec.get("timeout")
        phases[name] = HookPhase(
            pre=tuple(tuple(argv) for argv in spec.get("pre", [])),
            post=tuple(tuple(argv) for argv in spec.get("post", [])),
            timeout=units.parse_duration(timeout) if timeout is not None else DEFAULT_HOOK_TIMEOUT,
        )
    return Hooks(**phases)


def normalise_thumbprint(text: str) -> str:
    """Any accepted thumbprint spelling -> ``AB:CD:...`` (upper case, colon-separated)."""
    hexdigits = text.replace(":", "").upper()
    return ":".join(hexdigits[i : i + 2] for i in range(0, len(hexdigits), 2))


def _source(raw: dict[str, Any], base: Path) -> Source:
    url = raw.get("url")
    if isinstance(url, str):
        url = url.strip()
        if url.rstrip("/").count("/") == 2:  # https://host[:port] -> the SDK endpoint
            url = url.rstrip("/") + "/sdk"
        url = url.rstrip("/")
    thumb = raw.get("thumbprint")
    return Source(
        url=url,
        username=raw.get("username"),
        password_env=raw.get("password_env"),
        password_file=_path(base, raw.get("password_file")),
        ca_file=_path(base, raw.get("ca_file")),
        thumbprint=normalise_thumbprint(thumb) if isinstance(thumb, str) else None,
        insecure=bool(raw.get("insecure", False)),
        datacenter=raw.get("datacenter"),
        vddk_libdir=_path(base, raw.get("vddk_libdir")),
        inventory=_path(base, raw.get("inventory")),
        enable_cbt=bool(raw.get("enable_cbt", True)),
    )


def _target(raw: dict[str, Any], base: Path) -> Target:
    ttype = raw["type"]
    default_format = "raw" if ttype == "dir" else "qcow2"
    storage = dict(raw.get("storage", {}))
    if ttype == "dir":  # directories are paths: resolve them like every other path
        storage = {k: str(_path(base, v)) for k, v in storage.items()}
    return Target(
        type=ttype,
        path=_path(base, raw.get("path")),
        uri=raw.get("uri"),
        networks=MappingProxyType(dict(raw.get("networks", {}))),
        storage=MappingProxyType(storage),
        disk_format=cast(DiskFormat, raw.get("disk_format", default_format)),
        migration_host=raw.get("migration_host"),
        v2v_timeout=units.parse_duration(raw["v2v_timeout"]) if "v2v_timeout" in raw else 3600.0,
        v2v_stall_timeout=units.parse_duration(raw["v2v_stall_timeout"]) if "v2v_stall_timeout" in raw else 600.0,
        v2v_accel=raw.get("v2v_accel", "auto"),
        domain_type=raw.get("domain_type", "auto"),
    )


def _defaults(raw: dict[str, Any]) -> Defaults:
    base = Defaults()
    tolerance = raw.get("downtime_tolerance")
    return Defaults(
        method=raw.get("method", base.method),
        sync_interval=units.parse_duration(raw["sync_interval"]) if "sync_interval" in raw else base.sync_interval,
        bandwidth=_rate(raw.get("bandwidth")),
        compression=raw.get("compression", base.compression),
        concurrency=raw.get("concurrency", base.concurrency),
        concurrency_per_esxi_host=raw.get("concurrency_per_esxi_host"),
        concurrency_per_datastore=raw.get("concurrency_per_datastore"),
        cutover_window=_window(raw.get("cutover_window")),
        source_action=raw.get("source_action", base.source_action),
        target_state=raw.get("target_state", base.target_state),
        direct=raw.get("direct", base.direct),
        downtime_tolerance=units.parse_duration(tolerance) if tolerance is not None else None,
        hooks=_hooks(raw.get("hooks")),
    )


def _nic(raw: dict[str, Any], target: Target) -> NicSpec:
    mac = raw.get("mac", "keep")
    if mac not in ("keep", "generate"):
        mac = mac.lower().replace("-", ":")
    network = raw.get("network")
    if network is None and isinstance(raw.get("source"), str):
        network = target.network_for(raw["source"])
    return NicSpec(
        label=raw.get("label"),
        source=raw.get("source"),
        network=network,
        mac=mac,
        ip=raw.get("ip"),
        gateway=raw.get("gateway"),
        dns=tuple(raw.get("dns", [])),
    )


def _disk(raw: dict[str, Any]) -> DiskSpec:
    return DiskSpec(
        label=raw.get("label"),
        key=raw.get("key"),
        include=raw.get("include", True),
        size=units.parse_size(raw["size"]) if "size" in raw else None,
        datastore=raw.get("datastore"),
        storage=raw.get("storage"),
    )


def _agent(raw: Any, base: Path) -> AgentSpec | None:
    if not isinstance(raw, dict) or "address" not in raw:
        return None
    host, port = split_address(raw["address"]) or ("", 0)
    return AgentSpec(
        address=raw["address"],
        host=host,
        port=port,
        token_env=raw.get("token_env"),
        token_file=_path(base, raw.get("token_file")),
        ca_file=_path(base, raw.get("ca_file")),
        fingerprint=raw.get("fingerprint"),
        plaintext=raw.get("plaintext") is True,
    )


def _vm(raw: dict[str, Any], target: Target, base: Path) -> VMSpec:
    return VMSpec(
        name=raw["name"],
        target_name=raw.get("target_name", raw["name"]),
        method=raw.get("method"),
        cpus=raw.get("cpus"),
        memory=units.parse_size(raw["memory"]) if "memory" in raw else None,
        nics=tuple(_nic(n, target) for n in raw.get("nics", [])),
        disks=tuple(_disk(d) for d in raw.get("disks", [])),
        agent=_agent(raw.get("agent"), base),
        hooks=_hooks(raw.get("hooks")),
        overrides=frozenset(k for k in OVERRIDABLE if k in raw),
    )


def _effective(raw: dict[str, Any], spec: VMSpec, group: Group | None, d: Defaults) -> Effective:
    overridden = set(spec.overrides)
    source_action: SourceAction = d.source_action
    target_state: TargetState = d.target_state
    if group is not None and group.source_action is not None:
        source_action = group.source_action
        overridden.add("source_action")
    if group is not None and group.target_state is not None:
        target_state = group.target_state
        overridden.add("target_state")
    source_action = raw.get("source_action", source_action)
    target_state = raw.get("target_state", target_state)
    tolerance = raw.get("downtime_tolerance")
    method: Method = spec.method or d.method
    if method == "managed":  # no knobs at cutover: the source is shut down, the target boots
        source_action, target_state = "shutdown", "on"
    return Effective(
        name=spec.name,
        target_name=spec.target_name,
        group=group.name if group is not None else None,
        method=method,
        sync_interval=units.parse_duration(raw["sync_interval"]) if "sync_interval" in raw else d.sync_interval,
        bandwidth=_rate(raw["bandwidth"]) if "bandwidth" in raw else d.bandwidth,
        compression=raw.get("compression", d.compression),
        cutover_window=_window(raw["cutover_window"]) if "cutover_window" in raw else d.cutover_window,
        source_action=source_action,
        target_state=target_state,
        direct=raw.get("direct", d.direct),
        downtime_tolerance=units.parse_duration(tolerance) if tolerance is not None else d.downtime_tolerance,
        hooks=d.hooks.merged(spec.hooks),
        cpus=spec.cpus,
        memory=spec.memory,
        nics=spec.nics,
        disks=spec.disks,
        agent=spec.agent,
        overridden=frozenset(overridden),
    )


def build_plan(doc: dict[str, Any], *, file: Path) -> Plan:
    """The resolved :class:`Plan` of a checked document read from ``file``."""
    base = file.resolve().parent
    source = _source(doc.get("source", {}), base)
    target = _target(doc["target"], base)
    defaults = _defaults(doc.get("defaults", {}))
    groups = tuple(
        Group(
            name=g["name"],
            vms=tuple(g["vms"]),
            description=g.get("description"),
            source_action=g.get("source_action"),
            target_state=g.get("target_state"),
        )
        for g in doc.get("groups", [])
    )
    vms = tuple(_vm(v, target, base) for v in doc["vms"])
    group_of = {member: g for g in groups for member in g.vms}
    effective = {
        spec.name: _effective(raw, spec, group_of.get(spec.name), defaults)
        for raw, spec in zip(doc["vms"], vms, strict=True)
    }
    return Plan(
        file=file.resolve(),
        name=doc.get("name") or file.stem,
        source=source,
        target=target,
        defaults=defaults,
        groups=groups,
        vms=vms,
        version=doc["version"],
        description=doc.get("description"),
        effective_by_vm=MappingProxyType(effective),
    )
