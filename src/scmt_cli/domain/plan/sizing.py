"""Checks of a plan against the source inventory: only-expand and mappings.

The seed's rule for resources after migration is "only expand and not reduce":
a plan may give a VM more vCPUs, memory or disk than the source has, never
less.  With an :class:`~scmt_cli.domain.inventory.Inventory` this module also
checks that the disks and NICs a plan names exist on the source VM and that
every datastore/network the migrated VM uses has a mapping in the target.

Contract: :func:`check_against_inventory` reads the located raw document
defensively (wrong types are skipped; the schema reports them) and returns
``(errors, warnings)``.
"""

from __future__ import annotations

from typing import Any

from scmt_cli.domain import units
from scmt_cli.domain.inventory import VM, Disk, Inventory, Nic
from scmt_cli.domain.plan.yamlsource import Located, PathT
from scmt_cli.errors import Problem

MIB = 1024 * 1024


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _size(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return units.parse_size(value)
    except ValueError:
        return None


def find_disk(vm: VM, spec: dict[str, Any]) -> Disk | None:
    """The source disk a plan disk entry names (by ``key`` first, then ``label``)."""
    key, label = spec.get("key"), spec.get("label")
    for disk in vm.disks:
        if isinstance(key, int) and not isinstance(key, bool) and disk.key == key:
            return disk
    if isinstance(label, str):
        for disk in vm.disks:
            if disk.label == label:
                return disk
    return None


def find_nic(vm: VM, spec: dict[str, Any]) -> Nic | None:
    """The source NIC a plan NIC entry names (by ``label``, else by its VMware network)."""
    label, source = spec.get("label"), spec.get("source")
    for nic in vm.nics:
        if isinstance(label, str) and nic.label == label:
            return nic
    if isinstance(source, str) and not isinstance(label, str):
        for nic in vm.nics:
            if nic.network == source:
                return nic
    return None


def check_against_inventory(located: Located, inventory: Inventory) -> tuple[list[Problem], list[Problem]]:
    """Only-expand and mapping checks for every VM of the plan; see the module docstring."""
    from scmt_cli.domain.plan.schemacheck import suggest

    errors: list[Problem] = []
    warnings: list[Problem] = []
    doc = _dict(located.data)
    target = _dict(doc.get("target"))
    networks = _dict(target.get("networks"))
    storage = _dict(target.get("storage"))
    names = [vm.name for vm in inventory.vms]

    def err(path: PathT, message: str) -> None:
        errors.append(located.problem(path, message))

    for i, raw in enumerate(_list(doc.get("vms"))):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            continue
        base: PathT = ("vms", i)
        vm = inventory.vm(raw["name"])
        if vm is None:
            near = suggest(raw["name"], names)
            hint = f"; did you mean {near!r}?" if near else ""
            err(base + ("name",), f"no VM named {raw['name']!r} in the source inventory{hint}")
            continue
        cpus = raw.get("cpus")
        if isinstance(cpus, int) and not isinstance(cpus, bool) and vm.cpus is not None and cpus < vm.cpus:
            err(base + ("cpus",), f"cpus {cpus} is fewer than the source's {vm.cpus}; a plan may only expand "
                                  "resources, never reduce them")
        memory = _size(raw.get("memory"))
        if memory is not None and vm.memory_mib is not None and memory < vm.memory_mib * MIB:
            err(base + ("memory",), f"memory {units.format_size(memory)} is less than the source's "
                                    f"{units.format_size(vm.memory_mib * MIB)}; a plan may only expand resources")
        excluded: set[int] = set()
        overridden_storage: set[int] = set()
        for j, spec in enumerate(_list(raw.get("disks"))):
            if not isinstance(spec, dict) or ("key" not in spec and "label" not in spec):
                continue
            disk = find_disk(vm, spec)
            if disk is None:
                have = ", ".join(f"{d.label} (key {d.key})" for d in vm.disks) or "none"
                err(base + ("disks", j), f"the source VM has no such disk (it has: {have})")
                continue
            if spec.get("include") is False:
                excluded.add(disk.key)
            if "storage" in spec:
                overridden_storage.add(disk.key)
            size = _size(spec.get("size"))
            if size is not None and size < disk.capacity_bytes:
                err(base + ("disks", j, "size"), f"{units.format_size(size)} is smaller than the source disk's "
                                                 f"{units.format_size(disk.capacity_bytes)}; disks may only grow")
            if disk.datastore and spec.get("datastore") not in (None, disk.datastore):
                err(base + ("disks", j, "datastore"), f"the source disk is on datastore {disk.datastore!r}")
        included = [d for d in vm.disks if d.key not in excluded]
        if vm.disks and not included:
            err(base + ("disks",), "every disk of this VM is excluded; at least one must be migrated")
        if storage:
            for disk in included:
                if disk.key in overridden_storage or not disk.datastore:
                    continue
                if disk.datastore not in storage and "*" not in storage:
                    err(base, f"{disk.label} is on datastore {disk.datastore!r}, which target.storage does not map "
                              "(add it, or a '*' fallback)")
        mapped: set[int] = set()
        for j, spec in enumerate(_list(raw.get("nics"))):
            if not isinstance(spec, dict) or ("label" not in spec and "source" not in spec):
                continue
            nic = find_nic(vm, spec)
            if nic is None:
                have = ", ".join(f"{n.label} ({n.network})" for n in vm.nics) or "none"
                err(base + ("nics", j), f"the source VM has no such NIC (it has: {have})")
                continue
            if "network" in spec or (isinstance(spec.get("source"), str) and spec["source"] in networks):
                mapped.add(nic.key)
            if isinstance(spec.get("source"), str) and isinstance(spec.get("label"), str) and nic.network and \
                    spec["source"] != nic.network:
                err(base + ("nics", j, "source"), f"{nic.label} is on VMware network {nic.network!r}")
        if networks:
            for nic in vm.nics:
                if nic.key in mapped or not nic.network or nic.network in networks:
                    continue
                err(base, f"{nic.label} is on VMware network {nic.network!r}, which target.networks does not map")
    return errors, warnings
