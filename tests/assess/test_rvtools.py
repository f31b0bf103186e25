"""RVTools exports: column mapping, renamed columns, CSV dialects, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from scmt_cli.errors import InputError, MissingFileError
from scmt_cli.inventory import load_inventory
from scmt_cli.inventory.columns import TABS as SPECS
from scmt_cli.inventory.columns import norm_header, resolve

from .rvfixtures import tabs, write_csv_dir, write_xlsx

MIB = 1024**2
LAB = Path(__file__).resolve().parents[2] / "examples" / "lab.yaml"


def check_estate(inv):
    assert [v.name for v in inv.vms] == ["web01", "db01"]  # the template is left out
    assert any(w.startswith("note: ") and "template" in w for w in inv.warnings)
    web, db = inv.vms
    assert web.power_state == "poweredOn"
    assert web.memory_mib == 4096 and web.cpus == 2
    assert web.tools_guest_full_name.startswith("Red Hat Enterprise Linux Server release 6.5")
    assert web.tools_status == "running"
    assert web.cbt_enabled is True
    assert web.disks[0].capacity_bytes == 40960 * MIB
    assert web.disks[0].datastore == "ds1"
    assert web.disks[0].thin is True
    assert web.partitions[0].free_bytes == 20000 * MIB
    assert web.ips == ("10.0.0.11",)
    assert db.firmware == "efi"
    assert db.consolidation_needed is True
    assert db.cbt_enabled is False
    assert db.tools_status == "notRunning"
    assert [d.rdm for d in db.disks] == [None, "physical"]
    assert db.ips == ("10.0.0.12", "10.0.1.12")
    assert [s.name for s in db.snapshots] == ["before-upgrade"]
    assert inv.host("esx2").esxi_version == "8.0.1"
    assert inv.host("esx1").esxi_build == "17867351"
    assert inv.datastore("ds1").free_bytes == 1048576 * MIB


def test_xlsx(tmp_path):
    inv = load_inventory(write_xlsx(tmp_path / "export.xlsx", tabs()))
    check_estate(inv)
    assert inv.source == "rvtools:export.xlsx"
    assert not inv.skipped


def test_xlsx_with_older_column_names(tmp_path):
    renames = {
        "vInfo": {"In Use MiB": "In Use MB", "Provisioned MiB": "Provisioned MB"},
        "vDisk": {"Capacity MiB": "Capacity MB", "Raw Com. Mode": "Raw Comp. Mode"},
        "vPartition": {"Capacity MiB": "Capacity MB", "Free MiB": "Free MB"},
        "vDatastore": {"Free MiB": "Free MB", "Capacity MiB": "Capacity MB"},
    }
    check_estate(load_inventory(write_xlsx(tmp_path / "old.xlsx", tabs(renames))))


def test_csv_directory_export(tmp_path):
    check_estate(load_inventory(write_csv_dir(tmp_path / "csv", tabs())))


def test_one_csv_file_finds_its_sibling_tabs(tmp_path):
    d = write_csv_dir(tmp_path / "csv", tabs())
    check_estate(load_inventory(d / "RVTools_tabvInfo.csv"))


def test_csv_semicolon_cp1252(tmp_path):
    data = tabs()
    data["vInfo"][1][0][0] = "web01"
    data["vInfo"][1][1][17] = "esx2"
    data["vInfo"][1][0][1 + 2] = "wébserveur.example.com"  # DNS name in cp1252
    d = write_csv_dir(tmp_path / "csv", data, delimiter=";", encoding="cp1252")
    inv = load_inventory(d)
    assert inv.vms[0].hostname == "wébserveur.example.com"
    assert len(inv.vms) == 2


def test_csv_tab_delimited_with_prefixed_headers(tmp_path):
    data = tabs(renames={"vInfo": {"VM": "vInfoVMName", "Powerstate": "vInfoPowerstate", "Memory": "vInfoMemory"}})
    inv = load_inventory(write_csv_dir(tmp_path / "csv", data, delimiter="\t"))
    assert inv.vms[0].memory_mib == 4096


def test_missing_vinfo_tab(tmp_path):
    path = write_xlsx(tmp_path / "x.xlsx", tabs(drop=("vInfo",)))
    with pytest.raises(InputError) as e:
        load_inventory(path)
    assert str(path) in e.value.message and "vInfo" in e.value.message


def test_missing_vm_column(tmp_path):
    path = write_xlsx(tmp_path / "x.xlsx", tabs(renames={"vInfo": {"VM": "Machine"}}))
    with pytest.raises(InputError, match="no VM name column"):
        load_inventory(path)


def test_missing_optional_tab_and_column_are_warnings(tmp_path):
    data = tabs(renames={"vDisk": {"Sharing mode": "Shared?"}}, drop=("vHost",))
    inv = load_inventory(write_xlsx(tmp_path / "x.xlsx", data))
    assert len(inv.vms) == 2
    assert any("no vHost tab" in w for w in inv.warnings)
    assert any("'Sharing mode'" in w and "disk.shared" in w for w in inv.warnings)


def test_bad_value_skips_only_that_vm(tmp_path):
    data = tabs()
    data["vDisk"][1][1][4] = "lots"  # db01 Hard disk 1 capacity
    inv = load_inventory(write_csv_dir(tmp_path / "csv", data))
    assert [v.name for v in inv.vms] == ["web01"]
    assert len(inv.skipped) == 1
    msg = inv.skipped[0]
    assert "RVTools_tabvDisk.csv" in msg and "vDisk row 3" in msg and "'Capacity MiB'" in msg and "db01" in msg


def test_corrupt_xlsx(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(InputError, match="broken.xlsx: not a readable xlsx"):
        load_inventory(path)


def test_unknown_type_and_missing_file(tmp_path):
    p = tmp_path / "inv.json"
    p.write_text("{}")
    with pytest.raises(InputError, match="unknown inventory type"):
        load_inventory(p)
    with pytest.raises(MissingFileError, match="no such inventory file"):
        load_inventory(tmp_path / "nope.xlsx")


def test_header_normalisation():
    assert norm_header("In Use MiB") == "inusemib"
    found, missing = resolve(SPECS["vInfo"], ["vm", "IN USE MB", "Powerstate"])
    assert found["vm"] == 0 and found["in_use_mib"] == 1 and "memory" in missing


def test_lab_file_goes_to_the_lab_reader():
    inv = load_inventory(LAB)
    assert inv.source.startswith("lab:")
    assert len(inv.vms) >= 5


@pytest.mark.parametrize("in_use", ["In Use MiB", "In Use MB"])
def test_in_use_column_feeds_effective_data(tmp_path, in_use):
    from scmt_cli.services.estimate import effective_data

    data = tabs(renames={"vInfo": {"In Use MiB": in_use}}, drop=("vPartition",))
    inv = load_inventory(write_xlsx(tmp_path / "x.xlsx", data))
    web, db = inv.vms
    assert effective_data(web) == (20480 * MIB, "disks in use")
    assert db.disks[1].used_bytes is None  # the RDM is remapped, not copied
    assert effective_data(db)[0] == 102400 * MIB  # in use capped at the copied disk's size
