"""The QEMU boot runner and the boot commands, without a real guest: a stand-in qemu-system-x86_64 on PATH
plays the console, so the ready line, a stall and an early exit are each tested in seconds."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from scmt_cli.cli.main import main
from scmt_cli.errors import BootError, ConfigError
from scmt_cli.targets.qemu import QemuDisk, QemuMachine, boot, machine_from_domain_xml, qemu_argv

FAKE_QEMU = """#!/bin/sh
# stand-in for qemu-system-x86_64: writes $SCRIPT_LINES to the serial file, then $SCRIPT_END
echo $$ > "$FAKE_PID"
for a in "$@"; do case "$a" in file:*) log="${a#file:}";; esac; done
printf '%b' "$SCRIPT_LINES" >> "$log"
case "$SCRIPT_END" in
  exit) exit 0 ;;
  hang) exec sleep 600 ;;
esac
"""


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "qemu-system-x86_64"
    exe.write_text(FAKE_QEMU)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PID", str(tmp_path / "qemu.pid"))
    return tmp_path / "qemu.pid"


def _machine(tmp_path: Path) -> QemuMachine:
    return QemuMachine("vm1", 512, 1, "q35", "bios", (QemuDisk(str(tmp_path / "d.raw"), "raw", "virtio"),))


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except ProcessLookupError:
        return False
    return True


def test_domain_xml_becomes_the_qemu_command_line(tmp_path: Path) -> None:
    xml = """<domain type='kvm'><name>web</name><memory unit='MiB'>768</memory><vcpu>2</vcpu>
      <os><type arch='x86_64' machine='q35'>hvm</type></os><devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/d/a.qcow2'/>
        <target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/d/b.raw'/>
        <target dev='sda' bus='sata'/></disk>
      <interface type='network'><source network='default'/></interface></devices></domain>"""
    m = machine_from_domain_xml(xml, vm="web")
    assert (m.memory_mib, m.cpus, m.machine, m.firmware) == (768, 2, "q35", "bios")
    argv = qemu_argv(m, exe="qemu", accel="tcg", console_log=tmp_path / "c.log")
    line = " ".join(argv)
    assert "-machine q35,accel=tcg" in line and "-m 768" in line and "-smp 2" in line
    assert "-no-reboot" in argv and "-nic none" in line and f"-serial file:{tmp_path / 'c.log'}" in line
    assert "file=/d/a.qcow2,format=qcow2" in line and "virtio-blk-pci,drive=disk0,bootindex=1" in line
    assert "ide-hd,drive=disk1,bus=ide.0" in line
    assert "-display none" in line


def test_ready_line_is_found_and_its_value_returned(tmp_path: Path, fake_qemu: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPT_LINES", "Linux version 6.1\\n\\033[0;32m OK \\033[0m\\nSCMT-GUEST-READY abc123 files=2\\n")
    monkeypatch.setenv("SCRIPT_END", "exit")
    out = boot(_machine(tmp_path), tmp_path / "console.log", accel="tcg", stall_s=20, timeout_s=60)
    assert out.booted and out.guest_value == "abc123" and out.accel == "tcg"
    assert out.ready_line == "SCMT-GUEST-READY abc123 files=2" and out.seconds is not None
    assert out.powered_off


def test_a_silent_console_is_stopped_and_reported_never_waited_on(tmp_path: Path, fake_qemu: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPT_LINES", "Probing EDD (edd=off to disable)... ok\\n")
    monkeypatch.setenv("SCRIPT_END", "hang")
    with pytest.raises(BootError, match="no console output for 2 s.*Probing EDD") as err:
        boot(_machine(tmp_path), tmp_path / "console.log", accel="tcg", stall_s=2, timeout_s=60)
    assert err.value.exit_code == 53
    assert not _alive(fake_qemu)  # the stalled QEMU was stopped and reaped


def test_qemu_exiting_before_the_ready_line_is_a_boot_failure(tmp_path: Path, fake_qemu: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPT_LINES", "Gave up waiting for root file system device.\\nreboot: Restarting\\n")
    monkeypatch.setenv("SCRIPT_END", "exit")
    with pytest.raises(BootError, match="QEMU exited before the guest's ready line.*Gave up waiting"):
        boot(_machine(tmp_path), tmp_path / "console.log", accel="tcg", stall_s=20, timeout_s=60)


def test_auto_falls_back_to_tcg_when_kvm_shows_no_progress(tmp_path: Path, fake_qemu: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from scmt_cli.targets import qemu

    monkeypatch.setattr(qemu, "kvm_usable", lambda: (True, ""))
    real = qemu._attempt
    accels: list[str] = []

    def attempt(m, accel, log, **kw):  # type: ignore[no-untyped-def]
        accels.append(accel)
        os.environ["SCRIPT_END"] = "hang" if accel == "kvm" else "exit"
        os.environ["SCRIPT_LINES"] = "Probing EDD\\n" if accel == "kvm" else "SCMT-GUEST-READY v\\n"
        return real(m, accel, log, **kw)

    monkeypatch.setattr(qemu, "_attempt", attempt)
    out = boot(_machine(tmp_path), tmp_path / "console.log", accel="auto", kvm_stall_s=2, stall_s=20, timeout_s=60)
    assert accels == ["kvm", "tcg"] and out.booted and out.accel == "tcg"
    assert any("booted again with TCG" in w for w in out.warnings)


def test_missing_qemu_is_exit_5_naming_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-system-x86_64 here
    with pytest.raises(ConfigError, match="apt-get install qemu-system-x86"):
        boot(_machine(tmp_path), tmp_path / "console.log")
    assert main(["--json", "demo", "--boot"]) == 5
    doc = json.loads(capsys.readouterr().out)
    assert doc["code"] == 5 and "qemu-system-x86" in doc["message"] and "\n" not in doc["message"]
