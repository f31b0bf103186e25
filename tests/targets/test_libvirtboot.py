"""Booting through libvirt and reading the console log, on libvirt's test:///default driver (no guest: a
thread plays the console).  The real QEMU driver and a real guest: tests/guest/test_libvirt_boot.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.errors import BootError, InvalidStateError
from scmt_cli.events import RecordingReporter
from scmt_cli.targets import open_platform

from .conftest import TWO_DISKS, spec_for

libvirt = pytest.importorskip("libvirt")

from scmt_cli.targets.libvirt import LibvirtPlatform  # noqa: E402
from scmt_cli.targets.libvirtboot import boot_defined, boot_transient  # noqa: E402

READY = r"SCMT-GUEST-READY\s+(\S+)"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LibvirtPlatform]:
    p = open_platform({"type": "libvirt", "uri": "test:///default", "path": str(tmp_path / "pool")},
                      reporter=RecordingReporter())
    assert isinstance(p, LibvirtPlatform)
    yield p
    p.close()


def _console(path: Path, lines: list[str], *, after: float = 0.3, when: threading.Event | None = None) -> None:
    def play() -> None:
        if when is not None:
            when.wait(30)
        time.sleep(after)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            for line in lines:
                f.write(line + "\n")
                f.flush()
                time.sleep(0.05)

    threading.Thread(target=play, daemon=True).start()


def test_a_stopped_domain_is_started_and_stays_running_after_its_ready_line(platform: LibvirtPlatform,
                                                                            vm_name: str) -> None:
    platform.define(spec_for(vm_name, platform.prepare_disks(vm_name, TWO_DISKS)))
    _console(platform.console_log(vm_name), ["Booting", "\x1b[0;32mOK\x1b[0m", "SCMT-GUEST-READY abc files=2"])
    out = boot_defined(platform, vm_name, ready=READY, timeout_s=30, stall_s=10)
    assert (out.booted, out.guest_value, out.platform, out.domain) == (True, "abc", "libvirt", vm_name)
    assert out.ready_line == "SCMT-GUEST-READY abc files=2" and out.seconds is not None
    assert platform.is_active(vm_name) and out.powered_off is False  # the migrated VM keeps running


def test_a_running_domain_is_watched_and_timed_from_its_start(platform: LibvirtPlatform, vm_name: str) -> None:
    platform.define(spec_for(vm_name, platform.prepare_disks(vm_name, TWO_DISKS)))
    platform.start(vm_name)  # as failover does
    platform.console_log(vm_name).write_text("SCMT-GUEST-READY early files=1\n")
    out = boot_defined(platform, vm_name, ready=READY, timeout_s=30, stall_s=10, started_at=time.time() - 20)
    assert out.guest_value == "early" and out.seconds is not None and out.seconds >= 20


def test_accel_tcg_redefines_a_stopped_domain_and_refuses_a_running_one(platform: LibvirtPlatform,
                                                                        vm_name: str) -> None:
    platform.define(spec_for(vm_name, platform.prepare_disks(vm_name, TWO_DISKS)))
    assert platform.domain_info(vm_name) == (False, "kvm")
    _console(platform.console_log(vm_name), ["SCMT-GUEST-READY x"])
    out = boot_defined(platform, vm_name, accel="tcg", ready=READY, timeout_s=30, stall_s=10)
    assert out.accel == "tcg" and platform.domain_info(vm_name) == (True, "qemu")
    with pytest.raises(InvalidStateError, match="needs it shut off") as err:
        boot_defined(platform, vm_name, accel="kvm", ready=READY, timeout_s=30, stall_s=10)
    assert err.value.exit_code == 42


def test_a_silent_kvm_domain_is_redone_as_qemu_with_a_warning(platform: LibvirtPlatform, vm_name: str) -> None:
    platform.define(spec_for(vm_name, platform.prepare_disks(vm_name, TWO_DISKS)))
    redefined = threading.Event()
    real = platform.set_domain_type

    def spy(vm: str, dtype: str) -> None:
        real(vm, dtype)
        redefined.set()

    platform.set_domain_type = spy  # type: ignore[method-assign]
    _console(platform.console_log(vm_name), ["SCMT-GUEST-READY tcg-now"], when=redefined)
    out = boot_defined(platform, vm_name, ready=READY, timeout_s=60, stall_s=10, kvm_stall_s=1)
    assert out.guest_value == "tcg-now" and out.accel == "tcg"
    assert platform.domain_info(vm_name) == (True, "qemu")
    assert any("showed no console progress" in w for w in out.warnings)


def test_a_stalled_boot_names_the_console_line_and_leaves_the_vm_running(platform: LibvirtPlatform,
                                                                         vm_name: str) -> None:
    platform.define(spec_for(vm_name, platform.prepare_disks(vm_name, TWO_DISKS)))
    platform.set_domain_type(vm_name, "qemu")
    _console(platform.console_log(vm_name), ["Gave up waiting for root file system device.", "(initramfs)"])
    with pytest.raises(BootError) as err:
        boot_defined(platform, vm_name, ready=READY, timeout_s=30, stall_s=1.5)
    assert err.value.exit_code == 53
    assert "no console output for 2 s" in err.value.message
    assert "the guest said: Gave up waiting for root file system device." in err.value.message
    assert f"the domain {vm_name} still runs" in (err.value.hint or "")
    assert platform.is_active(vm_name)


def test_a_transient_test_domain_that_does_not_boot_is_stopped(platform: LibvirtPlatform, vm_name: str,
                                                               tmp_path: Path) -> None:
    spec = spec_for(vm_name + "-scmt-test", platform.prepare_disks(vm_name, TWO_DISKS), nics=())
    log = tmp_path / "test-failover" / "console.log"
    _console(log, [f"line {i}" for i in range(60)])
    with pytest.raises(BootError, match="no ready line within 2 s"):
        boot_transient(platform, spec, log, accel="tcg", ready=READY, timeout_s=2, stall_s=10)
    assert platform.state(spec.name).defined is False  # powered off, so gone
    _console(log, ["SCMT-GUEST-READY ok"])
    out = boot_transient(platform, spec, log, accel="tcg", ready=READY, timeout_s=30, stall_s=10)
    assert out.booted and out.domain == spec.name and platform.is_active(spec.name)


def test_a_running_kvm_domain_that_is_silent_is_never_powered_off(platform: LibvirtPlatform, vm_name: str) -> None:
    """The migrated VM that failover started may print nothing on its serial console (no console=ttyS0):
    scmt boot watches it and gives up with the domain still running and still 'kvm', never redone as TCG."""
    platform.define(spec_for(vm_name, platform.prepare_disks(vm_name, TWO_DISKS)))
    platform.start(vm_name)
    assert platform.domain_info(vm_name) == (True, "kvm")
    with pytest.raises(BootError) as err:
        boot_defined(platform, vm_name, ready=READY, timeout_s=30, stall_s=1.5, kvm_stall_s=0.5)
    assert err.value.exit_code == 53 and f"the domain {vm_name} still runs" in (err.value.hint or "")
    assert platform.domain_info(vm_name) == (True, "kvm")
