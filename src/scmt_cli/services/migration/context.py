"""What every migration use case shares: the loaded plan, the state store, the
persisted per-VM status, VM selection, the vCenter factory and the worker pool.

Contract:

* a :class:`MigrationContext` is built once per command (:func:`open_context`)
  and closed at the end; it records the plan (path + SHA-256) and every plan
  VM in the state store;
* a VM's status (:class:`~scmt_cli.domain.vmstate.VmStatus`) lives in two
  places written in one transaction: the ``vms`` table (``state``, ``error``)
  and the checkpoint ``status/<plan>/<vm>`` (``failed_from``, ``steps_done``
  and step data such as quiesce time or the source's state before failover);
* services never print; they report through the context's reporter.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from scmt_cli import procs
from scmt_cli.domain.plan import Effective, Plan, load_plan
from scmt_cli.domain.vmstate import VmState, VmStatus, is_state
from scmt_cli.errors import (
    BlockedByAssessmentError,
    Interrupted,
    PartialFailureError,
    PlanError,
    ScmtError,
    UsageError,
)
from scmt_cli.events import Reporter
from scmt_cli.services.migration.snapshots import SnapshotOwner
from scmt_cli.state import StateStore, vm_resource
from scmt_cli.state.locks import VmLock
from scmt_cli.targets import PlatformSpec, TargetPlatform, open_platform
from scmt_cli.transports.wrappers import TokenBucket
from scmt_cli.vsphere.api import VCenter

T = TypeVar("T")

#: Lease of a per-VM lock; the heartbeat renews it every third of it.  ``SCMT_LEASE_SECONDS`` overrides it
#: (a shorter lease lets other hosts take over a dead host's VMs sooner, at more store writes).
LOCK_LEASE_SECONDS = 30.0


def lease_seconds() -> float:
    """The per-VM lease: ``$SCMT_LEASE_SECONDS`` or :data:`LOCK_LEASE_SECONDS`."""
    raw = os.environ.get("SCMT_LEASE_SECONDS", "").strip()
    if not raw:
        return LOCK_LEASE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.5 <= value <= 3600:
        raise UsageError(f"SCMT_LEASE_SECONDS: expected seconds between 0.5 and 3600, got {raw!r}")
    return value


def status_key(plan: str, vm: str) -> str:
    return f"status/{plan}/{vm}"


def exit_code_of_vms(failed_codes: Sequence[int | None], total: int, warned: bool) -> int:
    """The exit code of a run over ``total`` VMs: 60 when some failed; when every VM failed with the same
    code, that code; else 1 when it warned, 0 when not.  ``failed_codes``: the code of each failed VM."""
    if failed_codes:
        codes = set(failed_codes)
        if len(failed_codes) == total and len(codes) == 1 and None not in codes:
            return int(codes.pop() or PartialFailureError.exit_code)
        return PartialFailureError.exit_code
    return 1 if warned else 0


@dataclass
class VmOutcome:
    """What one command did to one VM (the rows of every migration result)."""

    vm: str
    ok: bool = True
    state: str = ""
    action: str = ""
    error: str | None = None
    error_code: int | None = None
    warnings: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vm": self.vm,
            "ok": self.ok,
            "state": self.state,
            "action": self.action,
            "error": self.error,
            "error_code": self.error_code,
            "warnings": list(self.warnings),
            **self.data,
        }


class Cancel:
    """A flag worker threads check between blocks (set on Ctrl-C/SIGTERM in the main thread)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def check(self) -> None:
        if self.event.is_set():
            raise Interrupted("stopped on request; progress so far was checkpointed")


VCenterFactory = Callable[[Reporter], VCenter]


class MigrationContext:
    """Plan + store + reporter + factories for one command.  Thread-safe where noted."""

    def __init__(self, plan: Plan, store: StateStore, reporter: Reporter, *,
                 vcenter_factory: VCenterFactory | None = None,
                 platform: TargetPlatform | None = None) -> None:
        self.plan = plan
        self.store = store
        self.reporter = reporter
        self.cancel = Cancel()
        self._vcenter_factory = vcenter_factory
        self._platform = platform
        self._platform_lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._closers: list[Callable[[], None]] = []
        #: This command run's id: with the store's id, the owner tag of the snapshots it creates.
        self.run_id = uuid.uuid4().hex[:12]
        #: ``scmt sync --remove-foreign-snapshots``: also remove tool snapshots another store made.
        self.remove_foreign_snapshots = False
        #: ``--bandwidth`` of ``sync``/``migrate``: bytes/s for every VM of this run over the plan's limit
        #: (``math.inf``: unlimited); ``None``: each VM's plan ``bandwidth``.
        self.bandwidth_override: float | None = None
        self._owner: SnapshotOwner | None = None

    @property
    def snapshot_owner(self) -> SnapshotOwner:
        """The owner tag of the snapshots this run creates (this store's id, this run's id)."""
        if self._owner is None:
            self._owner = SnapshotOwner(self.store.store_id, self.run_id)
        return self._owner

    # -- factories -----------------------------------------------------------------
    def vcenter(self) -> VCenter:
        """A new, connected VCenter for the calling thread (close it when done)."""
        if self._vcenter_factory is not None:
            vc = self._vcenter_factory(self.reporter)
        else:
            from scmt_cli.services.migration.source import open_vcenter

            vc = open_vcenter(self.plan, self.reporter)
        vc.connect()
        return vc

    @property
    def platform(self) -> TargetPlatform:
        """The plan's target platform (opened once, shared by threads)."""
        with self._platform_lock:
            if self._platform is None:
                self._platform = open_platform(platform_spec(self.plan), reporter=self.reporter,
                                               where=str(self.plan.file))
            return self._platform

    def rate(self, vm: str) -> float | None:
        """The read limit of ``vm`` in this run, bytes/s (None: unlimited): ``--bandwidth``, else the plan's."""
        if self.bandwidth_override is not None:
            return None if math.isinf(self.bandwidth_override) else self.bandwidth_override
        return self.effective(vm).bandwidth

    def bucket(self, vm: str) -> TokenBucket | None:
        """The token bucket of ``vm`` in this run (None: unlimited), shared by its disks and its passes.

        The limit is per VM, as the plan schema and ``plan estimate`` say: VMs synced at once each get
        their own ``rate(vm)``.
        """
        rate = self.rate(vm)
        if rate is None:
            return None
        with self._platform_lock:
            held = self._buckets.get(vm)
            if held is None or held.rate != rate:
                held = self._buckets[vm] = TokenBucket(rate, burst=max(rate / 4, 1024 * 1024))
            return held

    def on_close(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` from :meth:`close` (e.g. to end the agent change streams a command opened)."""
        self._closers.append(fn)

    def close(self) -> None:
        for fn in reversed(self._closers):
            fn()
        self._closers.clear()
        if self._platform is not None:
            self._platform.close()

    # -- plan ----------------------------------------------------------------------
    def effective(self, vm: str) -> Effective:
        return self.plan.effective(vm)

    def select(self, vms: Sequence[str] = (), group: str | None = None) -> list[str]:
        """Plan VMs named by ``--vm``/``--group`` (all when neither); unknown names are a UsageError."""
        names = [v.name for v in self.plan.vms]
        if group is not None:
            try:
                members = list(self.plan.group(group).vms)
            except KeyError:
                known = ", ".join(g.name for g in self.plan.groups) or "none"
                raise UsageError(f"group {group!r} is not in plan {self.plan.name} (groups: {known})") from None
            if vms:
                raise UsageError("give --vm or --group, not both")
            return members
        if not vms:
            return names
        unknown = [v for v in vms if v not in names]
        if unknown:
            raise UsageError(f"VM {unknown[0]!r} is not in plan {self.plan.name} (VMs: {', '.join(names)})")
        return list(dict.fromkeys(vms))

    # -- status --------------------------------------------------------------------
    def status(self, vm: str) -> tuple[VmStatus, dict[str, Any]]:
        """The persisted status of ``vm`` and its step data (``planned`` and ``{}`` when unknown)."""
        rec = self.store.get_vm(self.plan.name, vm)
        extra = self.store.get_checkpoint(status_key(self.plan.name, vm)) or {}
        if rec is None or not is_state(rec.state):
            return VmStatus(vm), {}
        failed_from = extra.get("failed_from")
        status = VmStatus(
            vm,
            cast(VmState, rec.state),
            cast(VmState, failed_from) if failed_from and is_state(failed_from) else None,
            tuple(extra.get("steps_done", ())),
            rec.error,
        )
        return status, dict(extra.get("data", {}))

    def save_status(self, status: VmStatus, data: dict[str, Any] | None = None, *,
                    expected: Iterable[str] | None = None) -> None:
        """Persist ``status`` (and replace the step ``data`` when given) in one transaction."""
        plan = self.plan.name
        with self.store.atomic():
            old = self.store.get_checkpoint(status_key(plan, status.vm)) or {}
            self.store.set_vm_state(plan, status.vm, status.state, error=status.error,
                                    expected=frozenset(expected) if expected is not None else None)
            self.store.put_checkpoint(status_key(plan, status.vm), {
                "failed_from": status.failed_from,
                "steps_done": list(status.steps_done),
                "data": old.get("data", {}) if data is None else data,
            })

    def update_data(self, vm: str, **values: Any) -> dict[str, Any]:
        """Merge ``values`` into the step data of ``vm``; return the new data."""
        key = status_key(self.plan.name, vm)
        with self.store.atomic():
            rec = self.store.get_checkpoint(key) or {"failed_from": None, "steps_done": [], "data": {}}
            data = {**rec.get("data", {}), **values}
            self.store.put_checkpoint(key, {**rec, "data": data})
        return data

    def fail(self, status: VmStatus, exc: BaseException) -> VmStatus:
        """Record ``exc`` as the VM's failure (keeping the steps done); return the failed status.

        A VM that assessment blocks becomes ``blocked`` (its error names the rule ids), not ``failed``,
        unless its cutover had begun: then it is ``failed``, so failover resumes and rollback restores.
        """
        message = exc.message if isinstance(exc, ScmtError) else f"{type(exc).__name__}: {exc}"
        targets: tuple[VmState, ...] = ("blocked", "failed") if isinstance(exc, BlockedByAssessmentError) \
            else ("failed",)
        failed = VmStatus(status.vm, status.state, status.failed_from, status.steps_done, message)
        for target in targets:
            try:
                failed = status.move(target, error=message)
                break
            except ScmtError:  # e.g. a finished cutover cannot become failed: keep the state, note the error
                continue
        try:
            self.save_status(failed)
        except ScmtError as store_exc:  # the original failure matters more
            self.reporter.log("warning", f"{status.vm}: could not record the failure: {store_exc.message}")
        return failed

    # -- locks ---------------------------------------------------------------------
    def lock(self, vm: str) -> VmLock:
        return self.store.lock(vm_resource(self.plan.name, vm), lease_seconds=lease_seconds())

    @contextmanager
    def locks(self, vms: Sequence[str]) -> Iterator[dict[str, VmLock]]:
        """Hold the locks of every VM in ``vms`` (taken in sorted order, released on exit)."""
        held: dict[str, VmLock] = {}
        try:
            for vm in sorted(vms):
                held[vm] = self.lock(vm).acquire()
            yield held
        finally:
            for lk in held.values():
                lk.release()

    # -- concurrency ------------------------------------------------------------------
    def run_pool(self, items: Sequence[str], fn: Callable[[str], T], *, workers: int) -> list[T]:
        """Run ``fn(item)`` for each item, ``workers`` at a time; results in ``items`` order.

        ``fn`` must not raise for an ordinary per-VM failure (it returns an
        outcome).  Ctrl-C/SIGTERM in the calling thread sets :attr:`cancel`,
        waits for the workers to stop at their next block, then re-raises.
        """
        if workers <= 1 or len(items) <= 1:
            return [fn(item) for item in items]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scmt-vm")
        futures: list[Future[T]] = [pool.submit(fn, item) for item in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            self.cancel.event.set()
            for f in futures:
                f.cancel()
            procs.stop_all()  # a worker waiting on a child (converter, hook) must not keep us waiting
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


#: Where a libvirt target keeps disk files when the plan maps no directory (libvirt's default pool).
LIBVIRT_DEFAULT_IMAGES = "/var/lib/libvirt/images"


def platform_spec(plan: Plan) -> PlatformSpec:
    """The platform settings of a plan.  A ``libvirt`` plan has no ``path``: its disk folder is the
    ``storage['*']`` entry when that is an absolute directory, else libvirt's default images folder."""
    t = plan.target
    data: dict[str, Any] = {"type": t.type, "disk_format": t.disk_format, "v2v_timeout_s": t.v2v_timeout,
                            "v2v_stall_timeout_s": t.v2v_stall_timeout, "v2v_accel": t.v2v_accel}
    if t.uri:
        data["uri"] = t.uri
    if t.type == "libvirt":
        data["domain_type"] = t.domain_type
    if t.path is not None:
        data["path"] = str(t.path)
    elif t.type == "libvirt":
        fallback = t.storage_for(None)
        data["path"] = fallback if fallback and Path(fallback).is_absolute() else LIBVIRT_DEFAULT_IMAGES
    return PlatformSpec.from_mapping(data, where=str(plan.file))


def plan_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def open_context(plan_path: Path, store: StateStore, reporter: Reporter, *,
                 vcenter_factory: VCenterFactory | None = None,
                 platform: TargetPlatform | None = None) -> MigrationContext:
    """Load and record the plan; record every plan VM (state ``planned`` when new)."""
    loaded = load_plan(plan_path)
    plan = loaded.plan
    for w in loaded.warnings:
        reporter.log("warning", w.format())
    if plan.target.type == "dir" and plan.target.path is None:
        raise PlanError(f"{plan_path}: target.path is required for a dir target")
    store.record_plan(plan.name, plan.file, plan_digest(Path(plan.file)))
    for vm in plan.vms:
        if store.get_vm(plan.name, vm.name) is None:
            store.upsert_vm(plan.name, vm.name, method=plan.effective(vm).method, target=vm.target_name)
    return MigrationContext(plan, store, reporter, vcenter_factory=vcenter_factory, platform=platform)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
