"""``scmt boot``: start a migrated VM for real and read its console (test failovers: :mod:`.testfailover`).

For a VM that is ``cut-over`` or ``committed``:

* ``type: dir``: QEMU runs the generated ``domain.xml`` (disk buses, memory,
  CPUs; no NIC) until the guest prints its ready line
  (:mod:`scmt_cli.targets.qemu`), then QEMU is stopped;
* ``type: libvirt``: the domain is started through libvirt when it is off, or
  watched when it runs already (failover started it; the boot time then
  counts from that start), and its serial console log is read
  (:mod:`scmt_cli.targets.libvirtboot`); it keeps running.

The result says whether it ``booted``, the seconds to the ready line, the line
itself and, when ``--expect`` gives the value the guest should report (e.g. the
data checksum taken at quiesce), ``data_verified``.  The boot is recorded in the
state store (``status`` shows it next to the downtime).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.errors import InvalidStateError, NotAvailableError, TargetPlatformError, VerificationError
from scmt_cli.services.migration.context import MigrationContext
from scmt_cli.targets.console import DEFAULT_READY, BootOutcome
from scmt_cli.targets.qemu import boot as qemu_boot
from scmt_cli.targets.qemu import machine_from_domain_xml


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
    clone: dict[str, Any] | None = None  # test failover: how the synced disks were cloned
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
        if self.clone is not None:
            d["clone"] = self.clone
        if self.conversion is not None:
            d["conversion"] = self.conversion
        if self.removed:
            d["removed"] = self.removed
        d["warnings"] = self.warnings
        return d


def vm_folder(ctx: MigrationContext, vm: str) -> Path:
    """The VM's folder on the target (its disks; ``console.log``; the test failover's files)."""
    platform = ctx.platform
    if not hasattr(platform, "vm_dir"):
        raise NotAvailableError(f"{vm}: the {platform.kind} target has no VM folder scmt can boot from")
    return Path(platform.vm_dir(ctx.effective(vm).target_name))


def progress_of(ctx: MigrationContext, vm: str) -> Any:
    return lambda m: ctx.reporter.log("info", m, vm=vm)


def run_boot(req: BootRequest, ctx: MigrationContext) -> BootResult:
    vm = req.vm
    ctx.select([vm])
    result = BootResult("boot", ctx.plan.name, vm, expected=req.expect)
    with ctx.locks([vm]):
        status, data = ctx.status(vm)
        if status.state not in ("cut-over", "committed"):
            raise InvalidStateError(f"{vm} is {status.state!r}; scmt boot needs a VM that failed over "
                                    "('cut-over' or 'committed')",
                                    hint=f"test a VM that is still syncing with: scmt failover PLAN --vm {vm} --test")
        folder = vm_folder(ctx, vm)
        target = ctx.effective(vm).target_name
        if ctx.platform.kind == "libvirt":
            from scmt_cli.targets.libvirtboot import boot_defined

            ctx.reporter.event("boot_started", vm=vm, console_log=str(folder / "console.log"), platform="libvirt")
            out = boot_defined(ctx.platform, target, accel=req.accel, ready=req.ready, timeout_s=req.timeout_s,
                               stall_s=req.stall_s, started_at=data.get("started_at") or None,
                               check=ctx.cancel.check, progress=progress_of(ctx, vm))
        else:
            xml_path = folder / "domain.xml"
            try:
                xml = xml_path.read_text()
            except OSError as exc:
                raise TargetPlatformError(f"{vm}: cannot read {xml_path}: {exc.strerror}") from exc
            machine = machine_from_domain_xml(xml, vm=vm)
            ctx.reporter.event("boot_started", vm=vm, console_log=str(folder / "console.log"), platform="qemu")
            out = qemu_boot(machine, folder / "console.log", accel=req.accel, ready=req.ready,
                            timeout_s=req.timeout_s, stall_s=req.stall_s, check=ctx.cancel.check,
                            progress=progress_of(ctx, vm))
        result.outcome = out
        result.warnings.extend(out.warnings)
        ctx.update_data(vm, boot={"at": time.time(), "seconds": out.seconds, "accel": out.accel,
                                  "ready_line": out.ready_line, "data_verified": result.data_verified,
                                  "console_log": out.console_log, "platform": out.platform})
        ctx.reporter.event("boot_done", vm=vm, seconds=out.seconds, data_verified=result.data_verified)
    return result


def boot_service(req: BootRequest, store: Any, reporter: Any, *, test: bool = False, cleanup: bool = False,
                 **kw: Any) -> BootResult:
    from scmt_cli.services.migration.context import open_context
    from scmt_cli.services.migration.testfailover import run_test_cleanup, run_test_failover

    ctx = open_context(req.plan, store, reporter, **kw)
    try:
        if cleanup:
            return run_test_cleanup(req, ctx)
        return run_test_failover(req, ctx) if test else run_boot(req, ctx)
    finally:
        ctx.close()
