"""The compatibility data files and the guest OS matcher."""

from __future__ import annotations

import pytest

from scmt_cli.domain.compat import (
    lab_switch_seconds,
    match_os,
    os_table,
    port_rules,
    storage_support,
    version_tuple,
    vmware_ranges,
)
from scmt_cli.domain.compat.tables import parse_ports


def test_every_seed_os_row_is_present():
    seed = [(r.family, r.version, r.bits, r.boot) for r in os_table().rows if r.source == "seed"]
    assert len(seed) == 32  # 15 Windows + 3 SUSE + 14 Red Hat rows in the seed's table
    assert ("windows", "10", (32,), ("bios",)) in seed
    assert ("windows", "10", (64,), ("bios", "uefi")) in seed
    assert ("sles", "11 sp3", (64,), ("bios", "uefi")) in seed
    assert ("rhel", "6.6", (32,), ("bios",)) in seed
    assert all(r.supported for r in os_table().rows if r.source == "seed")


def test_added_rows_are_marked_and_explained():
    added = [r for r in os_table().rows if r.source == "added"]
    assert {"server 2025", "9", "24.04", "12"} <= {r.version for r in added}
    assert all(r.note for r in added)


@pytest.mark.parametrize(
    ("guest_id", "full", "tools", "label", "exact"),
    [
        ("rhel6_64Guest", None, "Red Hat Enterprise Linux Server release 6.5 (Santiago)", "Red Hat Enterprise Linux 6.5",
         True),
        ("rhel6_64Guest", "Red Hat Enterprise Linux 6 (64-bit)", None, "Red Hat Enterprise Linux 6", True),
        ("rhel6Guest", None, "Red Hat Enterprise Linux Server release 6.9 (Santiago)", "Red Hat Enterprise Linux 6",
         False),
        ("windows2019srv_64Guest", "Microsoft Windows Server 2019 (64-bit)", None, "Windows Server 2019", True),
        ("windows2019srvNext_64Guest", None, None, "Windows Server 2022", True),
        ("windows2022srvNext_64Guest", None, None, "Windows Server 2025", True),
        (None, "Microsoft Windows Server 2008 R2 (64-bit)", None, "Windows Server 2008 R2", True),
        ("winNetStandardGuest", "Microsoft Windows Server 2003 Standard (32-bit)", None, "Windows Server 2003 SP1",
         False),
        ("windows9_64Guest", "Microsoft Windows 10 (64-bit)", None, "Windows 10", True),
        ("sles11_64Guest", None, "SUSE Linux Enterprise Server 11 SP3 (x86_64)", "SUSE Linux Enterprise 11 SP3", True),
        ("ubuntu64Guest", "Ubuntu Linux (64-bit)", "Ubuntu 22.04.3 LTS", "Ubuntu 22.04", True),
        ("debian12_64Guest", None, None, "Debian 12", True),
    ],
)
def test_match_os(guest_id, full, tools, label, exact):
    m = match_os(guest_id, full, tools)
    assert m.row is not None
    assert m.row.label == label
    assert m.exact is exact


def test_bits_pick_the_right_row():
    m32 = match_os(None, "Microsoft Windows 10 (32-bit)")
    m64 = match_os(None, "Microsoft Windows 10 (64-bit)")
    assert m32.row is not None and m32.row.bits == (32,)
    assert m64.row is not None and "uefi" in m64.row.boot


def test_unknown_and_family_only():
    assert match_os("otherGuest", "Other (32-bit)").family is None
    fam = match_os("ubuntu64Guest", "Ubuntu Linux (64-bit)")
    assert fam.family == "ubuntu" and fam.row is None
    assert fam.os_kind == "linux"


def test_vmware_range():
    rng = vmware_ranges()["agentless"]
    assert rng.listed == ("5.5", "6.0", "6.5", "6.7", "7.0", "7.0.2")
    assert rng.classify("5.5") == "ok"
    assert rng.classify("7.0.2") == "ok"
    assert rng.classify("7.0 U2") == "ok"
    assert rng.classify("7.0.3") == "above"
    assert rng.classify("8.0") == "above"
    assert rng.classify("5.1") == "below"
    assert vmware_ranges()["managed"].classify("5.0") == "ok"
    assert version_tuple("7.0.0") == version_tuple("7")


def test_storage_support():
    s = storage_support()
    for name in ("ext2", "ext3", "ext4", "xfs", "FAT", "fat32", "NTFS", "ReFS", "lvm", "GPT", "MBR", "dynamic",
                 "spanned", "striped", "vfat", "lvm2_member"):
        assert s.normalize(name) is not None, name
    assert s.normalize("zfs") is None
    assert s.normalize("btrfs") is None
    assert s.mbr_max_bytes == 2 * 1024**4


def test_ports_follow_the_seed():
    rules = port_rules()
    assert {(r.dst, r.ports) for r in rules["agentless"]} == {("vcenter", (443,)), ("esxi", (902,))}
    agent = {r.spec for r in rules["agent"]}
    assert {"80", "20000-20047", "26000-26600"} <= agent
    hot = [r for r in rules["hot-backup"] if r.spec == "20000-20003"]
    assert hot and hot[0].ports == (20000, 20001, 20002, 20003)
    assert parse_ports("80,443") == (80, 443)
    with pytest.raises(ValueError):  # noqa: PT011
        parse_ports("70000")


def test_lab_downtime_table():
    t = lab_switch_seconds()
    assert t["windows"] == {"managed": 428, "agentless": 307, "agent": 207, "hot-backup": 82}
    assert t["linux"] == {"managed": 502, "agentless": 171, "agent": 246, "hot-backup": 73}
