"""``scmt boot`` and ``scmt failover --test``: start a migrated VM for real and read its console.

``boot`` (a VM that is ``cut-over`` or ``committed`` on a ``dir`` target):
QEMU runs the generated ``domain.xml`` (disk buses, memory, CPUs; no NIC)
until the guest prints its ready line (:mod:`scmt_cli.targets.qemu`).  The
result says whether it ``booted``, the seconds to the ready line, the line
itself and, when ``--expect`` gives the value the guest should report (e.g. the
data checksum taken at quiesce), ``data_verified``.  The boot is recorded in the
state store (``status`` shows it next to the downtime).

``test failover`` (a VM that is ``syncing``): a throw-away copy of the latest
synced disks as qcow2 overlays in ``<vm>/test-failover/`` (the synced raw
files are only read), converted by the platform's converter like a real
failover would (``--direct``: not converted, booted on SATA like a direct
failover), booted isolated (no NIC).  The VM's state machine, the source
and the synced disks are untouched; the overlays stay for inspection until
``--cleanup``, and a real failover refuses to start while they exist.  The
VM's lock is held during the test boot, so a sync of that VM started
meanwhile is refused (exit 40) instead of changing disks under the test copy.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.errors import ConfigError, InvalidStateError, NotAvailableError, TargetPlatformError, VerificationError
from scmt_cli.services.migration.context import MigrationContext
from scmt_cli.services.migration.source import source_vm
from scmt_cli.targets import storage
from scmt_cli.targets.base import DiskBus, TargetDisk
from scmt_cli.targets.domxml import build_domain_xml
from scmt_cli.targets.qemu import DEFAULT_READY, BootOutcome, machine_from_domain_xml
from scmt_cli.targets.qemu import boot as qemu_boot
from scmt_cli.targets.specs import vm_spec_from_plan

TEST_DIR = "test-failover"
TEST_RECORD = "test-failover.json"


@dataclass(frozen=True)
class BootRequest:
    plan: Path
    vm: str
    accel: str = "auto"
    expect: str | None = None
    ready: str = DEFAULT_READY
    timeout_s: float = 900.0
    stall_s: float = 180.0
    direct: bool = False  # test failover only: no conversion, SATA disks


@dataclass
class BootResult:
    command: str  # boot | test-failover | test-failover-cleanup
    plan: str
    vm: str
    outcome: BootOutcome | None = None
    expected: str | None = None
    test_dir: str | None = None
    removed: list[str] = field(default_factory=list)
    conversion: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def data_verified(self) -> bool | None:
        if self.outcome is None or self.expected is None:
            return None
        return self.outcome.guest_value == self.expected

    @property
    def exit_code(self) -> int:
        if self.data_verified is False:
            return VerificationError.exit_code
        return 1 if self.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"command": self.command, "plan": self.plan, "vm": self.vm}
        if self.outcome is not None:
            d["boot"] = {**self.outcome.to_dict(), "expected": self.expected, "data_verified": self.data_verified}
        if self.command != "boot":
            d["test_dir"] = self.test_dir
        if self.conversion is not None:
            d["conversion"] = self.conversion
        if self.removed:
            d["removed"] = self.removed
        d["warnings"] = self.warnings
        return d


def _folder(ctx: MigrationContext, vm: str) -> Path:
    platform = ctx.platform
    if getattr(platform, "kind", None) != "dir" or not hasattr(platform, "vm_dir"):
        raise NotAvailableError(f"{vm}: scmt boot drives type: dir targets; on libvirt use 'virsh start' "
                                f"and 'virsh console'")
    return Path(platform.vm_dir(ctx.effective(vm).target_name))


def test_copy_exists(ctx: MigrationContext, vm: str) -> Path | None:
    """The record of a test failover copy of ``vm`` that was not cleaned up (None when there is none)."""
    try:
        folder = Path(ctx.platform.vm_dir(ctx.effective(vm).target_name))  # type: ignore[attr-defined]
    except AttributeError:
        return None
    record = folder / TEST_RECORD
    return record if record.exists() else None


def _boot(ctx: MigrationContext, req: BootRequest, machine: Any, console: Path) -> BootOutcome:
    return qemu_boot(machine, console, accel=req.accel, ready=req.ready, timeout_s=req.timeout_s,
                     stall_s=req.stall_s, check=ctx.cancel.check,
                     progress=lambda m: ctx.reporter.log("info", m, vm=req.vm))


def run_boot(req: BootRequest, ctx: MigrationContext) -> BootResult:
    vm = req.vm
    ctx.select([vm])
    result = BootResult("boot", ctx.plan.name, vm, expected=req.expect)
    with ctx.locks([vm]):
        status, _ = ctx.status(vm)
        if status.state not in ("cut-over", "committed"):
            raise InvalidStateError(f"{vm} is {status.state!r}; scmt boot needs a VM that failed over "
                                    "('cut-over' or 'committed')",
                                    hint=f"test a VM that is still syncing with: scmt failover PLAN --vm {vm} --test")
        folder = _folder(ctx, vm)
        xml_path = folder / "domain.xml"
        try:
            xml = xml_path.read_text()
        except OSError as exc:
            raise TargetPlatformError(f"{vm}: cannot read {xml_path}: {exc.strerror}") from exc
        machine = machine_from_domain_xml(xml, vm=vm)
        ctx.reporter.event("boot_started", vm=vm, console_log=str(folder / "console.log"))
        out = _boot(ctx, req, machine, folder / "console.log")
        result.outcome = out
        result.warnings.extend(out.warnings)
        ctx.update_data(vm, boot={"at": time.time(), "seconds": out.seconds, "accel": out.accel,
                                  "ready_line": out.ready_line, "data_verified": result.data_verified,
                                  "console_log": out.console_log})
        ctx.reporter.event("boot_done", vm=vm, seconds=out.seconds, data_verified=result.data_verified)
    return result


def _overlay(base: Path, overlay: Path) -> None:
    exe = shutil.which("qemu-img")
    if exe is None:
        raise ConfigError("qemu-img is not installed: apt-get install qemu-utils")
    fmt = "qcow2" if base.suffix == ".qcow2" else "raw"
    proc = subprocess.run([exe, "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(base.absolute()), str(overlay)],
                          capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise TargetPlatformError(f"qemu-img create {overlay}: {proc.stderr.decode(errors='replace').strip()}")


def run_test_failover(req: BootRequest, ctx: MigrationContext) -> BootResult:
    vm = req.vm
    ctx.select([vm])
    eff = ctx.effective(vm)
    result = BootResult("test-failover", ctx.plan.name, vm, expected=req.expect)
    with ctx.locks([vm]):
        status, _ = ctx.status(vm)
        if status.state != "syncing":
            raise InvalidStateError(f"{vm} is {status.state!r}; a test failover needs a VM in sync ('syncing')",
                                    hint="run scmt sync first" if status.state in ("planned", "seeding") else None)
        folder = _folder(ctx, vm)
        if (folder / TEST_RECORD).exists():
            raise InvalidStateError(f"{vm}: a test failover copy exists already ({folder / TEST_DIR})",
                                    hint=f"remove it with: scmt failover PLAN --vm {vm} --test --cleanup")
        disks = storage.load_prepared(Path(ctx.platform.root), eff.target_name)  # type: ignore[attr-defined]
        if not disks:
            raise InvalidStateError(f"{vm}: no synced disks in {folder}", hint="run scmt sync first")
        test_dir = folder / TEST_DIR
        test_dir.mkdir(parents=True, exist_ok=True)
        result.test_dir = str(test_dir)
        storage.write_json_atomic(folder / TEST_RECORD, {"format": 1, "created": time.time(), "dir": str(test_dir),
                                                         "plan": ctx.plan.name})
        overlays = []
        for d in sorted(disks, key=lambda d: d.index):
            ov = test_dir / f"disk{d.index}.qcow2"
            ov.unlink(missing_ok=True)
            _overlay(Path(d.copy_path), ov)
            overlays.append(ov)
        vc = ctx.vcenter()
        try:
            inv = source_vm(vc, vm)
        finally:
            vc.close()
        spec = vm_spec_from_plan(eff, ctx.plan.target, inv, (), plan_name=ctx.plan.name,
                                 compatible_devices=req.direct or eff.direct or None)
        bus: DiskBus = "sata" if (req.direct or eff.direct) else "virtio"
        spec = dataclasses.replace(spec, disks=tuple(TargetDisk(str(p), "qcow2", bus) for p in overlays),
                                   nics=()).validated()
        conv = ctx.platform.convert(spec, direct=req.direct or eff.direct)
        result.conversion = conv.to_dict()
        result.warnings.extend(conv.warnings)
        xml = build_domain_xml(spec, link_up=False)
        storage.write_atomic(test_dir / "domain.xml", xml.encode())
        machine = machine_from_domain_xml(xml, vm=f"{vm}-test")
        ctx.reporter.event("test_failover_boot", vm=vm, test_dir=str(test_dir))
        out = _boot(ctx, req, machine, test_dir / "console.log")
        result.outcome = out
        result.warnings.extend(out.warnings)
        storage.write_json_atomic(folder / TEST_RECORD, {
            "format": 1, "created": time.time(), "dir": str(test_dir), "plan": ctx.plan.name,
            "boot": out.to_dict(), "data_verified": result.data_verified})
    return result


def run_test_cleanup(req: BootRequest, ctx: MigrationContext) -> BootResult:
    vm = req.vm
    ctx.select([vm])
    result = BootResult("test-failover-cleanup", ctx.plan.name, vm)
    with ctx.locks([vm]):
        folder = _folder(ctx, vm)
        test_dir = folder / TEST_DIR
        result.test_dir = str(test_dir)
        if test_dir.exists():
            shutil.rmtree(test_dir)
            result.removed.append(str(test_dir))
        record = folder / TEST_RECORD
        if record.exists():
            record.unlink()
            result.removed.append(str(record))
        ctx.reporter.event("test_failover_cleaned", vm=vm, removed=result.removed)
    return result


def boot_service(req: BootRequest, store: Any, reporter: Any, *, test: bool = False, cleanup: bool = False,
                 **kw: Any) -> BootResult:
    from scmt_cli.services.migration.context import open_context

    ctx = open_context(req.plan, store, reporter, **kw)
    try:
        if cleanup:
            return run_test_cleanup(req, ctx)
        return run_test_failover(req, ctx) if test else run_boot(req, ctx)
    finally:
        ctx.close()


def read_test_record(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}
