"""Shared builders: a clean VM that triggers no rule, and its inventory."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from scmt_cli.domain.assess import AssessContext
from scmt_cli.domain.inventory import VM, Datastore, Disk, Host, Inventory, Nic, Partition

GIB = 1024**3


def clean_vm(**changes: Any) -> VM:
    """A RHEL 6.5 VM (a seed row) that every method accepts without a finding."""
    vm = VM(
        name="clean01",
        guest_id="rhel6_64Guest",
        guest_full_name="Red Hat Enterprise Linux 6 (64-bit)",
        tools_guest_full_name="Red Hat Enterprise Linux Server release 6.5 (Santiago)",
        hostname="clean01.example.com",
        power_state="poweredOn",
        firmware="bios",
        secure_boot=False,
        vtpm=False,
        cpus=2,
        memory_mib=4096,
        memory_free_mib=2048,
        disks=(
            Disk(2000, "Hard disk 1", 40 * GIB, file="[ds1] clean01/clean01.vmdk", datastore="ds1",
                 mode="persistent", sharing="sharingNone", cbt_enabled=True, partition_style="gpt"),
        ),
        nics=(Nic(4000, "Network adapter 1", network="VM Network", ips=("10.0.0.5",)),),
        partitions=(Partition("/", 40 * GIB, 20 * GIB, "ext4"),),
        consolidation_needed=False,
        cbt_enabled=True,
        tools_status="running",
        host="esx1",
    )
    return dataclasses.replace(vm, **changes)


def inventory(vm: VM | None = None, *, esxi: str | None = "7.0.2", free: int | None = 500 * GIB) -> Inventory:
    vms = (vm or clean_vm(),)
    return Inventory(
        vms=vms,
        hosts=(Host("esx1", esxi_version=esxi),),
        datastores=(Datastore("ds1", capacity_bytes=1000 * GIB, free_bytes=free),),
        source="test",
    )


def ctx_for(vm: VM, **kw: Any) -> AssessContext:
    inv_kw = {k: kw.pop(k) for k in ("esxi", "free") if k in kw}
    return AssessContext(inventory=inventory(vm, **inv_kw), **kw)


@pytest.fixture
def vm() -> VM:
    return clean_vm()
