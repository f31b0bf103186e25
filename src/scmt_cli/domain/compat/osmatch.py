"""Match a VM's guest OS strings to a row of the OS table.

Inputs, most precise first: the name VMware Tools report from inside the guest
(``Red Hat Enterprise Linux Server release 6.5 (Santiago)``), the configured
full name (``Microsoft Windows Server 2019 (64-bit)``) and the configured
``guestId`` (``rhel8_64Guest``).  The first input that names a family decides;
a version is taken from the most precise input that has one.

Versions match exactly first (``6.5``), then by major release (``6.9`` ->
the ``6`` row, ``server 2019 sp1`` -> ``server 2019``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scmt_cli.domain.compat.tables import LINUX_FAMILIES, OsRow, os_table


@dataclass(frozen=True)
class OsMatch:
    """What we learned about a guest OS.  ``row`` is None when no row fits."""

    family: str | None
    version: str | None
    bits: int | None
    row: OsRow | None
    matched_by: str  # "tools_full_name" | "guest_full_name" | "guest_id" | ""
    exact: bool = False  # the version matched a row exactly (not only its major release)

    @property
    def os_kind(self) -> str | None:
        """``"windows"`` / ``"linux"`` (the lab table's columns) or None."""
        if self.family == "windows":
            return "windows"
        if self.family in LINUX_FAMILIES:
            return "linux"
        return None


def _bits_of(text: str) -> int | None:
    low = text.lower()
    if re.search(r"64[- ]?bit|x86_64|amd64|_64guest|64guest|\bx64\b", low):
        return 64
    if re.search(r"32[- ]?bit|\bi[3-6]86\b|\bx86\b(?!_64)", low):
        return 32
    return None


def _norm_version(family: str, ver: str) -> str:
    v = re.sub(r"\s+", " ", ver.strip().lower())
    if family == "windows":
        v = re.sub(r"(20\d\d)\s*r2", r"\1 r2", v)
        if re.match(r"^20(0[38]|1[269]|2[25])", v):
            v = "server " + v
    if family == "sles":
        v = re.sub(r"(\d+)\s*sp(\d)", r"\1 sp\2", v)
    return v


def parse_guest(text: str) -> tuple[str, str | None] | None:
    """``(family, version)`` from a full name, or None when no family is recognised."""
    for family, pattern, _ in os_table().name_patterns:
        m = pattern.search(text)
        if m:
            ver = m.groupdict().get("ver")
            return family, (_norm_version(family, ver) if ver else None)
    return None


def _candidates(family: str, version: str) -> list[str]:
    """Versions to try, most specific first: ``6.5`` -> [6.5, 6]; ``server 2019 sp1`` -> [.., server 2019]."""
    out = [version]
    if family == "windows":
        base = re.sub(r"\s*sp\d$", "", version)
        if base != version:
            out.append(base)
    elif family == "sles":
        out.append(version.split(" ")[0])
    else:
        out.append(version.split(".")[0])
    return out


def find_row(family: str, version: str | None, bits: int | None) -> tuple[OsRow | None, bool]:
    """The best row for ``family``/``version``/``bits`` and whether it matched exactly."""
    if version is None:
        return None, False
    rows = [r for r in os_table().rows if r.family == family]
    for i, cand in enumerate(_candidates(family, version)):
        hits = [r for r in rows if r.version == cand]
        if not hits and family == "windows":
            # "server 2003" (no service pack named) -> the "server 2003 sp1" / "r2" rows
            hits = [r for r in rows if r.version.startswith(cand + " ") and "r2" not in r.version[len(cand):]]
            i = max(i, 1)
        if not hits:
            continue
        if bits is not None:
            with_bits = [r for r in hits if bits in r.bits]
            if with_bits:
                # prefer seed rows over added ones
                with_bits.sort(key=lambda r: r.source != "seed")
                return with_bits[0], i == 0
        hits.sort(key=lambda r: (r.source != "seed", -max(r.bits)))
        return hits[0], i == 0
    return None, False


def match_os(
    guest_id: str | None,
    guest_full_name: str | None = None,
    tools_full_name: str | None = None,
) -> OsMatch:
    """Match the three guest OS strings of a VM to the OS table (see module doc)."""
    table = os_table()
    family: str | None = None
    version: str | None = None
    bits: int | None = None
    matched_by = ""
    for source, text in (("tools_full_name", tools_full_name), ("guest_full_name", guest_full_name)):
        if not text:
            continue
        parsed = parse_guest(text)
        if parsed is None:
            continue
        if family is None:
            family, matched_by = parsed[0], source
        if parsed[0] == family and version is None and parsed[1]:
            version = parsed[1]
        if bits is None:
            bits = _bits_of(text)
    if guest_id:
        entry = table.guest_ids.get(guest_id.lower())
        if entry is not None:
            gfam, gver, gbits = entry
            if family is None:
                family, matched_by = gfam, "guest_id"
            if gfam == family:
                version = version or gver
                bits = bits or gbits
        elif bits is None:
            bits = _bits_of(guest_id)
    if family is None:
        return OsMatch(None, None, bits, None, "")
    row, exact = find_row(family, version, bits)
    return OsMatch(family, version, bits, row, matched_by, exact)
