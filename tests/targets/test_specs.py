"""TargetVmSpec from the plan and the inventory."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest

from scmt_cli.domain.inventory import VM, Nic
from scmt_cli.domain.plan.model import NicSpec
from scmt_cli.errors import PlanError
from scmt_cli.targets.base import PlatformSpec, PreparedDisk, generate_mac
from scmt_cli.targets.specs import vm_spec_from_plan

ROOT = Path(__file__).resolve().parents[2]


def _disks(n: int, fmt: str = "raw") -> list[PreparedDisk]:
    return [PreparedDisk(i, 1 << 20, f"file:///t/d{i}.raw", f"/t/d{i}.raw", f"/t/d{i}.{fmt}", fmt) for i in range(n)]  # type: ignore[arg-type]


def _target(networks: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(networks=networks, network_for=networks.get)


def _eff(**kw: object) -> SimpleNamespace:
    base: dict[str, object] = {"target_name": "web01", "cpus": None, "memory": None, "direct": False, "nics": ()}
    base.update(kw)
    return SimpleNamespace(**base)


SOURCE = VM(
    name="web01", cpus=2, memory_mib=4096, firmware="bios",
    nics=(Nic(4000, "Network adapter 1", "VM Network", "00:50:56:aa:00:01"),
          Nic(4001, "Network adapter 2", "Backup", "00:50:56:aa:00:02")),
)  # fmt: skip


def test_real_plan_and_lab_inventory() -> None:
    from scmt_cli.domain.plan.loader import load_plan
    from scmt_cli.lab.inventory import lab_inventory

    inv = lab_inventory(ROOT / "examples" / "lab.yaml")
    plan = load_plan(
        ROOT / "plans" / "agentless-p2p.yaml", inventory=inv, now=dt.datetime(2029, 1, 1, tzinfo=dt.UTC)
    ).plan
    vm = inv.vm("win2019-app01")
    assert vm is not None
    spec = vm_spec_from_plan(plan.effective(vm.name), plan.target, vm, _disks(2, "qcow2"), plan_name=plan.name)
    assert (spec.cpus, spec.memory_mib) == (8, 12 * 1024)  # the plan expands 4 -> 8 CPUs, 8 -> 12 GiB
    assert (spec.firmware, spec.secure_boot) == ("efi", True)
    assert [d.path for d in spec.disks] == ["/t/d0.qcow2", "/t/d1.qcow2"]
    assert {d.format for d in spec.disks} == {"qcow2"}
    assert [(n.network, n.mac, n.model) for n in spec.nics] == [("vlan20", "00:50:56:a1:00:01", "virtio")]
    assert [(n.ip, n.gateway, n.dns) for n in spec.nics] == [("10.20.0.11/24", "10.20.0.1", ("10.20.0.2", "10.20.0.3"))]
    pspec = PlatformSpec.from_target(plan.target)
    assert (pspec.type, pspec.uri, pspec.disk_format) == ("libvirt", "qemu:///system", "qcow2")


def test_source_sizes_networks_from_target_map_and_kept_macs() -> None:
    spec = vm_spec_from_plan(_eff(), _target({"VM Network": "lan", "Backup": "bridge:br-bk"}), SOURCE, _disks(1))
    assert (spec.cpus, spec.memory_mib, spec.firmware, spec.secure_boot) == (2, 4096, "bios", False)
    assert [(n.network, n.mac) for n in spec.nics] == [
        ("lan", "00:50:56:aa:00:01"),
        ("bridge:br-bk", "00:50:56:aa:00:02"),
    ]


def test_plan_nic_entries_by_label_and_source() -> None:
    nics = (
        NicSpec(label="Network adapter 2", network="dmz", mac="generate"),
        NicSpec(source="VM Network", mac="52:54:00:12:34:56"),
    )
    spec = vm_spec_from_plan(
        _eff(nics=nics, cpus=4, memory=8 << 30), _target({"VM Network": "lan"}), SOURCE, _disks(1), plan_name="p"
    )
    assert (spec.cpus, spec.memory_mib) == (4, 8192)
    assert spec.nics[0].network == "lan"
    assert spec.nics[0].mac == "52:54:00:12:34:56"
    assert spec.nics[1].network == "dmz"
    assert spec.nics[1].mac == generate_mac("web01", 1, salt="p")


def test_unmapped_network_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="'Backup', which target.networks does not map"):
        vm_spec_from_plan(_eff(), _target({"VM Network": "lan"}), SOURCE, _disks(1))


def test_direct_failover_uses_devices_every_guest_drives() -> None:
    spec = vm_spec_from_plan(_eff(direct=True), _target({"VM Network": "lan", "Backup": "bk"}), SOURCE, _disks(2))
    assert {d.bus for d in spec.disks} == {"sata"}
    assert {n.model for n in spec.nics} == {"e1000e"}


def test_unknown_sizes_are_plan_errors() -> None:
    bare = VM(name="x")
    with pytest.raises(PlanError, match="CPU count is unknown"):
        vm_spec_from_plan(_eff(), _target({}), bare, _disks(1))
    with pytest.raises(PlanError, match="memory size is unknown"):
        vm_spec_from_plan(_eff(cpus=1), _target({}), bare, _disks(1))


def test_source_without_mac_gets_a_generated_one() -> None:
    vm = VM(name="x", cpus=1, memory_mib=512, nics=(Nic(4000, "Network adapter 1", "VM Network"),))
    spec = vm_spec_from_plan(_eff(target_name="x-kvm"), _target({"VM Network": "lan"}), vm, _disks(1))
    assert spec.name == "x-kvm"
    assert spec.nics[0].mac == generate_mac("x-kvm", 0)
