"""Build the normalized :class:`~scmt_cli.domain.inventory.Inventory` from RVTools tabs.

Contract:

* the vInfo tab and its VM column are required: without them
  :class:`InputError` (exit 3) names the file, the tab and the columns tried;
* every other tab is optional; a missing tab or column is listed in
  ``Inventory.warnings`` with the rules it leaves unevaluated, and a missing
  tab whose rules can block a VM (vDisk, vSnapshot, vUSB) is also in
  ``Inventory.not_assessed``: the assessment is then ``incomplete``;
* a row with an unreadable value (``Memory`` = ``lots``) skips that VM only:
  ``Inventory.skipped`` gets ``file: tab row N column C: ...`` and the other
  VMs are still assessed;
* templates are left out (they are not migrated) and counted in a
  ``warnings`` entry that starts with ``note:`` (information, not a warning);
* values never reported stay ``None`` (rules then stay silent).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from scmt_cli.domain import inventory as inv
from scmt_cli.errors import InputError, Problem
from scmt_cli.inventory.columns import TABS, TabSpec, resolve
from scmt_cli.inventory.sheets import Sheet, read_csv_set, read_xlsx

MIB = 1024**2
T = TypeVar("T")


class RowError(ValueError):
    """A bad value in one row; carries the field name."""

    def __init__(self, fname: str, message: str) -> None:
        super().__init__(message)
        self.fname = fname


class Tab:
    """One sheet with its columns resolved through the mapping table."""

    def __init__(self, sheet: Sheet, spec: TabSpec) -> None:
        self.sheet = sheet
        self.spec = spec
        self.cols, self.missing = resolve(spec, sheet.headers)

    def has(self, fname: str) -> bool:
        return fname in self.cols

    def header(self, fname: str) -> str:
        return self.sheet.headers[self.cols[fname]] if fname in self.cols else self.spec.fields[fname][0]

    def raw(self, row: list[Any], fname: str) -> Any:
        col = self.cols.get(fname)
        if col is None or col >= len(row):
            return None
        value = row[col]
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    def get(self, row: list[Any], fname: str, conv: Callable[[Any], T]) -> T | None:
        value = self.raw(row, fname)
        if value is None:
            return None
        try:
            return conv(value)
        except (ValueError, TypeError, OverflowError) as exc:
            raise RowError(fname, f"{exc}") from exc


def to_str(v: Any) -> str:
    return str(v)


def to_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    if isinstance(v, int):
        return v
    number = v if isinstance(v, float) else None
    if number is None:
        text = str(v).replace(",", "").replace(" ", "")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {v!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {v!r}")
    return int(number)


def to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in ("true", "yes", "1", "on", "enabled", "wahr", "vrai"):
        return True
    if text in ("false", "no", "0", "off", "disabled", "falsch", "faux"):
        return False
    raise ValueError(f"expected True or False, got {v!r}")


def _power(v: Any) -> inv.PowerState:
    text = str(v).strip().lower().replace(" ", "")
    for state in ("poweredOn", "poweredOff", "suspended"):
        if text == state.lower():
            return state
    raise ValueError(f"expected poweredOn, poweredOff or suspended, got {v!r}")


def _tools(v: Any) -> inv.ToolsStatus:
    text = str(v).strip().lower()
    if "notinstalled" in text or "not installed" in text:
        return "notInstalled"
    if "notrunning" in text or "not running" in text:
        return "notRunning"
    if text in ("toolsok", "toolsold", "guesttoolsrunning", "running", "ok", "toolssupportedold", "toolsneedupgrade"):
        return "running"
    return "unknown"


def _esx_version(text: str) -> tuple[str | None, str | None]:
    """``"VMware ESXi 7.0.3 build-20328353"`` -> (``"7.0.3"``, ``"20328353"``)."""
    ver = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    build = re.search(r"build[- ]?(\d+)", text, re.IGNORECASE)
    return (ver.group(1) if ver else None, build.group(1) if build else None)


def _datastore_of(path: str | None) -> str | None:
    if path and path.startswith("["):
        return path[1 : path.index("]")] if "]" in path else None
    return None


def _disk_mode(v: Any) -> inv.DiskMode:
    text = str(v).strip().lower().replace(" ", "_").replace("-", "_")
    allowed = ("persistent", "independent_persistent", "independent_nonpersistent", "nonpersistent", "undoable")
    if text in allowed:
        return text  # type: ignore[return-value]
    raise ValueError(f"expected a disk mode ({', '.join(allowed)}), got {v!r}")


def _rdm(raw: bool | None, mode: str | None) -> inv.RdmMode | None:
    if mode:
        low = mode.lower()
        if low.startswith("physical"):
            return "physical"
        if low.startswith("virtual"):
            return "virtual"
    return "physical" if raw else None


def load_rvtools(path: Path) -> inv.Inventory:
    """Read an RVTools export (xlsx workbook, one CSV file, or a directory of CSV files)."""
    sheets = read_xlsx(path) if path.suffix.lower() in (".xlsx", ".xlsm") else read_csv_set(path)
    by_norm = {name.lower(): s for name, s in sheets.items()}
    warnings: list[str] = []
    skipped: list[str] = []
    not_assessed: list[inv.NotAssessed] = []
    tabs: dict[str, Tab] = {}
    for tname, spec in TABS.items():
        sheet = by_norm.get(tname.lower())
        if sheet is None:
            if spec.required:
                raise InputError(
                    f"{path}: no {tname} tab (found: {', '.join(sorted(sheets)) or 'none'})",
                    hint="export every tab from RVTools (File > Export all to Excel / CSV)",
                )
            warnings.append(f"{path}: no {tname} tab: {tname} data not assessed")
            if spec.blocking:
                not_assessed.append(inv.NotAssessed(f"no {tname} tab", spec.blocking))
            continue
        tab = Tab(sheet, spec)
        if spec.key in tab.missing:
            tried = ", ".join(repr(n) for n in spec.fields[spec.key])
            msg = f"{sheet.file}: {tname} tab has no VM name column (tried {tried})"
            if spec.required:
                raise InputError(msg, problems=[Problem(sheet.file, msg, path=f"{tname}!1")])
            warnings.append(msg + ": tab ignored")
            continue
        for fname in tab.missing:
            if fname in spec.feeds:
                col = spec.fields[fname][0]
                warnings.append(f"{sheet.file}: {tname} tab has no {col!r} column: {spec.feeds[fname]} not evaluated")
        tabs[tname] = tab
    return replace(_build(path, tabs, warnings, skipped), not_assessed=tuple(not_assessed))


def _rows_by_vm(tab: Tab | None) -> dict[str, list[tuple[int, list[Any]]]]:
    out: dict[str, list[tuple[int, list[Any]]]] = defaultdict(list)
    if tab is None:
        return out
    for n, row in tab.sheet.rows:
        key = tab.raw(row, tab.spec.key)
        if key is not None:
            out[str(key)].append((n, row))
    return out


class Cursor:
    """Which tab and row are being read, so a :class:`RowError` can be located."""

    def __init__(self, tab: Tab, row: int) -> None:
        self.tab = tab
        self.row = row

    def at(self, tab: Tab, row: int) -> Cursor:
        self.tab, self.row = tab, row
        return self


def _build(path: Path, tabs: dict[str, Tab], warnings: list[str], skipped: list[str]) -> inv.Inventory:
    hosts: list[inv.Host] = []
    datastores: list[inv.Datastore] = []
    if (ht := tabs.get("vHost")) is not None:
        for _n, row in ht.sheet.rows:
            name = ht.raw(row, "host")
            if name is None:
                continue
            ver, build = _esx_version(str(ht.raw(row, "esx_version") or ""))
            hosts.append(inv.Host(str(name), esxi_version=ver, esxi_build=build))
    if (dt := tabs.get("vDatastore")) is not None:
        for n, row in dt.sheet.rows:
            try:
                name = dt.raw(row, "name")
                if name is None:
                    continue
                cap = dt.get(row, "capacity_mib", to_int)
                free = dt.get(row, "free_mib", to_int)
                dtype = dt.get(row, "type", to_str)
            except RowError as exc:
                warnings.append(f"{dt.sheet.file}: vDatastore row {n} column {dt.header(exc.fname)!r}: {exc}")
                continue
            cap_b = None if cap is None else cap * MIB
            free_b = None if free is None else free * MIB
            datastores.append(inv.Datastore(str(name), cap_b, free_b, dtype))
    per = {t: _rows_by_vm(tabs.get(t)) for t in ("vDisk", "vPartition", "vNetwork", "vSnapshot", "vTools", "vUSB")}
    info = tabs["vInfo"]
    vms: list[inv.VM] = []
    templates = 0
    source = f"rvtools:{path.name}"
    for n, row in info.sheet.rows:
        raw_name = info.raw(row, "vm")
        if raw_name is None:
            skipped.append(f"{info.sheet.file}: vInfo row {n}: no VM name")
            continue
        name = str(raw_name)
        cur = Cursor(info, n)
        try:
            if info.get(row, "template", to_bool):
                templates += 1
                continue
            vm = _vm(name, row, n, tabs, per, source, cur)
        except RowError as exc:
            skipped.append(
                f"{cur.tab.sheet.file}: {cur.tab.spec.name} row {cur.row} column {cur.tab.header(exc.fname)!r}: "
                f"VM {name!r} skipped: {exc}"
            )
            continue
        vms.append(vm)
    if templates:
        warnings.append(f"note: {path}: {templates} template(s) left out (templates are not migrated)")
    return inv.Inventory(
        vms=tuple(vms),
        hosts=tuple(hosts),
        datastores=tuple(datastores),
        source=source,
        skipped=tuple(skipped),
        warnings=tuple(warnings),
    )


Rows = dict[str, dict[str, list[tuple[int, list[Any]]]]]


def _disks(name: str, tabs: dict[str, Tab], per: Rows, cur: Cursor) -> list[inv.Disk]:
    disks: list[inv.Disk] = []
    t = tabs.get("vDisk")
    for i, (n, r) in enumerate(per["vDisk"].get(name, [])):
        assert t is not None
        cur.at(t, n)
        cap = t.get(r, "capacity_mib", to_int)
        fpath = t.get(r, "path", to_str)
        raw = t.get(r, "raw", to_bool)
        controller = t.get(r, "controller", to_str)
        disks.append(
            inv.Disk(
                key=t.get(r, "disk_key", to_int) or 2000 + i,
                label=t.get(r, "disk", to_str) or f"Hard disk {i + 1}",
                capacity_bytes=(cap or 0) * MIB,
                file=fpath,
                datastore=_datastore_of(fpath),
                thin=t.get(r, "thin", to_bool),
                mode=t.get(r, "mode", _disk_mode) if t.has("mode") else None,
                sharing=t.get(r, "sharing", to_str),
                rdm=_rdm(raw, t.get(r, "raw_mode", to_str)),
                controller=controller.split(" ")[0].lower() if controller else None,
                controller_model=controller,
            )
        )
    return disks


def _spread_in_use(disks: list[inv.Disk], in_use_mib: int | None) -> list[inv.Disk]:
    """Give each copied disk a share of vInfo's per-VM ``In Use`` (proportional to capacity).

    RVTools reports space in use per VM, not per disk; the share is an
    approximation that estimates use when the guest's partitions are unknown.
    """
    import dataclasses

    copied = [d for d in disks if d.rdm is None]
    total = sum(d.capacity_bytes for d in copied)
    if in_use_mib is None or not total:
        return disks
    in_use = min(in_use_mib * MIB, total)
    return [
        d if d.rdm is not None else dataclasses.replace(d, used_bytes=in_use * d.capacity_bytes // total)
        for d in disks
    ]


def _partitions(name: str, tabs: dict[str, Tab], per: Rows, cur: Cursor) -> list[inv.Partition]:
    out: list[inv.Partition] = []
    t = tabs.get("vPartition")
    for n, r in per["vPartition"].get(name, []):
        assert t is not None
        cur.at(t, n)
        cap = t.get(r, "capacity_mib", to_int)
        free = t.get(r, "free_mib", to_int)
        out.append(
            inv.Partition(
                mount=t.get(r, "disk", to_str) or "?",
                capacity_bytes=None if cap is None else cap * MIB,
                free_bytes=None if free is None else free * MIB,
                filesystem=t.get(r, "filesystem", to_str),
            )
        )
    return out


def _nics(name: str, tabs: dict[str, Tab], per: Rows, cur: Cursor) -> tuple[list[inv.Nic], int]:
    nics: list[inv.Nic] = []
    sriov = 0
    t = tabs.get("vNetwork")
    for i, (n, r) in enumerate(per["vNetwork"].get(name, [])):
        assert t is not None
        cur.at(t, n)
        adapter = t.get(r, "adapter", to_str)
        if adapter and "sriov" in adapter.lower():
            sriov += 1
        ips = tuple(ip for ip in re.split(r"[,;\s]+", t.get(r, "ipv4", to_str) or "") if ip)
        nics.append(
            inv.Nic(
                key=4000 + i,
                label=t.get(r, "label", to_str) or f"Network adapter {i + 1}",
                network=t.get(r, "network", to_str),
                mac=t.get(r, "mac", to_str),
                ips=ips,
                connected=t.get(r, "connected", to_bool),
                start_connected=t.get(r, "starts_connected", to_bool),
                adapter_type=adapter.lower() if adapter else None,
            )
        )
    return nics, sriov


def _snapshots(name: str, tabs: dict[str, Tab], per: Rows, cur: Cursor) -> list[inv.Snapshot]:
    out: list[inv.Snapshot] = []
    t = tabs.get("vSnapshot")
    for n, r in per["vSnapshot"].get(name, []):
        assert t is not None
        cur.at(t, n)
        size = t.get(r, "size_mib", to_int)
        out.append(
            inv.Snapshot(
                name=t.get(r, "name", to_str) or "(unnamed)",
                created=t.get(r, "created", to_str),
                description=t.get(r, "description", to_str),
                quiesced=t.get(r, "quiesced", to_bool),
                size_bytes=None if size is None else size * MIB,
            )
        )
    return out


def _vm(name: str, row: list[Any], row_no: int, tabs: dict[str, Tab], per: Rows, source: str, cur: Cursor) -> inv.VM:
    """One VM from its vInfo row and its rows in the other tabs."""
    info = tabs["vInfo"]
    disks = _spread_in_use(_disks(name, tabs, per, cur), info.get(row, "in_use_mib", to_int))
    partitions = _partitions(name, tabs, per, cur)
    nics, sriov = _nics(name, tabs, per, cur)
    snapshots = _snapshots(name, tabs, per, cur)
    tools_status: inv.ToolsStatus | None = None
    tools_version: str | None = None
    tt = tabs.get("vTools")
    for n, r in per["vTools"].get(name, [])[:1]:
        assert tt is not None
        cur.at(tt, n)
        status = tt.get(r, "tools", to_str)
        tools_status = _tools(status) if status else None
        tools_version = tt.get(r, "version", to_str)
    cur.at(info, row_no)
    fw = info.get(row, "firmware", to_str)
    firmware: inv.Firmware | None = None
    if fw is not None:
        firmware = "efi" if fw.lower() in ("efi", "uefi") else "bios"
    if not nics and (ip := info.get(row, "primary_ip", to_str)):
        nics.append(inv.Nic(key=4000, label="Network adapter 1", ips=(ip,)))
    return inv.VM(
        name=name,
        uuid=info.get(row, "uuid", to_str),
        moref=info.get(row, "vm_id", to_str),
        power_state=info.get(row, "powerstate", _power),
        guest_id=info.get(row, "guest_id", to_str),
        guest_full_name=info.get(row, "os_config", to_str),
        tools_guest_full_name=info.get(row, "os_tools", to_str),
        hostname=info.get(row, "dns_name", to_str),
        firmware=firmware,
        secure_boot=info.get(row, "secure_boot", to_bool),
        cpus=info.get(row, "cpus", to_int),
        memory_mib=info.get(row, "memory", to_int),
        disks=tuple(disks),
        nics=tuple(nics),
        partitions=tuple(partitions),
        snapshots=tuple(snapshots),
        consolidation_needed=info.get(row, "consolidation", to_bool),
        cbt_enabled=info.get(row, "cbt", to_bool),
        tools_status=tools_status,
        tools_version=tools_version,
        hardware_version=info.get(row, "hw_version", to_str),
        host=info.get(row, "host", to_str),
        folder=info.get(row, "folder", to_str),
        cluster=info.get(row, "cluster", to_str),
        usb_devices=len(per["vUSB"].get(name, [])),
        sriov_nics=sriov,
        annotation=info.get(row, "annotation", to_str),
        source=source,
    )
