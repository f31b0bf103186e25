"""The vCenter port: what services may ask of a vCenter, and shared CBT helpers.

Two implementations pass one contract suite (``tests/vsphere/test_contract.py``):
:class:`scmt_cli.vsphere.adapter.PyVmomiVCenter` (a real vCenter, pyvmomi) and
:class:`scmt_cli.lab.vcenter.FakeVCenter` (in-memory, from a lab file).

Contract common to every method:

* VMs are named by their inventory name (unique per vCenter); snapshots by the
  id ``create_snapshot`` returned (the snapshot's moref, e.g. ``snapshot-42``).
* Failures are :class:`~scmt_cli.errors.ScmtError` subclasses: unreachable
  host, or a connection that keeps dropping mid-call -> ``SourceUnreachableError`` (10), bad credentials ->
  ``AuthenticationError`` (11), certificate not trusted / thumbprint mismatch
  -> ``TLSVerificationError`` (12), any vSphere fault -> ``SourceOperationError``
  (13) whose message names the VM and the step (``rhel8-db01: create snapshot:
  ...``).  Messages never contain passwords or session cookies.
* Transient faults are retried inside the implementation; permanent ones are
  raised at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from scmt_cli.domain.inventory import Inventory
from scmt_cli.errors import SourceOperationError
from scmt_cli.transports.base import BlockSource, Extent

PowerState = Literal["poweredOn", "poweredOff", "suspended"]
ShutdownHow = Literal["guest", "hard", "already_off"]


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot of a VM, oldest first in :meth:`VCenter.list_snapshots`."""

    id: str  # moref
    name: str
    created: str | None = None
    description: str | None = None
    quiesced: bool | None = None
    parent: str | None = None  # parent snapshot id


@dataclass(frozen=True)
class ChangedAreas:
    """The answer to "what changed on this disk since ``change_id``".

    ``extents`` (kind ``data``) cover every byte that changed; more is allowed,
    less never.  When ``reset`` is true the previous change id is no longer
    valid (CBT was reset or disabled, the disk was resized, vSphere answered
    FileFault): ``extents`` is empty and the caller must do a full resync;
    ``reason`` says why, for the report.  ``queries`` counts the
    QueryChangedDiskAreas calls made (for tests and statistics).
    """

    extents: tuple[Extent, ...]
    reset: bool = False
    reason: str | None = None
    queries: int = 0

    @property
    def changed_bytes(self) -> int:
        return sum(e.length for e in self.extents)


@runtime_checkable
class VCenter(Protocol):
    """A connection to one vCenter (or ESXi host).  Not thread-safe unless stated."""

    def connect(self) -> None:
        """Log in (verifying TLS first).  Idempotent."""

    def close(self) -> None:
        """Log out and release connections.  Idempotent; never raises."""

    def inventory(self) -> Inventory:
        """Every VM, host and datastore, in a bounded number of round trips."""

    def power_state(self, vm: str) -> PowerState: ...

    def enable_cbt(self, vm: str) -> bool:
        """Turn Changed Block Tracking on, with the stun cycle (snapshot create+remove) it needs
        on a powered-on VM.  Returns False when it was already on (nothing done)."""

    def disable_cbt(self, vm: str) -> bool:
        """Turn Changed Block Tracking off (``changeTrackingEnabled=False``), with the stun cycle
        that applies it on a powered-on VM.  Every change id recorded so far becomes invalid (a
        later :meth:`changed_areas` against one answers ``reset``).  Returns False when it was
        already off (nothing done); never leaves a snapshot behind."""

    def create_snapshot(self, vm: str, name: str, *, quiesce: bool = False, description: str = "") -> str:
        """Create a snapshot without memory; return its id."""

    def remove_snapshot(self, vm: str, snapshot: str) -> None:
        """Remove one snapshot (no children); a missing snapshot is a SourceOperationError."""

    def list_snapshots(self, vm: str) -> list[SnapshotInfo]: ...

    def disk_change_ids(self, vm: str, snapshot: str) -> dict[int, str | None]:
        """Each disk's ``backing.changeId`` in the snapshot's config (None: CBT off for that disk)."""

    def disk_capacities(self, vm: str, snapshot: str) -> dict[int, int]:
        """Each disk's capacity in bytes in the snapshot's config."""

    def changed_areas(
        self, vm: str, snapshot: str, disk_key: int, change_id: str, *, previous_capacity: int | None = None
    ) -> ChangedAreas:
        """Areas of the disk changed between ``change_id`` and ``snapshot`` (``"*"``: allocated areas).

        ``previous_capacity`` (the disk's size when ``change_id`` was recorded) lets a resize
        count as a reset."""

    def open_disk(self, vm: str, snapshot: str, disk_key: int) -> BlockSource:
        """The disk's content as frozen by ``snapshot``, read over the datastore ``/folder`` endpoint."""

    def shutdown_guest(self, vm: str, timeout: float) -> ShutdownHow:
        """Ask the guest OS to shut down; after ``timeout`` seconds (or without VMware Tools)
        power off hard.  Returns how the VM went down."""

    def power_on(self, vm: str) -> None: ...

    def power_off(self, vm: str) -> None: ...

    def set_nics_connected(self, vm: str, connected: bool) -> None:
        """Connect or disconnect every NIC (and set start-connected the same way)."""

    def annotate(self, vm: str, text: str) -> None: ...

    def rename(self, vm: str, new_name: str) -> None: ...


# -- change ids -----------------------------------------------------------------

_CHANGE_ID = re.compile(r"^(?P<uuid>[0-9a-fA-F]{2}(?:[ -][0-9a-fA-F]{2}){15})/(?P<seq>\d+)$")


def parse_change_id(change_id: str) -> tuple[str, int]:
    """Split a vSphere change id (``"52 a1 .. 3f-9c .. 0e/17"``) into (uuid part, sequence).

    Raises ``ValueError`` for anything else (including ``"*"``).
    """
    m = _CHANGE_ID.match(change_id.strip())
    if not m:
        raise ValueError(f"not a CBT change id: {change_id!r}")
    return m.group("uuid").lower(), int(m.group("seq"))


def format_change_id(uuid16: bytes, seq: int) -> str:
    """The vSphere spelling: 8 hex bytes, a dash, 8 hex bytes, ``/sequence``."""
    if len(uuid16) != 16:
        raise ValueError("a change id uuid is 16 bytes")
    left = " ".join(f"{b:02x}" for b in uuid16[:8])
    right = " ".join(f"{b:02x}" for b in uuid16[8:])
    return f"{left}-{right}/{seq}"


def cbt_reset_reason(
    previous: str, current: str | None, *, previous_capacity: int | None = None, capacity: int | None = None
) -> str | None:
    """Why ``previous`` cannot be used against a disk whose change id is now ``current``; None if it can.

    A capacity that differs from ``previous_capacity`` (both given) is a resize: a reset.
    """
    if current is None:
        return "changed block tracking is off for this disk"
    if previous_capacity is not None and capacity is not None and previous_capacity != capacity and previous != "*":
        return f"the disk was resized from {previous_capacity} to {capacity} bytes"
    if previous == "*":
        return None
    try:
        prev_uuid, prev_seq = parse_change_id(previous)
    except ValueError:
        return f"the recorded change id {previous!r} is not valid"
    try:
        cur_uuid, cur_seq = parse_change_id(current)
    except ValueError:
        return f"the disk reports an invalid change id {current!r}"
    if prev_uuid != cur_uuid:
        return "changed block tracking was reset (the change id's UUID differs)"
    if prev_seq > cur_seq:
        return "the recorded change id is newer than the disk's"
    return None


# -- QueryChangedDiskAreas loop ------------------------------------------------------

# query(start_offset) -> (start_offset, length, [(offset, length), ...]) as vSphere's DiskChangeInfo.
QueryFn = Callable[[int], tuple[int, int, Sequence[tuple[int, int]]]]


def collect_changed_areas(query: QueryFn, capacity: int, *, what: str) -> tuple[list[Extent], int]:
    """Loop ``query`` over ``startOffset`` until ``capacity`` is covered.

    Never calls ``query`` with ``startOffset == capacity``.  Areas are clipped to
    the disk, sorted and merged.  An answer that does not advance is a
    SourceOperationError naming ``what``.  Returns (extents, number of queries).
    """
    areas: list[tuple[int, int]] = []
    start = 0
    calls = 0
    while start < capacity:
        got_start, got_len, got_areas = query(start)
        calls += 1
        end = got_start + got_len
        if got_start > start or end <= start:
            raise SourceOperationError(
                f"{what}: QueryChangedDiskAreas answered [{got_start}, {end}) for startOffset {start}; refusing to loop"
            )
        areas.extend((o, n) for o, n in got_areas if n > 0)
        start = end
    return merge_areas(areas, capacity), calls


def merge_areas(areas: Sequence[tuple[int, int]], capacity: int) -> list[Extent]:
    """Sort, clip to ``[0, capacity)`` and merge touching/overlapping areas into data extents."""
    out: list[Extent] = []
    for start, length in sorted(areas):
        off = max(0, start)
        end = min(capacity, start + length)
        if end <= off:
            continue
        if out and off <= out[-1].end:
            last = out[-1]
            if end > last.end:
                out[-1] = Extent(last.offset, end - last.offset)
        else:
            out.append(Extent(off, end - off))
    return out


# -- graceful shutdown, shared by both implementations -------------------------------


def graceful_shutdown(
    *,
    vm: str,
    timeout: float,
    state: Callable[[], str],
    request: Callable[[], bool],
    hard_off: Callable[[], None],
    warn: Callable[[str], None],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> ShutdownHow:
    """Ask for a guest shutdown, wait up to ``timeout`` seconds, then power off hard.

    ``request`` returns False when the guest cannot be asked (no VMware Tools);
    the hard power-off then happens at once.  Warnings go through ``warn``.
    """
    if state() == "poweredOff":
        return "already_off"
    if not request():
        warn(f"{vm}: VMware Tools are not running; powering off hard")
        hard_off()
        return "hard"
    deadline = clock() + timeout
    while clock() < deadline:
        if state() == "poweredOff":
            return "guest"
        sleep(min(0.05, max(0.0, deadline - clock())))
    if state() == "poweredOff":
        return "guest"
    warn(f"{vm}: the guest did not shut down within {timeout:g}s; powering off hard")
    try:
        hard_off()
    except SourceOperationError:
        if state() != "poweredOff":
            raise
        return "guest"
    return "hard"
