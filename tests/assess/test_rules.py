"""Every rule: a VM that triggers it and the clean VM that does not."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from scmt_cli.domain.assess import RULES, TargetSizing, assess_vm
from scmt_cli.domain.inventory import Disk, Nic, Partition, Snapshot

from .conftest import GIB, clean_vm, ctx_for

TIB = 1024**4
D0 = clean_vm().disks[0]


def disk(**kw: Any) -> tuple[Disk, ...]:
    return (dataclasses.replace(D0, **kw),)


# rule id -> (method to assess under, VM changes, context options, expected severity)
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {
    "os.unknown": ("agentless", {"guest_id": "otherGuest64", "guest_full_name": "Other (64-bit)",
                                 "tools_guest_full_name": None}, {}, "warning"),
    "os.unsupported": ("agentless", {"guest_id": "win2000ServGuest", "guest_full_name": None,
                                     "tools_guest_full_name": None}, {}, "blocker"),
    "os.not_listed": ("agentless", {"guest_id": "rhel6_64Guest", "guest_full_name": None,
                                    "tools_guest_full_name": "Red Hat Enterprise Linux release 3.9"}, {}, "warning"),
    "os.not_in_seed": ("agentless", {"guest_id": "rhel9_64Guest", "guest_full_name": "Red Hat Enterprise Linux 9",
                                     "tools_guest_full_name": None}, {}, "info"),
    "esxi.version.unsupported": ("agentless", {}, {"esxi": "5.1.0"}, "blocker"),
    "esxi.version.not_validated": ("agentless", {}, {"esxi": "8.0.2"}, "warning"),
    "esxi.version.unknown": ("agentless", {}, {"esxi": None}, "info"),
    "disk.rdm.physical": ("agentless", {"disks": disk(rdm="physical")}, {}, "blocker"),
    "disk.rdm.virtual": ("agentless", {"disks": disk(rdm="virtual")}, {}, "warning"),
    "disk.independent": ("agentless", {"disks": disk(mode="independent_persistent")}, {}, "blocker"),
    "disk.shared": ("agentless", {"disks": disk(sharing="sharingMultiWriter")}, {}, "blocker"),
    "disk.mbr_over_2tib": ("agent", {"disks": disk(partition_style="mbr", capacity_bytes=3 * TIB)}, {}, "blocker"),
    "fs.unsupported": ("agent", {"partitions": (Partition("/data", 10 * GIB, 5 * GIB, "zfs"),)}, {}, "blocker"),
    "datastore.free_space": ("agentless", {}, {"free": 2 * GIB}, "warning"),
    "device.usb": ("agentless", {"usb_devices": 1}, {}, "blocker"),
    "device.passthrough": ("managed", {"pci_passthrough": 1}, {}, "blocker"),
    "device.sriov": ("managed", {"sriov_nics": 1}, {}, "blocker"),
    "vm.vtpm": ("agent", {"vtpm": True}, {}, "warning"),
    "boot.secure_boot": ("agent", {"firmware": "efi", "secure_boot": True}, {}, "warning"),
    "snapshot.existing": ("agentless", {"snapshots": (Snapshot("before-patch"),)}, {}, "blocker"),
    "snapshot.consolidation_needed": ("managed", {"consolidation_needed": True}, {}, "blocker"),
    "cbt.disabled": ("agentless", {"cbt_enabled": False}, {}, "warning"),
    "tools.not_running": ("agentless", {"tools_status": "notRunning"}, {}, "warning"),
    "vm.powered_off": ("agent", {"power_state": "poweredOff"}, {}, "blocker"),
    "agent.memory.total": ("agent", {"memory_mib": 2048}, {}, "blocker"),
    "agent.memory.free": ("hot-backup", {"memory_free_mib": 1024}, {}, "blocker"),
    "vm.name.invalid": ("agentless", {"name": "web 01 (old)"}, {}, "warning"),
    "vm.hostname.invalid": ("agentless", {"hostname": "web_01.example.com"}, {}, "warning"),
    "nic.no_ip": ("agentless", {"nics": (Nic(4000, "Network adapter 1"),)}, {}, "warning"),
    "sizing.shrink": ("agentless", {}, {"target": TargetSizing(memory_mib=2048)}, "blocker"),
}


def ids(method: str, changes: dict[str, Any], ctx_kw: dict[str, Any]) -> dict[str, str]:
    vm = clean_vm(**changes)
    a = assess_vm(vm, ctx_for(vm, **ctx_kw), method=method)
    return {f.id: f.severity for f in a.findings}


def test_every_rule_has_a_case():
    assert set(CASES) == set(RULES)


@pytest.mark.parametrize("method", ["managed", "agentless", "agent", "hot-backup"])
def test_clean_vm_is_ready_under_every_method(method):
    vm = clean_vm()
    a = assess_vm(vm, ctx_for(vm), method=method)
    assert a.findings == ()
    assert a.verdict == "ready"


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_triggers(rule_id):
    method, changes, ctx_kw, severity = CASES[rule_id]
    found = ids(method, changes, ctx_kw)
    assert found.get(rule_id) == severity, found


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_quiet_on_clean_vm(rule_id):
    method, _, _, _ = CASES[rule_id]
    assert rule_id not in ids(method, {}, {})


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rules_have_remedy_and_methods(rule_id):
    r = RULES[rule_id]
    assert r.remedy and r.methods and r.severity in ("blocker", "warning", "info")


def test_snapshot_rules_do_not_apply_to_agent_methods():
    found = ids("agent", {"disks": disk(mode="independent_persistent"), "consolidation_needed": True}, {})
    assert "disk.independent" not in found
    assert "snapshot.consolidation_needed" not in found


def test_rdm_physical_is_only_a_warning_for_agent_methods():
    assert ids("agent", {"disks": disk(rdm="physical")}, {})["disk.rdm.physical"] == "warning"


def test_agent_memory_boundary():
    assert "agent.memory.total" in ids("agent", {"memory_mib": 2048}, {})
    assert "agent.memory.total" not in ids("agent", {"memory_mib": 2049}, {})
    assert "agent.memory.free" not in ids("agent", {"memory_free_mib": None}, {})


def test_mbr_under_2tib_and_gpt_over_2tib_pass():
    assert "disk.mbr_over_2tib" not in ids("agent", {"disks": disk(partition_style="mbr", capacity_bytes=2 * TIB)}, {})
    assert "disk.mbr_over_2tib" not in ids("agent", {"disks": disk(partition_style="gpt", capacity_bytes=3 * TIB)}, {})


def test_fs_aliases_accepted():
    parts = (Partition("/boot/efi", GIB, GIB, "vfat"), Partition("[SWAP]", GIB, 0, "swap"),
             Partition("D:\\", GIB, GIB, "ReFS"), Partition("/srv", GIB, GIB, "xfs"))
    assert "fs.unsupported" not in ids("agent", {"partitions": parts}, {})


def test_datastore_nearly_full_is_blocker():
    assert ids("agentless", {}, {"free": 100 * 1024**2})["datastore.free_space"] == "blocker"


def test_name_with_slash_is_blocker():
    assert ids("agentless", {"name": "a/b"}, {})["vm.name.invalid"] == "blocker"


def test_sizing_growth_is_fine_and_disk_shrink_blocks():
    vm = clean_vm()
    grow = assess_vm(vm, ctx_for(vm, target=TargetSizing(cpus=4, memory_mib=8192,
                                                          disk_bytes={"Hard disk 1": 80 * GIB})))
    assert "sizing.shrink" not in {f.id for f in grow.findings}
    shrink = assess_vm(vm, ctx_for(vm, target=TargetSizing(disk_bytes={"2000": 20 * GIB})), method="agentless")
    assert [f.subject for f in shrink.findings if f.id == "sizing.shrink"] == ["Hard disk 1"]


def test_uefi_on_bios_only_release_is_unsupported():
    found = ids("agent", {"firmware": "efi", "tools_guest_full_name": "Red Hat Enterprise Linux Server release 6.2"}, {})
    assert found.get("os.unsupported") == "blocker"


def test_verdicts_by_method_and_json_shape():
    vm = clean_vm(disks=disk(rdm="physical"))
    a = assess_vm(vm, ctx_for(vm), tolerance_seconds=600)
    assert a.verdicts["agentless"] == "blocked"
    assert a.verdicts["agent"] == "warnings"
    assert a.recommended_method == "agent"
    d = a.to_dict()
    assert set(d) >= {"vm", "verdict", "recommended_method", "findings"}
    assert set(d["findings"][0]) >= {"id", "severity", "message", "remedy"}


def test_all_blocked_reason_names_each_methods_blockers():
    vm = clean_vm(disks=disk(rdm="physical"), memory_mib=1024)
    a = assess_vm(vm, ctx_for(vm))
    assert set(a.verdicts.values()) == {"blocked"}
    assert "managed/agentless: disk.rdm.physical" in a.reason
    assert "agent/hot-backup: agent.memory.total" in a.reason
    assert a.to_dict()["blockers_by_method"]["agent"] == ["agent.memory.total"]


def test_existing_snapshots_are_only_a_warning_with_vddk():
    from scmt_cli.domain.assess.model import AssessContext
    from scmt_cli.domain.assess.rules import evaluate, findings_for
    from scmt_cli.domain.inventory import VM, Snapshot

    vm = VM(name="db01", snapshots=(Snapshot("before-patch"),))
    over_folder = [f for f in findings_for(evaluate(vm, AssessContext()), "agentless") if f.id == "snapshot.existing"]
    with_vddk = [f for f in findings_for(evaluate(vm, AssessContext(vddk=True)), "agentless")
                 if f.id == "snapshot.existing"]
    assert [f.severity for f in over_folder] == ["blocker"]
    assert [f.severity for f in with_vddk] == ["warning"]


def test_cbt_off_is_a_blocker_when_the_plan_forbids_turning_it_on() -> None:
    vm = dataclasses.replace(clean_vm(), cbt_enabled=False)
    allowed = [f for f in assess_vm(vm, ctx_for(vm), method="agentless").findings if f.id == "cbt.disabled"]
    assert [f.severity for f in allowed] == ["warning"] and "will turn it on" in allowed[0].message
    forbidden = assess_vm(vm, ctx_for(vm, enable_cbt=False), method="agentless")
    found = [f for f in forbidden.findings if f.id == "cbt.disabled"]
    assert [f.severity for f in found] == ["blocker"] and forbidden.verdict == "blocked"
    assert "source.enable_cbt is false" in found[0].message
    one_disk = dataclasses.replace(clean_vm(), disks=disk(cbt_enabled=False))
    assert [f.severity for f in assess_vm(one_disk, ctx_for(one_disk, enable_cbt=False),
                                          method="agentless").findings if f.id == "cbt.disabled"] == ["blocker"]
