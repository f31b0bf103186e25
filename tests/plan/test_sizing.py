"""Only-expand and mapping checks against a source inventory."""

from __future__ import annotations

import pytest

from scmt_cli.domain.inventory import VM, Disk, Inventory, Nic
from tests.plan.conftest import REPO, base, load, messages, variant

GIB = 1024**3

INVENTORY = Inventory(
    vms=(
        VM(
            name="web01",
            cpus=4,
            memory_mib=8192,
            disks=(
                Disk(key=2000, label="Hard disk 1", capacity_bytes=40 * GIB, datastore="ds1"),
                Disk(key=2001, label="Hard disk 2", capacity_bytes=100 * GIB, datastore="ds1"),
            ),
            nics=(Nic(key=4000, label="Network adapter 1", network="App-VLAN20"),),
        ),
        VM(name="db01", cpus=2, memory_mib=4096,
           disks=(Disk(key=2000, label="Hard disk 1", capacity_bytes=10 * GIB, datastore="ds1"),)),
    ),
    source="test",
)


def _vm(**kw):
    return lambda d: d["vms"][0].update(**kw)


@pytest.mark.parametrize(
    ("breaks", "expected", "fixes"),
    [
        (_vm(cpus=2), "vms[0].cpus: cpus 2 is fewer than the source's 4", _vm(cpus=4)),
        (_vm(memory="4GiB"), "vms[0].memory: memory 4.00 GiB is less than the source's 8.00 GiB", _vm(memory="8GiB")),
        (_vm(disks=[{"label": "Hard disk 2", "size": "50GiB"}]),
         "vms[0].disks[0].size: 50.00 GiB is smaller than the source disk's 100.00 GiB",
         _vm(disks=[{"label": "Hard disk 2", "size": "150GiB"}])),
        (_vm(disks=[{"key": 2009}]), "vms[0].disks[0]: the source VM has no such disk", _vm(disks=[{"key": 2001}])),
        (_vm(disks=[{"key": 2000, "include": False}, {"key": 2001, "include": False}]),
         "every disk of this VM is excluded", _vm(disks=[{"key": 2001, "include": False}])),
        (_vm(nics=[{"label": "Network adapter 9", "network": "vlan20"}]), "the source VM has no such NIC",
         _vm(nics=[{"label": "Network adapter 1", "network": "vlan20"}])),
        (lambda d: d["vms"][1].update(name="db1"), "no VM named 'db1' in the source inventory; did you mean 'db01'?",
         lambda d: d["vms"][1].update(name="db01")),
        (lambda d: d["target"].update(storage={"other": "p"}), "Hard disk 1 is on datastore 'ds1', which target.storage",
         lambda d: d["target"].update(storage={"*": "p"})),
        (lambda d: d["target"].update(networks={"VM Network": "default"}),
         "Network adapter 1 is on VMware network 'App-VLAN20', which target.networks does not map",
         lambda d: (d["target"].update(networks={"VM Network": "default"}),
                    d["vms"][0].update(nics=[{"label": "Network adapter 1", "network": "default"}]))),
    ],
)
def test_only_expand_and_mappings(breaks, expected, fixes):
    found = messages(variant(breaks), inventory=INVENTORY)
    assert any(expected in m for m in found), found
    load(variant(fixes), inventory=INVENTORY)


def test_without_inventory_the_same_plan_is_valid_and_says_so():
    loaded = load(variant(_vm(cpus=1)))
    assert any("not checked" in n for n in loaded.notes)


def test_with_inventory_there_is_no_such_note():
    assert load(base(), inventory=INVENTORY).notes == ()


def test_example_plans_respect_the_lab_inventory():
    lab = REPO / "examples" / "lab.yaml"
    if not lab.exists():
        pytest.skip("examples/lab.yaml not present")
    from scmt_cli.lab.inventory import lab_inventory

    inventory = lab_inventory(lab)
    from scmt_cli.domain.plan import load_plan

    for plan in sorted((REPO / "plans").glob("*.yaml")):
        load_plan(plan, inventory=inventory)
