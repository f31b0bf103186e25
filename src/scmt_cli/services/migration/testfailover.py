"""``scmt failover --test``: boot a throw-away, point-in-time clone of a VM's synced disks while syncs go on.

For a VM that is ``syncing`` and whose last sync pass finished:

1. *Clone*, under the VM's lock and each synced disk's lock: the test record
   ``<vm>/test-failover.json`` is written, then every synced disk is cloned
   into ``<vm>/test-failover/diskN.raw`` (a reflink where the file system can,
   else a sparse copy after a free-space check: :mod:`scmt_cli.targets.clone`).
   The VM's lock is released right after, so syncs of the VM continue during
   the test: they write the synced files, never the clone.
2. *Convert* the clone like a real failover would (``--direct``: not
   converted, booted on SATA), with everything of that conversion -- overlays,
   commit marker, input XML, ``convert.log`` -- in the test folder.  Nothing of
   a test lands beside the real disks, so an interrupted test can never make a
   later real failover believe its conversion was done.
3. *Boot* it isolated (no NIC) and report like ``scmt boot``: on a ``dir``
   target QEMU runs it (and is stopped after the ready line); on a ``libvirt``
   target it runs as the transient domain ``<vm>-scmt-test``, which keeps
   running for inspection until ``--cleanup``.

A test holds ``<vm>/test-failover.lock`` from start to end, so a second test
of the VM, or a cleanup while a test runs, is refused (exit 40).  The source,
the VM's state and the synced disks never change.  ``--cleanup`` stops the
test domain and removes the clone, its folder and the record; a real failover
refuses to start while the record exists.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from scmt_cli.errors import InvalidStateError, LockedError, NotAvailableError
from scmt_cli.services.migration.boot import BootRequest, BootResult, progress_of, vm_folder
from scmt_cli.services.migration.context import MigrationContext
from scmt_cli.services.migration.source import source_vm
from scmt_cli.targets import storage
from scmt_cli.targets.base import DiskBus, TargetDisk, TargetVmSpec
from scmt_cli.targets.clone import clone_files
from scmt_cli.targets.convert import ConvertJob
from scmt_cli.targets.disklock import DiskLock, describe_holder, disk_locks
from scmt_cli.targets.domxml import build_domain_xml
from scmt_cli.targets.qemu import boot as qemu_boot
from scmt_cli.targets.qemu import machine_from_domain_xml
from scmt_cli.targets.specs import vm_spec_from_plan

TEST_DIR = "test-failover"
TEST_RECORD = "test-failover.json"
TEST_DOMAIN_SUFFIX = "-scmt-test"


def test_copy_exists(ctx: MigrationContext, vm: str) -> Path | None:
    """The record of a test failover copy of ``vm`` that was not cleaned up (None when there is none)."""
    try:
        folder = vm_folder(ctx, vm)
    except NotAvailableError:  # a platform without VM folders has no test copies
        return None
    record = folder / TEST_RECORD
    return record if record.exists() else None


def _guard(folder: Path, vm: str, doing: str) -> DiskLock | None:
    """The test lock of ``vm`` (None when the VM has no folder yet: nothing synced, nothing to test or clean)."""
    if not folder.is_dir():
        return None
    lock = DiskLock(folder / TEST_DIR, what=f"scmt test failover of {vm}")
    try:
        return lock.acquire()
    except LockedError:
        raise LockedError(f"{vm}: a test failover of this VM is running: {describe_holder(lock.path)}; "
                          f"{doing} waits until it has finished",
                          hint="let it finish (or stop that process by its pid), then run the command again") from None


def _clone(ctx: MigrationContext, vm: str, folder: Path, test_dir: Path) -> tuple[list[Path], dict[str, Any]]:
    """Under the VM's lock: check, write the record, clone the synced disks; return the clones."""
    eff = ctx.effective(vm)
    with ctx.locks([vm]):
        status, _ = ctx.status(vm)
        if status.state != "syncing":
            raise InvalidStateError(f"{vm} is {status.state!r}; a test failover needs a VM in sync ('syncing')",
                                    hint="run scmt sync first" if status.state in ("planned", "seeding") else None)
        if (folder / TEST_RECORD).exists():
            raise InvalidStateError(f"{vm}: a test failover copy exists already ({folder / TEST_DIR})",
                                    hint=f"remove it with: scmt failover PLAN --vm {vm} --test --cleanup")
        last = ctx.store.last_generation(ctx.plan.name, vm)
        if last is None or not last.ok:
            raise InvalidStateError(
                f"{vm}: the last sync pass ({last.kind if last else 'none'}, {last.status if last else '-'}) did not "
                "finish, so the synced disks hold no consistent point in time to test",
                hint="run scmt sync for this VM (it resumes), then the test failover")
        disks = sorted(storage.load_prepared(Path(ctx.platform.root), eff.target_name),  # type: ignore[attr-defined]
                       key=lambda d: d.index)
        if not disks:
            raise InvalidStateError(f"{vm}: no synced disks in {folder}", hint="run scmt sync first")
        test_dir.mkdir(parents=True, exist_ok=True)
        storage.write_json_atomic(folder / TEST_RECORD, {"format": 1, "created": time.time(), "dir": str(test_dir),
                                                         "plan": ctx.plan.name, "generation": last.id})
        pairs = [(Path(d.copy_path), test_dir / f"disk{d.index}.raw") for d in disks]
        t0 = time.monotonic()
        try:
            with disk_locks([src for src, _ in pairs], what=f"scmt test failover clone of {vm}"):
                method = clone_files(pairs)
        except BaseException:
            shutil.rmtree(test_dir, ignore_errors=True)
            (folder / TEST_RECORD).unlink(missing_ok=True)
            raise
        info = {"method": method, "seconds": round(time.monotonic() - t0, 3), "generation": last.id,
                "synced_at": last.finished_at, "disks": [str(dst) for _, dst in pairs]}
    ctx.reporter.event("test_failover_cloned", vm=vm, **info)
    ctx.reporter.log("info", f"{vm}: synced disks cloned ({method}, {info['seconds']:.2f} s); syncs may continue",
                     vm=vm)
    return [dst for _, dst in pairs], info


def run_test_failover(req: BootRequest, ctx: MigrationContext) -> BootResult:
    vm = req.vm
    ctx.select([vm])
    eff = ctx.effective(vm)
    direct = req.direct or eff.direct
    result = BootResult("test-failover", ctx.plan.name, vm, expected=req.expect)
    folder = vm_folder(ctx, vm)
    test_dir = folder / TEST_DIR
    result.test_dir = str(test_dir)
    guard = _guard(folder, vm, "another test failover")
    try:
        clones, result.clone = _clone(ctx, vm, folder, test_dir)
        vc = ctx.vcenter()
        try:
            inv = source_vm(vc, vm)
        finally:
            vc.close()
        spec = vm_spec_from_plan(eff, ctx.plan.target, inv, (), plan_name=ctx.plan.name,
                                 compatible_devices=direct or None)
        bus: DiskBus = "sata" if direct else "virtio"
        spec = dataclasses.replace(spec, disks=tuple(TargetDisk(str(p), "raw", bus) for p in clones),
                                   nics=()).validated()
        job = ConvertJob(log_path=test_dir / "convert.log", cache_dir=test_dir / ".v2v-cache",
                         cancel=ctx.cancel.check)
        conv = ctx.platform.convert(spec, direct=direct, job=job, folder=test_dir)
        result.conversion = conv.to_dict()
        result.warnings.extend(conv.warnings)
        xml = build_domain_xml(spec, link_up=False)
        storage.write_atomic(test_dir / "domain.xml", xml.encode())
        ctx.reporter.event("test_failover_boot", vm=vm, test_dir=str(test_dir))
        out = _boot(ctx, req, spec, test_dir)
        result.outcome = out
        result.warnings.extend(out.warnings)
        storage.write_json_atomic(folder / TEST_RECORD, {
            "format": 1, "created": time.time(), "dir": str(test_dir), "plan": ctx.plan.name,
            "generation": result.clone["generation"], "clone": result.clone, "boot": out.to_dict(),
            "data_verified": result.data_verified})
    finally:
        if guard is not None:
            guard.release()
    return result


def _boot(ctx: MigrationContext, req: BootRequest, spec: TargetVmSpec, test_dir: Path) -> Any:
    vm = req.vm
    if ctx.platform.kind == "libvirt":
        from scmt_cli.targets.libvirtboot import boot_transient

        test_spec = dataclasses.replace(spec, name=spec.name + TEST_DOMAIN_SUFFIX, uuid=None,
                                        description=f"scmt test failover copy of {vm} (plan {ctx.plan.name})")
        return boot_transient(ctx.platform, test_spec, test_dir / "console.log", accel=req.accel, ready=req.ready,
                              timeout_s=req.timeout_s, stall_s=req.stall_s, check=ctx.cancel.check,
                              progress=progress_of(ctx, vm))
    machine = machine_from_domain_xml(build_domain_xml(spec, link_up=False), vm=f"{vm}-test")
    return qemu_boot(machine, test_dir / "console.log", accel=req.accel, ready=req.ready, timeout_s=req.timeout_s,
                     stall_s=req.stall_s, check=ctx.cancel.check, progress=progress_of(ctx, vm))


def run_test_cleanup(req: BootRequest, ctx: MigrationContext) -> BootResult:
    """Stop the test domain (libvirt), remove the clone, its folder and the record.  The VM's lock is not
    needed (nothing of the VM itself changes), so a cleanup works while the VM syncs."""
    vm = req.vm
    ctx.select([vm])
    result = BootResult("test-failover-cleanup", ctx.plan.name, vm)
    folder = vm_folder(ctx, vm)
    test_dir = folder / TEST_DIR
    result.test_dir = str(test_dir)
    guard = _guard(folder, vm, "the cleanup")
    try:
        if ctx.platform.kind == "libvirt":
            domain = ctx.effective(vm).target_name + TEST_DOMAIN_SUFFIX
            if ctx.platform.stop_transient(domain):  # type: ignore[attr-defined]
                result.removed.append(f"domain {domain}")
        if test_dir.exists():
            shutil.rmtree(test_dir)
            result.removed.append(str(test_dir))
        record = folder / TEST_RECORD
        if record.exists():
            record.unlink()
            result.removed.append(str(record))
        if guard is not None:
            guard.path.unlink(missing_ok=True)  # while still held: a test starting now finds no stale lock
        ctx.reporter.event("test_failover_cleaned", vm=vm, removed=result.removed)
    finally:
        if guard is not None:
            guard.release()
    return result
