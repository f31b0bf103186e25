"""Generate RVTools-like exports (xlsx with openpyxl, CSV with the csv module)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

# One estate: web01 (clean), db01 (RDM + snapshot + tools not running), tmpl01 (a template).
TABS: dict[str, tuple[list[str], list[list[Any]]]] = {
    "vInfo": (
        ["VM", "Powerstate", "Template", "DNS Name", "Consolidation Needed", "CPUs", "Memory", "NICs", "Disks",
         "In Use MiB", "Provisioned MiB", "Primary IP Address", "Firmware", "HW version",
         "OS according to the configuration file", "OS according to the VMware Tools", "VM UUID", "Host",
         "Cluster", "CBT"],
        [
            ["web01", "poweredOn", "False", "web01.example.com", "False", 2, 4096, 1, 1, 20480, 40960, "10.0.0.11",
             "bios", "vmx-15", "Red Hat Enterprise Linux 6 (64-bit)",
             "Red Hat Enterprise Linux Server release 6.5 (Santiago)", "4201-aa", "esx1", "Prod", "True"],
            ["db01", "poweredOn", "False", "db01.example.com", "True", 4, 16384, 1, 2, 102400, 204800, "10.0.0.12",
             "efi", "vmx-19", "Microsoft Windows Server 2019 (64-bit)", "Microsoft Windows Server 2019 Standard",
             "4201-bb", "esx2", "Prod", "False"],
            ["tmpl01", "poweredOff", "True", "", "False", 1, 1024, 0, 1, 1, 1, "", "bios", "vmx-15",
             "Red Hat Enterprise Linux 8 (64-bit)", "", "4201-cc", "esx1", "Prod", "False"],
        ],
    ),
    "vDisk": (
        ["VM", "Disk", "Disk Key", "Disk Path", "Capacity MiB", "Raw", "Raw Com. Mode", "Disk Mode", "Sharing mode",
         "Thin", "Controller"],
        [
            ["web01", "Hard disk 1", 2000, "[ds1] web01/web01.vmdk", 40960, "False", "", "persistent", "sharingNone",
             "True", "SCSI controller 0"],
            ["db01", "Hard disk 1", 2000, "[ds1] db01/db01.vmdk", 102400, "False", "", "persistent", "sharingNone",
             "False", "SCSI controller 0"],
            ["db01", "Hard disk 2", 2001, "[ds1] db01/db01_1.vmdk", 102400, "True", "physicalMode", "persistent",
             "sharingNone", "False", "SCSI controller 1"],
        ],
    ),
    "vPartition": (
        ["VM", "Disk", "Capacity MiB", "Consumed MiB", "Free MiB"],
        [["web01", "/", 40000, 20000, 20000], ["db01", "C:\\", 100000, 60000, 40000]],
    ),
    "vNetwork": (
        ["VM", "NIC label", "Adapter", "Network", "Mac Address", "IPv4 Address", "Connected", "Starts Connected"],
        [
            ["web01", "Network adapter 1", "Vmxnet3", "VM Network", "00:50:56:aa:00:01", "10.0.0.11", "True", "True"],
            ["db01", "Network adapter 1", "Vmxnet3", "DB", "00:50:56:aa:00:02", "10.0.0.12, 10.0.1.12", "True",
             "True"],
        ],
    ),
    "vSnapshot": (
        ["VM", "Name", "Description", "Date / time", "Size MiB (total)", "Quiesced"],
        [["db01", "before-upgrade", "", "2024/05/01 10:00:00", 2048, "False"]],
    ),
    "vTools": (
        ["VM", "Tools", "Tools Version"],
        [["web01", "toolsOk", "12352"], ["db01", "toolsNotRunning", "11333"]],
    ),
    "vHost": (
        ["Host", "Cluster", "ESX Version"],
        [["esx1", "Prod", "VMware ESXi 7.0.2 build-17867351"], ["esx2", "Prod", "VMware ESXi 8.0.1 build-21495797"]],
    ),
    "vDatastore": (
        ["Name", "Type", "Capacity MiB", "Free MiB"],
        [["ds1", "VMFS", 2097152, 1048576]],
    ),
    "vUSB": (["VM", "Device Type", "Connected"], []),
}


def tabs(renames: dict[str, dict[str, str]] | None = None, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The estate with some columns renamed (``{"vInfo": {"In Use MiB": "In Use MB"}}``) or tabs dropped."""
    out = {}
    for name, (headers, rows) in TABS.items():
        if name in drop:
            continue
        r = (renames or {}).get(name, {})
        out[name] = ([r.get(h, h) for h in headers], [list(x) for x in rows])
    return out


def write_xlsx(path: Path, data: dict[str, Any]) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, (headers, rows) in data.items():
        ws = wb.create_sheet(name)
        ws.append(headers)
        for row in rows:
            ws.append([_cell(v) for v in row])
    wb.save(path)
    return path


def _cell(v: Any) -> Any:
    if v == "True":
        return True
    if v == "False":
        return False
    return v if v != "" else None


def write_csv_dir(directory: Path, data: dict[str, Any], *, delimiter: str = ",", encoding: str = "utf-8-sig",
                  prefix: str = "RVTools_tab") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (headers, rows) in data.items():
        with open(directory / f"{prefix}{name}.csv", "w", newline="", encoding=encoding) as f:
            w = csv.writer(f, delimiter=delimiter)
            w.writerow(headers)
            w.writerows(rows)
    return directory
