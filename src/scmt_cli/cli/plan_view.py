"""Text pieces for ``scmt plan show`` (human view of the resolved plan)."""

from __future__ import annotations

from scmt_cli.domain.plan.model import CutoverWindow, Defaults, Effective, Hooks, Source, Target
from scmt_cli.domain.units import format_duration, format_rate, format_size
from scmt_cli.errors import redact_url


def _rate(value: float | None) -> str:
    return "unlimited" if value is None else format_rate(value)


def _window(window: CutoverWindow | None) -> str:
    if window is None:
        return "any time"
    return f"{window.start.isoformat()} .. {window.end.isoformat()}"


def _hooks(hooks: Hooks) -> str:
    parts = []
    for phase in ("sync", "failover", "rollback"):
        spec = getattr(hooks, phase)
        if spec is not None:
            timeout = format_duration(spec.timeout)
            parts.append(f"{phase}: {len(spec.pre)} pre, {len(spec.post)} post (timeout {timeout} each)")
    return "; ".join(parts) or "none"


def describe_source(src: Source) -> str:
    if not src.url:
        return "no vCenter (agent methods only)"
    if src.password_env:
        cred = f"password from ${src.password_env}"
    else:
        cred = f"password from file {src.password_file}"
    if src.insecure:
        tls = "TLS NOT VERIFIED (insecure)"
    elif src.thumbprint:
        tls = f"TLS pinned to SHA-256 {src.thumbprint[:17]}..."
    elif src.ca_file:
        tls = f"TLS CA {src.ca_file}"
    else:
        tls = "TLS system trust store"
    extra = []
    if src.datacenter:
        extra.append(f"datacenter {src.datacenter}")
    if src.vddk_libdir:
        extra.append(f"VDDK {src.vddk_libdir}")
    if src.inventory:
        extra.append(f"offline inventory {src.inventory}")
    return ", ".join([f"{redact_url(src.url)} as {src.username}", cred, tls, *extra])


def describe_target(t: Target) -> str:
    where = f"libvirt {t.uri}" if t.type == "libvirt" else f"dir {t.path}"
    nets = ", ".join(f"{k} -> {v}" for k, v in t.networks.items()) or "none"
    pools = ", ".join(f"{k} -> {v}" for k, v in t.storage.items()) or "none"
    host = f"; migration host {t.migration_host}" if t.migration_host else ""
    return f"{where}, {t.disk_format} disks; networks: {nets}; storage: {pools}{host}"


def describe_defaults(d: Defaults) -> str:
    tolerance = format_duration(d.downtime_tolerance) if d.downtime_tolerance is not None else "not set"
    return (
        f"method {d.method}, sync every {format_duration(d.sync_interval)}, bandwidth {_rate(d.bandwidth)}, "
        f"compression {d.compression}, concurrency {d.concurrency}\n"
        f"cutover {_window(d.cutover_window)}, source {d.source_action}, target {d.target_state}, "
        f"direct {'yes' if d.direct else 'no'}, downtime tolerance {tolerance}\n"
        f"hooks {_hooks(d.hooks)}"
    )


def _mark(eff: Effective, name: str, text: str) -> str:
    return f"{text}*" if name in eff.overridden else text


def vm_lines(eff: Effective) -> list[tuple[str, str]]:
    """(label, text) lines describing one VM's effective settings."""
    if eff.method == "hot-backup":
        sync = "continuous (hot backup)"
    else:
        sync = "every " + _mark(eff, "sync_interval", format_duration(eff.sync_interval))
    lines = [
        ("method", _mark(eff, "method", eff.method)),
        ("sync", f"{sync}, bandwidth {_mark(eff, 'bandwidth', _rate(eff.bandwidth))}, "
                 f"compression {_mark(eff, 'compression', eff.compression)}"),
        ("cutover", ", ".join(
            [
                _mark(eff, "cutover_window", _window(eff.cutover_window)),
                "source " + _mark(eff, "source_action", eff.source_action),
                "target " + _mark(eff, "target_state", eff.target_state),
            ]
            + (["direct failover"] if eff.direct else [])
            + ([f"downtime tolerance {format_duration(eff.downtime_tolerance)}"]
               if eff.downtime_tolerance is not None else [])
        )),
        ("resources", f"cpus {eff.cpus if eff.cpus is not None else 'as source'}, memory "
                      f"{format_size(eff.memory) if eff.memory is not None else 'as source'}"),
    ]
    for nic in eff.nics:
        text = f"{nic.label or nic.source} -> {nic.network or '(mapped from source network)'}, mac {nic.mac}"
        if nic.ip:
            text += f", ip {nic.ip}"
        if nic.gateway:
            text += f" gw {nic.gateway}"
        if nic.dns:
            text += f" dns {' '.join(nic.dns)}"
        lines.append(("nic", text))
    if not eff.nics:
        lines.append(("nics", "as the source, through target.networks"))
    for disk in eff.disks:
        name = disk.label if disk.label is not None else f"key {disk.key}"
        if not disk.include:
            text = "excluded"
        else:
            text = format_size(disk.size) if disk.size else "source size"
            if disk.storage:
                text += f", storage {disk.storage}"
        lines.append(("disk", f"{name}: {text}"))
    lines.append(("other disks", "migrated at source size" if eff.disks else "all migrated at source size"))
    if eff.agent is not None:
        auth = (f"token from ${eff.agent.token_env}" if eff.agent.token_env
                else f"token file {eff.agent.token_file}" if eff.agent.token_file else "no token")
        lines.append(("agent", f"{eff.agent.address} ({auth})"))
    lines.append(("hooks", _mark(eff, "hooks", _hooks(eff.hooks))))
    return lines
