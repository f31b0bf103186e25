"""The state store's migration records: plans, VMs, disks and sync generations.

See :mod:`scmt_cli.state.core` for the file, transaction and threading contract.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scmt_cli.errors import InvalidStateError, StateStoreError
from scmt_cli.state.core import StoreCore, clean_error
from scmt_cli.state.guard import check_no_secrets, from_json, to_json
from scmt_cli.state.paths import default_state_path, resolve_state_path
from scmt_cli.state.records import (
    GENERATION_KINDS,
    INITIAL_VM_STATE,
    DiskRecord,
    GenerationRecord,
    PlanRecord,
    VmRecord,
)

__all__ = ["StateStore", "default_state_path", "resolve_state_path"]

_VM_COLUMNS = "plan, name, state, method, source_id, target, last_sync_at, last_sync_bytes, error, updated_at"
_VM_FIELDS = frozenset({"state", "method", "source_id", "target", "last_sync_at", "last_sync_bytes", "error"})
_DISK_COLUMNS = "plan, vm, disk_key, label, capacity_bytes, target, change_id, manifest_path, updated_at"
_DISK_FIELDS = frozenset({"label", "capacity_bytes", "target", "change_id", "manifest_path"})
_GEN_COLUMNS = (
    "id, plan, vm, kind, status, started_at, finished_at, bytes_read, bytes_written, bytes_zero,"
    " change_ids, stats, error"
)
_DIGEST = re.compile(r"[0-9a-f]{64}")


class StateStore(StoreCore):
    """Handle on one state file.  Create with :meth:`open`; use as a context manager."""

    # -- plans -------------------------------------------------------------------
    def record_plan(self, name: str, path: Path | str, digest: str) -> None:
        """Record (or update) a plan and the SHA-256 hex digest of its file.

        A new plan or a changed digest is also written to the event log.
        """
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"plan digest must be 64 lowercase hex characters, got {digest!r}")
        with self._tx() as conn:
            row = conn.execute("SELECT digest FROM plans WHERE name = ?", (name,)).fetchone()
            conn.execute(
                "INSERT INTO plans (name, path, digest, recorded_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET path = excluded.path, digest = excluded.digest,"
                " recorded_at = excluded.recorded_at",
                (name, str(path), digest, self.clock()),
            )
            if row is None or row[0] != digest:
                self.append_event("plan_recorded", plan=name, path=str(path), digest=digest)

    def get_plan(self, name: str) -> PlanRecord | None:
        rows = self._query("SELECT name, path, digest, recorded_at FROM plans WHERE name = ?", (name,))
        return PlanRecord(*rows[0]) if rows else None

    def list_plans(self) -> list[PlanRecord]:
        return [PlanRecord(*r) for r in self._query("SELECT name, path, digest, recorded_at FROM plans ORDER BY name")]

    # -- VMs ---------------------------------------------------------------------
    def _require_plan(self, conn: sqlite3.Connection, plan: str) -> None:
        if conn.execute("SELECT 1 FROM plans WHERE name = ?", (plan,)).fetchone() is None:
            raise StateStoreError(f"plan {plan!r} is not recorded in the state store (record_plan first)")

    def _require_vm(self, conn: sqlite3.Connection, plan: str, vm: str) -> None:
        if conn.execute("SELECT 1 FROM vms WHERE plan = ? AND name = ?", (plan, vm)).fetchone() is None:
            raise StateStoreError(f"VM {vm!r} of plan {plan!r} is not recorded in the state store (upsert_vm first)")

    def _vm_row(self, conn: sqlite3.Connection, plan: str, name: str) -> VmRecord | None:
        row = conn.execute(f"SELECT {_VM_COLUMNS} FROM vms WHERE plan = ? AND name = ?", (plan, name)).fetchone()  # noqa: S608
        return VmRecord(*row) if row else None

    def upsert_vm(self, plan: str, name: str, **fields: Any) -> VmRecord:
        """Create the VM (state ``planned`` unless given) or update the given fields.

        Fields: ``state, method, source_id, target, last_sync_at,
        last_sync_bytes, error``.  A state change is logged as a ``vm_state``
        event (prefer :meth:`set_vm_state`, which also checks the old state).
        """
        unknown = set(fields) - _VM_FIELDS
        if unknown:
            raise ValueError(f"unknown VM fields: {', '.join(sorted(unknown))}")
        if "error" in fields:
            fields["error"] = clean_error(fields["error"])
        check_no_secrets(fields, f"VM {name}")
        with self._tx() as conn:
            self._require_plan(conn, plan)
            before = self._vm_row(conn, plan, name)
            now = self.clock()
            if before is None:
                values = {"state": INITIAL_VM_STATE, **fields}
                cols = ", ".join(values)
                marks = ", ".join("?" for _ in values)
                conn.execute(
                    f"INSERT INTO vms (plan, name, updated_at, {cols}) VALUES (?, ?, ?, {marks})",  # noqa: S608
                    (plan, name, now, *values.values()),
                )
            elif fields:
                sets = ", ".join(f"{k} = ?" for k in fields)
                conn.execute(
                    f"UPDATE vms SET {sets}, updated_at = ? WHERE plan = ? AND name = ?",  # noqa: S608
                    (*fields.values(), now, plan, name),
                )
            after = self._vm_row(conn, plan, name)
            assert after is not None
            old_state = None if before is None else before.state
            if old_state != after.state:
                self.append_event("vm_state", plan=plan, vm=name, **{"from": old_state, "to": after.state})
            return after

    def get_vm(self, plan: str, name: str) -> VmRecord | None:
        rows = self._query(f"SELECT {_VM_COLUMNS} FROM vms WHERE plan = ? AND name = ?", (plan, name))  # noqa: S608
        return VmRecord(*rows[0]) if rows else None

    def list_vms(self, plan: str) -> list[VmRecord]:
        rows = self._query(f"SELECT {_VM_COLUMNS} FROM vms WHERE plan = ? ORDER BY name", (plan,))  # noqa: S608
        return [VmRecord(*r) for r in rows]

    def set_vm_state(
        self,
        plan: str,
        name: str,
        state: str,
        *,
        expected: set[str] | frozenset[str] | None = None,
        error: str | None = None,
    ) -> VmRecord:
        """Move a VM to ``state`` (and set its ``error``, cleared when ``None``).

        With ``expected``, the VM must exist and be in one of those states,
        else :class:`InvalidStateError` (exit 42) and nothing changes; the
        check and the change are one transaction, so two runs cannot both
        pass it.  Without ``expected`` an unknown VM is created.  Every call
        appends a ``vm_state`` event.
        """
        with self._tx() as conn:
            current = self._vm_row(conn, plan, name)
            if expected is not None:
                wanted = ", ".join(sorted(expected)) or "(none)"
                if current is None:
                    raise InvalidStateError(
                        f"VM {name} of plan {plan} has no recorded state; this step needs: {wanted}",
                        hint="run scmt sync first",
                    )
                if current.state not in expected:
                    raise InvalidStateError(f"VM {name} of plan {plan} is {current.state}; this step needs: {wanted}")
            cleaned = clean_error(error)
            if current is None:
                self._require_plan(conn, plan)
                conn.execute(
                    "INSERT INTO vms (plan, name, state, error, updated_at) VALUES (?, ?, ?, ?, ?)",
                    (plan, name, state, cleaned, self.clock()),
                )
            else:
                conn.execute(
                    "UPDATE vms SET state = ?, error = ?, updated_at = ? WHERE plan = ? AND name = ?",
                    (state, cleaned, self.clock(), plan, name),
                )
            data: dict[str, Any] = {"from": None if current is None else current.state, "to": state}
            if cleaned is not None:
                data["error"] = cleaned
            self.append_event("vm_state", plan=plan, vm=name, **data)
            after = self._vm_row(conn, plan, name)
            assert after is not None
            return after

    # -- disks -------------------------------------------------------------------
    def upsert_disk(self, plan: str, vm: str, key: int, **fields: Any) -> DiskRecord:
        """Create or update one disk of a recorded VM.

        Fields: ``label, capacity_bytes, target, change_id, manifest_path``;
        only the given ones change.  ``target`` must not carry a password.
        """
        unknown = set(fields) - _DISK_FIELDS
        if unknown:
            raise ValueError(f"unknown disk fields: {', '.join(sorted(unknown))}")
        fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in fields.items()}
        check_no_secrets(fields, f"disk {key} of VM {vm}")
        with self._tx() as conn:
            self._require_vm(conn, plan, vm)
            now = self.clock()
            cols = "".join(f", {k}" for k in fields)
            marks = "".join(", ?" for _ in fields)
            sets = "".join(f", {k} = excluded.{k}" for k in fields)
            conn.execute(
                f"INSERT INTO disks (plan, vm, disk_key, updated_at{cols}) VALUES (?, ?, ?, ?{marks})"  # noqa: S608
                f" ON CONFLICT (plan, vm, disk_key) DO UPDATE SET updated_at = excluded.updated_at{sets}",
                (plan, vm, int(key), now, *fields.values()),
            )
            row = conn.execute(
                f"SELECT {_DISK_COLUMNS} FROM disks WHERE plan = ? AND vm = ? AND disk_key = ?",  # noqa: S608
                (plan, vm, int(key)),
            ).fetchone()
            return DiskRecord(*row)

    def list_disks(self, plan: str, vm: str) -> list[DiskRecord]:
        rows = self._query(
            f"SELECT {_DISK_COLUMNS} FROM disks WHERE plan = ? AND vm = ? ORDER BY disk_key",  # noqa: S608
            (plan, vm),
        )
        return [DiskRecord(*r) for r in rows]

    # -- generations ---------------------------------------------------------------
    def begin_generation(self, plan: str, vm: str, kind: str, change_ids: Mapping[Any, Any]) -> int:
        """Start a sync pass (``seed``, ``incremental`` or ``final``); return its id.

        ``change_ids`` maps disk key to the change id the pass starts from.
        """
        if kind not in GENERATION_KINDS:
            raise ValueError(f"generation kind must be one of {sorted(GENERATION_KINDS)}, got {kind!r}")
        ids = to_json({str(k): v for k, v in change_ids.items()}, f"generation of VM {vm}")
        with self._tx() as conn:
            self._require_vm(conn, plan, vm)
            gen_id = int(conn.execute(
                "INSERT INTO generations (plan, vm, kind, started_at, change_ids) VALUES (?, ?, ?, ?, ?) RETURNING id",
                (plan, vm, kind, self.clock(), ids),
            ).fetchone()[0])
            self.append_event("generation_started", plan=plan, vm=vm, generation=gen_id, kind=kind)
            return gen_id

    def finish_generation(self, gen_id: int, *, ok: bool, stats: Mapping[str, Any], error: str | None = None) -> None:
        """End a pass.  ``stats`` may hold ``bytes_read``, ``bytes_written``, ``bytes_zero``.

        On success the VM's ``last_sync_at``/``last_sync_bytes`` are updated
        in the same transaction.  Finishing twice is an :class:`InvalidStateError`.
        """
        counters = {}
        for name in ("bytes_read", "bytes_written", "bytes_zero"):
            value = stats.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"stats[{name!r}] must be a non-negative int, got {value!r}")
            counters[name] = value
        text = to_json(stats, f"generation {gen_id}")
        with self._tx() as conn:
            row = conn.execute("SELECT plan, vm, kind, status FROM generations WHERE id = ?", (gen_id,)).fetchone()
            if row is None:
                raise StateStoreError(f"no sync generation {gen_id} in the state store")
            plan, vm, kind, status = row
            if status != "running":
                raise InvalidStateError(f"sync generation {gen_id} of VM {vm} already finished ({status})")
            now = self.clock()
            conn.execute(
                "UPDATE generations SET status = ?, finished_at = ?, bytes_read = ?, bytes_written = ?,"
                " bytes_zero = ?, stats = ?, error = ? WHERE id = ?",
                ("ok" if ok else "failed", now, *counters.values(), text, clean_error(error), gen_id),
            )
            if ok:
                conn.execute(
                    "UPDATE vms SET last_sync_at = ?, last_sync_bytes = ?, updated_at = ? WHERE plan = ? AND name = ?",
                    (now, counters["bytes_written"], now, plan, vm),
                )
            data: dict[str, Any] = {"generation": gen_id, "kind": kind, "ok": ok, **counters}
            if error is not None:
                data["error"] = clean_error(error)
            self.append_event("generation_finished", plan=plan, vm=vm, **data)

    def last_generation(self, plan: str, vm: str, *, status: str | None = None) -> GenerationRecord | None:
        """The newest pass of one VM (optionally only those with ``status`` ok/failed/running)."""
        gens = [g for g in self.generations(plan, vm) if status is None or g.status == status]
        return gens[-1] if gens else None

    def generations(self, plan: str, vm: str) -> list[GenerationRecord]:
        """All passes of one VM, oldest first."""
        rows = self._query(
            f"SELECT {_GEN_COLUMNS} FROM generations WHERE plan = ? AND vm = ? ORDER BY id",  # noqa: S608
            (plan, vm),
        )
        return [
            GenerationRecord(
                id=r[0],
                plan=r[1],
                vm=r[2],
                kind=r[3],
                status=r[4],
                started_at=r[5],
                finished_at=r[6],
                bytes_read=r[7],
                bytes_written=r[8],
                bytes_zero=r[9],
                change_ids=from_json(r[10]),
                stats=from_json(r[11]),
                error=r[12],
            )
            for r in rows
        ]
