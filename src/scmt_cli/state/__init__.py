"""The SQLite state store: plans, VMs, disks, sync generations, checkpoints,
an append-only event log and leased per-VM locks.

Typical use (one store per process; one shared connection, thread-safe)::

    with StateStore.open(ctx.state) as store:
        store.record_plan(plan.name, plan_path, sha256_hex)
        with store.lock(vm_resource(plan.name, vm.name)) as lock:
            store.set_vm_state(plan.name, vm.name, "seeding", expected={"planned", "failed"})
            ...
            lock.check()  # before every checkpoint
            store.put_checkpoint(key, {...})
"""

from scmt_cli.state.guard import secret_key
from scmt_cli.state.locks import VmLock, vm_resource
from scmt_cli.state.paths import default_state_path, resolve_state_path
from scmt_cli.state.records import (
    GENERATION_KINDS,
    INITIAL_VM_STATE,
    DiskRecord,
    EventRecord,
    GenerationRecord,
    LockInfo,
    PlanRecord,
    VmRecord,
    iso,
)
from scmt_cli.state.schema import SCHEMA_VERSION
from scmt_cli.state.store import StateStore

__all__ = [
    "GENERATION_KINDS",
    "INITIAL_VM_STATE",
    "SCHEMA_VERSION",
    "DiskRecord",
    "EventRecord",
    "GenerationRecord",
    "LockInfo",
    "PlanRecord",
    "StateStore",
    "VmLock",
    "VmRecord",
    "default_state_path",
    "iso",
    "resolve_state_path",
    "secret_key",
    "vm_resource",
]
