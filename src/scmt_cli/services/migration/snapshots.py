"""The snapshots scmt creates on a source VM, and who owns them.

Every snapshot a sync pass creates is named ``scmt-sync-<plan>-g<generation>-<run>``
and its description ends with its owner tag ``[scmt store=<store id> run=<run id>]``:
the id of the state store that recorded the pass (made once per store, see
:attr:`~scmt_cli.state.core.StoreCore.store_id`) and the id of the command run
that made it (:attr:`~scmt_cli.services.migration.context.MigrationContext.run_id`).

Cleanup (:func:`cleanup_tool_snapshots`, before each pass and at finalize,
under the VM's lock) removes a tool snapshot (name ``scmt-...``) only when

* its tag names this store: a run of this store died before removing it (no
  other run of this store can be using it: the VM's lock is held), or
* it is the unowned stun snapshot (``scmt-cbt-stun``) of a CBT change that this
  store recorded as started and never finished (:func:`stun_started`).

Any other tool snapshot -- another store's (another host, another
``SCMT_STATE``: it may be in use by a run right now), or one without a tag --
is reported, named, and left alone; ``remove_foreign`` (``scmt sync
--remove-foreign-snapshots``) removes it too.  A sync pass then refuses the
VM (:func:`refuse_foreign`, exit 40): its own snapshot would be a delta on top
of the other store's, which the other run may be reading, and which /folder
cannot read.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from scmt_cli.errors import LockedError
from scmt_cli.events import Reporter
from scmt_cli.state import StateStore
from scmt_cli.vsphere.api import SnapshotInfo, VCenter

TOOL_SNAPSHOT_PREFIX = "scmt-"
#: What the VCenter implementations name the snapshot of the stun cycle that turns CBT on or off.
STUN_SNAPSHOT_NAME = "scmt-cbt-stun"

_TAG = re.compile(r"\[scmt store=(?P<store>[0-9a-f]{32}) run=(?P<run>[0-9a-f]{12})\]")


@dataclass(frozen=True)
class SnapshotOwner:
    """Which store and which run made a snapshot."""

    store: str
    run: str

    @property
    def tag(self) -> str:
        return f"[scmt store={self.store} run={self.run}]"

    def describe(self) -> str:
        return f"state store {self.store}, run {self.run}"


def owner_of(snap: SnapshotInfo) -> SnapshotOwner | None:
    """The owner tag in ``snap``'s description (None when it has none)."""
    m = _TAG.search(snap.description or "")
    return SnapshotOwner(m.group("store"), m.group("run")) if m else None


def sync_snapshot_name(plan: str, generation: int, owner: SnapshotOwner) -> str:
    """The name of a sync pass's snapshot: unique per run, so two stores never share one."""
    return f"scmt-sync-{plan}-g{generation}-{owner.run[:8]}"


def sync_snapshot_description(plan: str, kind: str, generation: int, owner: SnapshotOwner) -> str:
    return f"scmt plan {plan}: {kind} sync, generation {generation} {owner.tag}"


def stun_key(plan: str, vm: str) -> str:
    return f"snapshots/{plan}/{vm}/stun"


def stun_started(store: StateStore, plan: str, vm: str, owner: SnapshotOwner) -> None:
    """Record that a CBT stun cycle (an unowned snapshot made and removed by the VCenter) starts now."""
    store.put_checkpoint(stun_key(plan, vm), {"run": owner.run})


def stun_finished(store: StateStore, plan: str, vm: str) -> None:
    store.delete_checkpoint(stun_key(plan, vm))


@dataclass
class Cleanup:
    """What :func:`cleanup_tool_snapshots` did: ``removed`` and ``foreign`` as "name (id)" lines."""

    removed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def tool_snapshots(vc: VCenter, store: StateStore, plan: str, vm: str,
                   store_id: str) -> list[tuple[SnapshotInfo, bool]]:
    """``vm``'s scmt snapshots, newest first, each with whether it is this store's to remove: tagged with
    ``store_id``, or the untagged stun snapshot of a stun cycle this store recorded as begun.  Read-only
    (``--dry-run`` shows what :func:`cleanup_tool_snapshots` would do with the same answer)."""
    stun_abandoned = store.get_checkpoint(stun_key(plan, vm)) is not None
    out = []
    for snap in reversed(vc.list_snapshots(vm)):
        if not snap.name.startswith(TOOL_SNAPSHOT_PREFIX):
            continue
        who = owner_of(snap)
        ours = (who is not None and who.store == store_id) or (
            who is None and snap.name == STUN_SNAPSHOT_NAME and stun_abandoned)
        out.append((snap, ours))
    return out


def cleanup_tool_snapshots(vc: VCenter, store: StateStore, plan: str, vm: str, owner: SnapshotOwner,
                           reporter: Reporter, *, remove_foreign: bool = False) -> Cleanup:
    """Remove this store's leftover tool snapshots of ``vm``; report (or, with ``remove_foreign``,
    remove) the others.  See the module doc.  Call it holding the VM's lock."""
    out = Cleanup()
    own: list[str] = []
    stun_abandoned = store.get_checkpoint(stun_key(plan, vm)) is not None
    for snap, ours in tool_snapshots(vc, store, plan, vm, owner.store):
        who = owner_of(snap)
        line = f"{snap.name} ({snap.id})"
        if ours:
            vc.remove_snapshot(vm, snap.id)
            out.removed.append(line)
            own.append(line)
            continue
        whose = f"made by another scmt state store ({who.describe()})" if who else "without an scmt owner tag"
        if remove_foreign:
            vc.remove_snapshot(vm, snap.id)
            out.removed.append(line)
            out.warnings.append(f"{vm}: removed snapshot {line} {whose} (--remove-foreign-snapshots)")
            reporter.event("foreign_snapshot_removed", vm=vm, snapshot=snap.id, name=snap.name,
                           owner_store=who.store if who else None, owner_run=who.run if who else None)
            continue
        out.foreign.append(f"{line} {whose}")
        warning = (f"{vm}: snapshot {line} was {whose}; left alone: a run using another state store may be "
                   f"copying from it ('scmt sync PLAN --vm {vm} --remove-foreign-snapshots' removes it)")
        out.warnings.append(warning)
        reporter.log("warning", warning, vm=vm)
        reporter.event("foreign_snapshot", vm=vm, snapshot=snap.id, name=snap.name,
                       owner_store=who.store if who else None, owner_run=who.run if who else None)
    if stun_abandoned:
        stun_finished(store, plan, vm)
    if own:
        reporter.log("warning", f"{vm}: removed {len(own)} snapshot(s) an interrupted run of this state store "
                     "left: " + ", ".join(own), vm=vm)
        reporter.event("leftover_snapshots_removed", vm=vm, snapshots=own)
    return out


def refuse_foreign(vm: str, plan_file: str, cleanup: Cleanup) -> None:
    """Raise LockedError (exit 40) when ``cleanup`` left another store's tool snapshots on ``vm``."""
    if not cleanup.foreign:
        return
    more = f" (and {len(cleanup.foreign) - 1} more)" if len(cleanup.foreign) > 1 else ""
    command = f"scmt sync {plan_file} --vm {shlex.quote(vm)} --remove-foreign-snapshots"
    raise LockedError(
        f"{vm}: snapshot {cleanup.foreign[0]}{more} is on the VM: another scmt run may be migrating it; let it "
        f"finish, or if it is gone run '{command}'", hint=f"if that run is gone, '{command}' removes its snapshot")
