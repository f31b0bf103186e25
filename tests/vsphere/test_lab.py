"""The lab file reader: validation with located errors, and the inventory mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from scmt_cli.errors import InputError, MissingFileError
from scmt_cli.lab.inventory import lab_inventory
from scmt_cli.lab.model import Region
from scmt_cli.lab.parse import load_lab

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab.yaml"

MINI = """\
version: 1
hosts:
  - {name: h1, esxi_version: "7.0.2", cluster: C1}
datastores:
  - {name: ds1, capacity: 1 GiB, free: 512 MiB}
vms:
  - name: vm1
    guest_id: rhel8_64Guest
    host: h1
    disks:
      - size: 4 MiB
        datastore: ds1
        layout:
          - {at: 0, size: 64 KiB, fill: counter}
          - {at: 1 MiB, size: 1 MiB, fill: byte, value: 7}
    nics:
      - {network: VM Network, mac: "00:50:56:00:00:01", ips: [10.0.0.1]}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "lab.yaml"
    p.write_text(text)
    return p


def test_example_lab_covers_the_estate_assessment_needs() -> None:
    inv = lab_inventory(EXAMPLE)
    names = {vm.name for vm in inv.vms}
    assert {"win2019-app01", "rhel8-db01", "ubuntu22-web01", "centos7-legacy01", "redis-a", "redis-b"} <= names
    assert {vm.firmware for vm in inv.vms} == {"bios", "efi"}
    assert any(vm.secure_boot for vm in inv.vms)
    assert any(d.rdm == "physical" for vm in inv.vms for d in vm.disks)
    assert any(d.mode == "independent_persistent" for vm in inv.vms for d in vm.disks)
    assert any(vm.snapshots for vm in inv.vms)
    assert any(vm.cbt_enabled is False for vm in inv.vms)
    assert sum(1 for vm in inv.vms for d in vm.disks if d.sharing == "sharingMultiWriter") == 2
    assert {d.thin for vm in inv.vms for d in vm.disks} >= {True, False}
    assert any(h.esxi_version == "8.0.2" for h in inv.hosts)
    assert all(d.free_bytes is not None for d in inv.datastores)
    for vm in inv.vms:
        assert vm.source == "lab:lab.yaml"
        for disk in vm.disks:
            assert disk.capacity_bytes <= 64 * 1024**2
    db = inv.vm("rhel8-db01")
    assert db is not None
    assert db.cluster == "Prod" and db.host == "esx01.lab.test"
    assert db.ips == ("10.30.0.21", "192.168.10.21")
    assert [d.key for d in db.disks] == [2000, 2001, 2002]
    assert db.disks[0].file == "[ds-vmfs01] rhel8-db01/rhel8-db01.vmdk"
    assert db.disks[1].file == "[ds-vmfs01] rhel8-db01/rhel8-db01_1.vmdk"
    assert db.memory_mib == 16384
    off = inv.vm("win2012-report01")
    assert off is not None and off.power_state == "poweredOff" and off.usb_devices == 1
    assert all(n.connected is False for n in off.nics)


def test_minimal_lab_and_defaults(tmp_path: Path) -> None:
    lab = load_lab(write(tmp_path, MINI))
    vm = lab.vms[0]
    assert vm.moref == "vm-101" and vm.power == "poweredOn" and vm.cbt is True
    assert vm.disks[0].used == 64 * 1024 + 1024**2
    assert lab.vcenter_name and "lab-password" not in repr(lab)


@pytest.mark.parametrize(
    ("old", "new", "line", "needle"),
    [
        ("    guest_id:", "    gust_id:", 8, "unknown key 'gust_id' (did you mean 'guest_id'?)"),
        ("    host: h1", "    host: h9", 9, "vms[0].host: unknown host 'h9'"),
        ("size: 4 MiB", "size: 4 MB5", 11, "vms[0].disks[0].size: expected a size"),
        ("at: 1 MiB", "at: 32 KiB", 15, "regions must be sorted"),
        ("value: 7", "value: 300", 15, "must be at most 255"),
        ("fill: counter", "fill: counterx", 14, "did you mean 'counter'"),
        ('"00:50:56:00:00:01"', "nope", 17, "expected a MAC address"),
        ("free: 512 MiB", "free: 2 GiB", 5, "exceeds capacity"),
        ("  - {name: h1,", "  - {nam: h1,", 3, "did you mean 'name'"),
        ("version: 1", "version: 2", 1, "unsupported lab format version 2"),
        ("size: 4 MiB", "size: 1000", 11, "multiple of 512"),
    ],
)
def test_bad_lab_names_file_line_and_field(tmp_path: Path, old: str, new: str, line: int, needle: str) -> None:
    assert old in MINI
    path = write(tmp_path, MINI.replace(old, new, 1))
    with pytest.raises(InputError) as info:
        load_lab(path)
    msg = info.value.message
    assert msg.startswith(f"{path}:{line}:"), msg
    assert needle in msg
    assert info.value.exit_code == 3
    assert info.value.problems[0].line == line


def test_region_past_end_and_secure_boot_without_efi(tmp_path: Path) -> None:
    bad = MINI.replace("at: 1 MiB, size: 1 MiB", "at: 3 MiB, size: 2 MiB")
    with pytest.raises(InputError, match="ends past the disk's size"):
        load_lab(write(tmp_path, bad))
    bad = MINI.replace("    host: h1\n", "    host: h1\n    secure_boot: true\n")
    with pytest.raises(InputError, match="secure boot needs firmware: efi"):
        load_lab(write(tmp_path, bad))


def test_duplicates_and_syntax_errors(tmp_path: Path) -> None:
    dup = MINI + MINI[MINI.index("  - name: vm1") :]
    with pytest.raises(InputError, match="duplicate name 'vm1'"):
        load_lab(write(tmp_path, dup))
    with pytest.raises(InputError, match=r"lab.yaml:3:\d+: not valid YAML"):
        load_lab(write(tmp_path, "version: 1\nhosts: [\n  - : :\n"))
    with pytest.raises(MissingFileError, match="no such lab file"):
        load_lab(tmp_path / "missing.yaml")
    with pytest.raises(InputError, match="empty"):
        load_lab(write(tmp_path, ""))
    with pytest.raises(InputError, match="missing required key 'vms'"):
        load_lab(write(tmp_path, "version: 1\nhosts: []\ndatastores: []\n"))


def test_region_rendering_is_deterministic() -> None:
    r = Region(offset=1024, length=1024, fill="counter", text="vm/disk0")
    data = r.render("vm/disk0")
    assert data[:512].startswith(b"vm/disk0 sector 2\n") and data[512:].startswith(b"vm/disk0 sector 3\n")
    rnd = Region(offset=0, length=4096, fill="random", seed=5)
    assert rnd.render("x") == rnd.render("x") != Region(0, 4096, "random", seed=6).render("x")
    assert Region(0, 10, "text", text="ab").render("") == b"ababababab"


def test_lab_yaml_unclosed_bracket_names_its_opening_line(tmp_path):
    from scmt_cli.lab.parse import load_lab

    f = tmp_path / "lab.yaml"
    f.write_text("vcenter:\n  user: u\nvms:\n  - name: [unclosed\n")
    with pytest.raises(InputError) as info:
        load_lab(f)
    assert info.value.message.endswith(":4:11: not valid YAML: flow sequence ('[') opened here is never closed")
    assert [p.line for p in info.value.problems] == [4, 5]
