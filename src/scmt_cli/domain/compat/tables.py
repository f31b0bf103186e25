"""Loaders for the versioned compatibility data files in ``compat/data/``.

The data (operating systems, VMware versions, file systems, ports, lab switch
times) lives in YAML files inside the package so it can be reviewed and
updated without touching code.  Every file carries ``format: 1``; a loader
refuses any other format.  Each loader is cached: the files are read once per
process.  A malformed data file is a bug in scmt, reported as
:class:`~scmt_cli.errors.InternalError` naming the file and field.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from scmt_cli.errors import InternalError

METHODS: tuple[str, ...] = ("managed", "agentless", "agent", "hot-backup")
FORMAT = 1


def _load(name: str) -> dict[str, Any]:
    text = resources.files("scmt_cli.domain.compat").joinpath("data", name).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InternalError(f"compat/data/{name}: expected a mapping with 'format: {FORMAT}'")
    return data


def version_tuple(text: str) -> tuple[int, ...]:
    """``"7.0.2"`` -> ``(7, 0, 2)``; ``"7.0 U3"`` -> ``(7, 0, 3)``; non-numeric parts are dropped.

    Update suffixes (``U2``/``Update 2``) count as a third component, matching
    how VMware numbers 7.0 Update 2 as 7.0.2.
    """
    m = re.match(r"^\s*(\d+(?:\.\d+)*)(?:\s*(?:u|update)\s*(\d+))?", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"not a version: {text!r}")
    parts = [int(p) for p in m.group(1).split(".")]
    if m.group(2) is not None and len(parts) == 2:
        parts.append(int(m.group(2)))
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


# ----------------------------------------------------------------- OS rows


@dataclass(frozen=True)
class OsRow:
    """One row of the OS table (``data/os.yaml``)."""

    family: str
    version: str
    bits: tuple[int, ...]
    boot: tuple[str, ...]
    scmt: bool
    platform: bool
    source: str  # "seed" | "added"
    note: str = ""

    @property
    def supported(self) -> bool:
        return self.scmt and self.platform

    @property
    def label(self) -> str:
        ver = re.sub(r"\b(server|sp\d|r2|xp|nt)\b", lambda m: m.group(1).upper() if m.group(1) != "server"
                     else "Server", self.version)
        return f"{FAMILY_NAMES.get(self.family, self.family)} {ver}"


FAMILY_NAMES = {
    "windows": "Windows",
    "rhel": "Red Hat Enterprise Linux",
    "centos": "CentOS",
    "rocky": "Rocky Linux",
    "alma": "AlmaLinux",
    "sles": "SUSE Linux Enterprise",
    "ubuntu": "Ubuntu",
    "debian": "Debian",
}
LINUX_FAMILIES = frozenset({"rhel", "centos", "rocky", "alma", "sles", "ubuntu", "debian"})


@dataclass(frozen=True)
class OsTable:
    rows: tuple[OsRow, ...]
    guest_ids: dict[str, tuple[str, str | None, int | None]]
    name_patterns: tuple[tuple[str, re.Pattern[str], str], ...]


@functools.cache
def os_table() -> OsTable:
    data = _load("os.yaml")
    rows = []
    for i, r in enumerate(data["rows"]):
        try:
            rows.append(
                OsRow(
                    family=str(r["family"]),
                    version=str(r["version"]).lower(),
                    bits=tuple(int(b) for b in r["bits"]),
                    boot=tuple(str(b) for b in r["boot"]),
                    scmt=bool(r["scmt"]),
                    platform=bool(r["platform"]),
                    source=str(r["source"]),
                    note=str(r.get("note", "")),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InternalError(f"compat/data/os.yaml: rows[{i}]: {exc}") from exc
    guest_ids = {
        str(k).lower(): (str(v[0]), None if v[1] is None else str(v[1]), None if v[2] is None else int(v[2]))
        for k, v in data["guest_ids"].items()
    }
    patterns = tuple((str(p[0]), re.compile(str(p[1]), re.IGNORECASE), str(p[2])) for p in data["name_patterns"])
    return OsTable(tuple(rows), guest_ids, patterns)


# ---------------------------------------------------------- VMware versions


@dataclass(frozen=True)
class VersionRange:
    method: str
    listed: tuple[str, ...]
    min: str
    max: str
    source: str

    def classify(self, version: str) -> str:
        """``"ok"``, ``"below"`` (unsupported) or ``"above"`` (not validated)."""
        v = version_tuple(version)
        if v < version_tuple(self.min):
            return "below"
        if v > version_tuple(self.max):
            return "above"
        return "ok"


@functools.cache
def vmware_ranges() -> dict[str, VersionRange]:
    data = _load("vmware.yaml")
    return {
        m: VersionRange(m, tuple(str(x) for x in d["listed"]), str(d["min"]), str(d["max"]), str(d["source"]))
        for m, d in data["methods"].items()
    }


# ------------------------------------------------------------------ storage


@dataclass(frozen=True)
class StorageSupport:
    filesystems: frozenset[str]
    device_formats: frozenset[str]
    aliases: dict[str, str | None]
    mbr_max_bytes: int

    def normalize(self, name: str) -> str | None:
        """The seed's name for ``name``; ``"ignore"`` for pseudo file systems; None if unsupported."""
        key = name.strip().lower()
        if key in self.filesystems or key in self.device_formats:
            return key
        if key in self.aliases:
            return self.aliases[key]
        return None


@functools.cache
def storage_support() -> StorageSupport:
    data = _load("storage.yaml")
    return StorageSupport(
        filesystems=frozenset(str(x) for x in data["filesystems"]),
        device_formats=frozenset(str(x) for x in data["device_formats"]),
        aliases={str(k): (None if v is None else str(v)) for k, v in data["aliases"].items()},
        mbr_max_bytes=int(data["mbr_max_bytes"]),
    )


# -------------------------------------------------------------------- ports


@dataclass(frozen=True)
class PortRule:
    method: str
    src: str
    dst: str
    ports: tuple[int, ...]  # every port of the rule, ranges expanded
    spec: str  # as written: "20000-20047"
    purpose: str
    check_from_here: bool


def parse_ports(spec: str) -> tuple[int, ...]:
    """``"80,443"`` -> (80, 443); ``"20000-20003"`` -> (20000, ..., 20003)."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            if not 0 < lo <= hi < 65536:
                raise ValueError(f"bad port range {part!r}")
            out.extend(range(lo, hi + 1))
        else:
            port = int(part)
            if not 0 < port < 65536:
                raise ValueError(f"bad port {part!r}")
            out.append(port)
    return tuple(out)


@functools.cache
def port_rules() -> dict[str, tuple[PortRule, ...]]:
    data = _load("ports.yaml")
    out: dict[str, tuple[PortRule, ...]] = {}
    for method, rules in data["methods"].items():
        out[str(method)] = tuple(
            PortRule(
                method=str(method),
                src=str(r["from"]),
                dst=str(r["to"]),
                ports=parse_ports(str(r["ports"])),
                spec=str(r["ports"]),
                purpose=str(r["purpose"]),
                check_from_here=bool(r["check_from_here"]),
            )
            for r in rules
        )
    return out


# ----------------------------------------------------------------- downtime


@functools.cache
def lab_switch_seconds() -> dict[str, dict[str, int]]:
    """``{"windows": {"managed": 428, ...}, "linux": {...}}`` from the seed's lab table."""
    data = _load("downtime.yaml")
    return {str(os): {str(m): int(s) for m, s in d.items()} for os, d in data["switch_seconds"].items()}
