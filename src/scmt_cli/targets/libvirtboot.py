"""Boot a VM through libvirt and read the guest's ready line from its console log.

Used by ``scmt boot`` and test failovers on a ``type: libvirt`` target (the
``dir`` target boots with QEMU directly, :mod:`scmt_cli.targets.qemu`).  The
domain's serial console is logged to a file that scmt reads
(:meth:`~scmt_cli.targets.libvirt.LibvirtPlatform.console_log`, rewritten at
each start); :func:`scmt_cli.targets.console.follow` watches it.

:func:`boot_defined` -- the migrated VM itself:

* a shut-off domain is started; one that runs already (a failover started it)
  is watched from that start (``started_at``, wall-clock seconds, counts the
  boot time; without it the time counts from when scmt began to watch);
* ``accel`` ``kvm``/``tcg`` redefine a shut-off domain with type ``kvm`` /
  ``qemu`` first (a running one of the other type is refused, exit 42);
  ``auto`` boots the domain as defined, and a ``kvm`` domain that scmt
  started and whose console shows nothing for ``kvm_stall_s`` is powered
  off, redefined as ``qemu`` and started again, with a warning (KVM hangs
  where nested virtualization is off); a domain that runs already is never
  restarted;
* after the ready line the domain keeps running (it is the migrated VM); a
  failed boot leaves it as it is and says so.

:func:`boot_transient` -- a test copy: a transient domain (no NIC) that keeps
running after its ready line until the test copy is cleaned up, and is
powered off (so gone) when it does not boot.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scmt_cli.errors import ConfigError, InvalidStateError
from scmt_cli.targets.base import TargetVmSpec
from scmt_cli.targets.console import BootOutcome, boot_error, follow

_ACCEL_TYPE = {"kvm": "kvm", "tcg": "qemu"}


def _accel_of(dtype: str) -> str:
    return "kvm" if dtype == "kvm" else "tcg"


def _check_accel(accel: str) -> None:
    if accel not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"--accel {accel!r}: expected auto, kvm or tcg")


def _stall_warning(vm: str, kvm_stall_s: float) -> str:
    return (f"{vm}: the KVM domain showed no console progress for {kvm_stall_s:.0f} s; powered it off and "
            "started it again as a 'qemu' (TCG) domain (set target.domain_type: qemu, or --accel tcg, to skip KVM)")


def boot_defined(platform: Any, vm: str, *, accel: str = "auto", ready: str, timeout_s: float, stall_s: float,
                 kvm_stall_s: float = 60.0, started_at: float | None = None, check: Callable[[], None] = lambda: None,
                 progress: Callable[[str], None] = lambda _m: None) -> BootOutcome:
    """Boot (or watch) the defined domain ``vm`` until its ready line; see the module docstring."""
    _check_accel(accel)
    pattern = re.compile(ready)
    running, dtype = platform.domain_info(vm)
    if accel != "auto" and dtype != _ACCEL_TYPE[accel]:
        if running:
            raise InvalidStateError(f"{vm} runs as a {dtype!r} domain; --accel {accel} needs it shut off first",
                                    hint="scmt boot never restarts a running VM: shut it down, or use --accel auto")
        platform.set_domain_type(vm, _ACCEL_TYPE[accel])
        dtype = _ACCEL_TYPE[accel]
    log = platform.console_log(vm)
    if running:
        started = time.monotonic() - max(0.0, time.time() - started_at) if started_at else time.monotonic()
        progress(f"{vm}: the domain runs already; reading its console log {log}")
    else:
        progress(f"{vm}: starting the {dtype!r} domain through {platform.describe()}; console: {log}")
        platform.start(vm)
        started = time.monotonic()
    warnings: list[str] = []
    # Only a domain scmt started itself may be powered off and redone as TCG: one that runs already is the
    # migrated VM (failover started it), perhaps silent on its serial console; it is watched, never restarted.
    kvm_watch = dtype == "kvm" and accel == "auto" and not running

    def watch(dtype: str, started: float, stall: float) -> tuple[str, BootOutcome]:
        out = BootOutcome(vm, False, _accel_of(dtype), None, None, None, str(log), platform="libvirt", domain=vm)
        how = follow(log, out, ready=pattern, alive=lambda: platform.is_active(vm), timeout_s=timeout_s,
                     stall_s=stall, started=started, check=check, progress=progress)
        return how, out

    how, out = watch(dtype, started, kvm_stall_s if kvm_watch else stall_s)
    if how == "stalled" and kvm_watch:
        warnings.append(_stall_warning(vm, kvm_stall_s))
        progress(warnings[-1])
        platform.power_off(vm)
        platform.set_domain_type(vm, "qemu")
        platform.start(vm)
        how, out = watch("qemu", time.monotonic(), stall_s)
    out.warnings = warnings
    if how == "ready":
        out.powered_off = not platform.is_active(vm)
        return out
    still = platform.is_active(vm)
    raise boot_error(out, how, stall_s=stall_s, timeout_s=timeout_s,
                     exited="the domain stopped before the guest's ready line",
                     hint=(f"the domain {vm} still runs (virsh console {vm}; stop it with virsh destroy)" if still
                           else ""))


def boot_transient(platform: Any, spec: TargetVmSpec, console_log: Path, *, accel: str = "auto", ready: str,
                   timeout_s: float, stall_s: float, kvm_stall_s: float = 60.0,
                   check: Callable[[], None] = lambda: None,
                   progress: Callable[[str], None] = lambda _m: None) -> BootOutcome:
    """Start ``spec`` as a transient domain and wait for its ready line; see the module docstring."""
    _check_accel(accel)
    pattern = re.compile(ready)
    dtype = platform.domain_type if accel == "auto" else _ACCEL_TYPE[accel]
    name = spec.name
    warnings: list[str] = []

    def attempt(dtype: str, stall: float) -> tuple[str, BootOutcome]:
        progress(f"{name}: starting a transient {dtype!r} domain through {platform.describe()}; "
                 f"console: {console_log}")
        platform.run_transient(spec, console_log, domain_type=dtype)
        out = BootOutcome(name, False, _accel_of(dtype), None, None, None, str(console_log), platform="libvirt",
                          domain=name)
        try:
            how = follow(console_log, out, ready=pattern, alive=lambda: platform.is_active(name),
                         timeout_s=timeout_s, stall_s=stall, started=time.monotonic(), check=check,
                         progress=progress)
        except BaseException:
            platform.power_off(name)
            raise
        if how != "ready":
            platform.power_off(name)
        return how, out

    kvm_watch = dtype == "kvm" and accel == "auto"
    how, out = attempt(dtype, kvm_stall_s if kvm_watch else stall_s)
    if how == "stalled" and kvm_watch:
        warnings.append(_stall_warning(name, kvm_stall_s))
        progress(warnings[-1])
        how, out = attempt("qemu", stall_s)
    out.warnings = warnings
    if how == "ready":
        out.powered_off = not platform.is_active(name)
        return out
    raise boot_error(out, how, stall_s=stall_s, timeout_s=timeout_s,
                     exited="the domain stopped before the guest's ready line", hint="the test domain was stopped")
