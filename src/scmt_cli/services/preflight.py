"""Network preflight: can the migration host reach every port the method needs?

The required connections come from the seed's port table
(``domain/compat/data/ports.yaml``).  This module checks those that start on
the migration host (where ``scmt`` runs) with a TCP connect to each real
address, concurrently and with a timeout:

* ``open``      - the connection was accepted;
* ``closed``    - refused (the host answered, nothing listens or a firewall rejects);
* ``filtered``  - no answer before the timeout (a firewall drops the packets);
* ``unresolved``- the name does not resolve.

Connections that start elsewhere (source VM -> migration host, for agent
methods) cannot be tested from here; they are listed with status
``not_checked`` so the operator can open them.  Port ranges are sampled at
their first, middle and last port (``sampled: true``); a range is open only
when every sample is.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from scmt_cli.domain.compat import port_rules
from scmt_cli.events import NullReporter, Reporter

Status = Literal["open", "closed", "filtered", "unresolved", "not_checked"]
DEFAULT_TIMEOUT = 3.0
DEFAULT_WORKERS = 32


@dataclass(frozen=True)
class PortCheck:
    """One host:port to test, with why it is needed."""

    host: str
    port: int
    role: str  # vcenter, esxi, target, migration_host ...
    purpose: str
    src: str = "migration_host"
    sampled: bool = False


@dataclass(frozen=True)
class PortResult:
    check: PortCheck
    status: Status
    detail: str = ""
    elapsed_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("open", "not_checked")

    def to_dict(self) -> dict[str, Any]:
        c = self.check
        return {
            "from": c.src,
            "host": c.host,
            "port": c.port,
            "role": c.role,
            "purpose": c.purpose,
            "status": self.status,
            "detail": self.detail,
            "sampled": c.sampled,
            "elapsed_ms": self.elapsed_ms,
        }


@dataclass
class PreflightReport:
    method: str
    results: list[PortResult] = field(default_factory=list)
    missing_roles: list[str] = field(default_factory=list)  # roles with no address to test

    @property
    def failed(self) -> list[PortResult]:
        return [r for r in self.results if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "ok": not self.failed,
            "results": [r.to_dict() for r in self.results],
            "missing_roles": list(self.missing_roles),
        }


def _sample(ports: Sequence[int]) -> tuple[list[int], bool]:
    if len(ports) <= 3:
        return list(ports), False
    return sorted({ports[0], ports[len(ports) // 2], ports[-1]}), True


def split_host_port(addr: str) -> tuple[str, int | None]:
    """``"vc:8443"`` -> ("vc", 8443); ``"[::1]:443"`` -> ("::1", 443); ``"vc"`` -> ("vc", None)."""
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if addr.count(":") == 1:
        host, _, port = addr.partition(":")
        if port.isdigit():
            return host, int(port)
    return addr, None


def required_checks(method: str, addresses: Mapping[str, Iterable[str]]) -> tuple[list[PortCheck], list[str]]:
    """The checks for ``method`` given real addresses per role (``{"vcenter": ["vc.example"], ...}``).

    An address may carry a port (``vc.example:8443``, ``db01:20001``): it
    replaces the table's ports (a vCenter on a non-standard port, the port an
    agent was given).  Returns the
    checks and the roles that have no address (their checks are skipped).
    """
    rules = port_rules().get(method)
    if rules is None:
        raise ValueError(f"unknown method {method!r}")
    checks: list[PortCheck] = []
    missing: list[str] = []
    for rule in rules:
        if not rule.check_from_here:
            checks.append(
                PortCheck(rule.dst, rule.ports[0], rule.dst, f"{rule.purpose} (ports {rule.spec}, from {rule.src})",
                          src=rule.src, sampled=len(rule.ports) > 1)
            )
            continue
        hosts = [h for h in addresses.get(rule.dst, ()) if h]
        if not hosts:
            if rule.dst not in missing:
                missing.append(rule.dst)
            continue
        for addr in dict.fromkeys(hosts):
            host, explicit = split_host_port(addr)
            if explicit is not None:
                ports, sampled = [explicit], False
            else:
                ports, sampled = _sample(rule.ports)
            for port in ports:
                checks.append(PortCheck(host, port, rule.dst, rule.purpose, rule.src, sampled))
    return checks, missing


def probe(host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> tuple[Status, str]:
    """One TCP connect: ``open``/``closed``/``filtered``/``unresolved`` plus a detail."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return "unresolved", str(exc.strerror or exc)
    last: tuple[Status, str] = ("filtered", "no address")
    for family, stype, proto, _, addr in infos:
        sock = socket.socket(family, stype, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
            return "open", f"connected to {addr[0]}"
        except TimeoutError:
            last = ("filtered", f"no answer within {timeout:g}s")
        except ConnectionRefusedError:
            last = ("closed", "connection refused")
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                last = ("filtered", exc.strerror or str(exc))
            else:
                last = ("closed", exc.strerror or str(exc))
        finally:
            sock.close()
    return last


def run_preflight(
    method: str,
    checks: Sequence[PortCheck],
    *,
    missing_roles: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    workers: int = DEFAULT_WORKERS,
    reporter: Reporter | None = None,
) -> PreflightReport:
    """Run every check concurrently; ``not_checked`` for connections that start elsewhere."""
    rep = reporter or NullReporter()
    report = PreflightReport(method, missing_roles=list(missing_roles))
    to_probe = [c for c in checks if c.src == "migration_host"]
    results: dict[int, PortResult] = {}

    def one(i_check: tuple[int, PortCheck]) -> tuple[int, PortResult]:
        import time

        i, c = i_check
        t0 = time.monotonic()
        status, detail = probe(c.host, c.port, timeout)
        return i, PortResult(c, status, detail, int((time.monotonic() - t0) * 1000))

    if to_probe:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(to_probe)))) as pool:
            done = 0
            for i, res in pool.map(one, list(enumerate(to_probe))):
                results[i] = res
                done += 1
                rep.progress("preflight", done, len(to_probe), unit="checks")
    probed = iter(results[i] for i in range(len(to_probe)))
    for c in checks:
        if c.src == "migration_host":
            report.results.append(next(probed))
        else:
            report.results.append(PortResult(c, "not_checked", f"starts on the {c.src}; test it from there"))
    for r in report.failed:
        rep.log("warning", f"preflight: {r.check.host}:{r.check.port} ({r.check.role}) is {r.status}: {r.detail}")
    return report
