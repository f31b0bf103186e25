"""Immutable records returned by the state store.

Times are POSIX seconds (UTC, ``float``) as stored; :func:`iso` renders them
for humans and JSON.  ``to_dict()`` gives a JSON-ready view with ISO times.
Records are snapshots: changing the store does not change a record already
returned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

GenerationKind = Literal["seed", "incremental", "final"]
GenerationStatus = Literal["running", "ok", "failed"]

GENERATION_KINDS: frozenset[str] = frozenset({"seed", "incremental", "final"})

#: The state a VM gets when it is first recorded without an explicit state.
INITIAL_VM_STATE = "planned"


def iso(ts: float | None) -> str | None:
    """``1764148800.25`` -> ``"2025-11-26T09:20:00.250Z"``; ``None`` stays ``None``."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _with_iso(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        data[key] = iso(data[key])
    return data


@dataclass(frozen=True)
class PlanRecord:
    """A plan file as last recorded: ``digest`` is the SHA-256 (hex) of its bytes."""

    name: str
    path: str
    digest: str
    recorded_at: float

    def to_dict(self) -> dict[str, Any]:
        return _with_iso(asdict(self), "recorded_at")


@dataclass(frozen=True)
class VmRecord:
    """One VM of one plan: where it is in the migration state machine.

    ``state`` is a name from the per-VM state machine (``planned``, ``seeding``,
    ``syncing`` ...); the store does not interpret it beyond
    :meth:`~scmt_cli.state.StateStore.set_vm_state`'s ``expected`` check.
    ``error`` is the last error message (already free of secrets), or ``None``.
    """

    plan: str
    name: str
    state: str
    method: str | None
    source_id: str | None
    target: str | None
    last_sync_at: float | None
    last_sync_bytes: int | None
    error: str | None
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return _with_iso(asdict(self), "last_sync_at", "updated_at")


@dataclass(frozen=True)
class DiskRecord:
    """One disk of one VM.  ``key`` is the vSphere device key (2000, 2001, ...).

    ``target`` is the target path or URL, ``change_id`` the CBT change id the
    last successful sync ended at, ``manifest_path`` the digest manifest of the
    target copy (for digest-based incrementals and verification).
    """

    plan: str
    vm: str
    key: int
    label: str | None
    capacity_bytes: int | None
    target: str | None
    change_id: str | None
    manifest_path: str | None
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return _with_iso(asdict(self), "updated_at")


@dataclass(frozen=True)
class GenerationRecord:
    """One sync pass over one VM's disks.

    ``change_ids`` maps disk key (as a string, JSON-style) to the change id
    the pass started from (``"*"`` or absent for a full seed).  ``stats`` is
    whatever the engine reported at the end; ``bytes_*`` are lifted out of it.
    ``status`` is ``running`` until :meth:`finish_generation`; a ``running``
    generation whose process died stays ``running`` (the next sync sees it).
    """

    id: int
    plan: str
    vm: str
    kind: str
    status: str
    started_at: float
    finished_at: float | None
    bytes_read: int
    bytes_written: int
    bytes_zero: int
    change_ids: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return _with_iso(asdict(self), "started_at", "finished_at")


@dataclass(frozen=True)
class EventRecord:
    """One entry of the append-only event log (the source of ``status`` and history)."""

    id: int
    at: float
    kind: str
    plan: str | None
    vm: str | None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _with_iso(asdict(self), "at")


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock: ``owner`` is an opaque id unique per acquisition."""

    resource: str
    owner: str
    pid: int
    hostname: str
    acquired_at: float
    lease_expires_at: float

    def describe(self, now: float) -> str:
        """One line naming the holder, fit for an error message."""
        left = self.lease_expires_at - now
        when = f"in {left:.0f} s" if left >= 0 else f"{-left:.0f} s ago"
        return (
            f"pid {self.pid} on host {self.hostname} since {iso(self.acquired_at)}, "
            f"lease expires {iso(self.lease_expires_at)} ({when})"
        )

    def to_dict(self) -> dict[str, Any]:
        return _with_iso(asdict(self), "acquired_at", "lease_expires_at")
