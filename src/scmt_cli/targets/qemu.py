"""Boot a target VM with ``qemu-system-x86_64`` and watch its serial console.

Used by ``scmt boot`` (the ``dir`` target's VM booted for real) and by test
failovers (the same, on qcow2 overlays).  Contract:

* :func:`machine_from_domain_xml` reads what QEMU needs from the generated
  ``domain.xml``: memory, CPUs, machine type, firmware, disks (file, format, bus).
* :func:`boot` starts QEMU with no display, no NIC (a verification boot is
  isolated), ``-no-reboot`` and the first serial port written to a log file,
  then follows that log: the boot succeeds at the first line matching the
  *ready* pattern; it fails when QEMU exits first, when the console shows no
  progress for ``stall_s`` seconds, or after ``timeout_s``.  It never waits
  without bound, and QEMU (its whole process group) is always stopped and
  reaped before it returns or raises.
* Acceleration: ``auto`` uses KVM only when ``/dev/kvm`` opens *and* the CPU
  advertises ``vmx``/``svm``; a KVM boot with no console progress for
  ``kvm_stall_s`` is stopped and redone under TCG, with a warning.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scmt_cli import procs
from scmt_cli.errors import ConfigError, TargetPlatformError
from scmt_cli.targets.console import DEFAULT_READY, BootOutcome, boot_error, follow, lines

QEMU = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
OVMF_PATHS = ("/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd", "/usr/share/qemu/OVMF.fd")


@dataclass(frozen=True)
class QemuDisk:
    path: str
    format: str  # raw | qcow2
    bus: str  # virtio | scsi | sata | ide


@dataclass(frozen=True)
class QemuMachine:
    name: str
    memory_mib: int
    cpus: int
    machine: str  # q35 | pc
    firmware: str  # bios | efi
    disks: tuple[QemuDisk, ...]

    def with_disks(self, disks: tuple[QemuDisk, ...]) -> QemuMachine:
        return QemuMachine(self.name, self.memory_mib, self.cpus, self.machine, self.firmware, disks)


def machine_from_domain_xml(xml: str, *, vm: str) -> QemuMachine:
    try:
        root = ET.fromstring(xml)  # noqa: S314 - the domain XML scmt wrote
    except ET.ParseError as exc:
        raise TargetPlatformError(f"{vm}: domain XML is not well-formed: {exc}") from exc
    mem = root.find("memory")
    unit = (mem.get("unit") if mem is not None else None) or "KiB"
    scale = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}.get(unit, 1 / 1024)
    memory = int(float(mem.text or 0) * scale) if mem is not None else 1024
    vcpu = root.find("vcpu")
    ostype = root.find("os/type")
    os_el = root.find("os")
    firmware = "efi" if os_el is not None and (os_el.get("firmware") == "efi" or os_el.find("loader") is not None) \
        else "bios"
    disks = []
    for d in root.iterfind("devices/disk"):
        if d.get("device", "disk") != "disk":
            continue
        src, tgt, drv = d.find("source"), d.find("target"), d.find("driver")
        path = src.get("file") if src is not None else None
        if not path:
            raise TargetPlatformError(f"{vm}: domain XML: a disk without <source file=...>")
        disks.append(QemuDisk(path, (drv.get("type") if drv is not None else None) or "raw",
                              (tgt.get("bus") if tgt is not None else None) or "virtio"))
    if not disks:
        raise TargetPlatformError(f"{vm}: domain XML has no disk to boot from")
    machine = (ostype.get("machine") if ostype is not None else None) or "q35"
    return QemuMachine(vm, max(128, memory), int((vcpu.text if vcpu is not None else None) or 1),
                       "pc" if machine.startswith("pc") and "q35" not in machine else "q35", firmware, tuple(disks))


def qemu_path() -> str:
    exe = shutil.which(QEMU)
    if exe is None:
        raise ConfigError(f"{QEMU} is not installed: apt-get install {QEMU_PACKAGE}")
    return exe


def kvm_usable() -> tuple[bool, str]:
    """Whether KVM can be trusted here, and why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
    except OSError as exc:
        return False, f"/dev/kvm: {exc.strerror}"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if not re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M):
        return False, "/dev/kvm opens but the CPU shows no vmx/svm (nested virtualization is off; KVM guests hang)"
    return True, ""


def qemu_argv(m: QemuMachine, *, exe: str, accel: str, console_log: Path) -> list[str]:
    argv = [exe, "-name", m.name, "-machine", f"{m.machine},accel={accel}", "-m", str(m.memory_mib),
            "-smp", str(m.cpus), "-nodefaults", "-display", "none", "-vga", "none", "-no-reboot",
            "-monitor", "none", "-serial", f"file:{console_log}", "-nic", "none"]
    if accel == "kvm":
        argv += ["-cpu", "host"]
    if m.firmware == "efi":
        ovmf = next((p for p in OVMF_PATHS if Path(p).exists()), None)
        if ovmf is None:
            raise ConfigError("the VM boots with UEFI but OVMF is not installed: apt-get install ovmf")
        argv += ["-bios", ovmf]
    if any(d.bus == "scsi" for d in m.disks):
        argv += ["-device", "virtio-scsi-pci,id=scsi0"]
    ide_slot = 0
    for i, d in enumerate(m.disks):
        argv += ["-drive", f"file={d.path},format={d.format},if=none,id=disk{i},cache=unsafe,discard=unmap"]
        boot = ",bootindex=1" if i == 0 else ""
        if d.bus == "virtio":
            argv += ["-device", f"virtio-blk-pci,drive=disk{i}{boot}"]
        elif d.bus == "scsi":
            argv += ["-device", f"scsi-hd,drive=disk{i},bus=scsi0.0{boot}"]
        elif d.bus in ("sata", "ide"):
            bus = f"ide.{ide_slot}" if m.machine == "q35" else f"ide.{ide_slot // 2},unit={ide_slot % 2}"
            ide_slot += 1
            argv += ["-device", f"ide-hd,drive=disk{i},bus={bus}{boot}"]
        else:
            raise TargetPlatformError(f"{m.name}: disk {d.path}: bus {d.bus!r} cannot be booted by scmt")
    return argv


def _attempt(m: QemuMachine, accel: str, console_log: Path, *, ready: re.Pattern[str], timeout_s: float,
             stall_s: float, after_ready_s: float, check: Callable[[], None],
             progress: Callable[[str], None]) -> tuple[str, BootOutcome]:
    """One QEMU run; returns (how it ended, outcome): ``ready``, ``exited``, ``stalled``, ``timeout``."""
    exe = qemu_path()
    console_log.parent.mkdir(parents=True, exist_ok=True)
    console_log.write_bytes(b"")
    argv = qemu_argv(m, exe=exe, accel=accel, console_log=console_log)
    console_log.with_name(console_log.name + ".qemu").write_text("$ " + " ".join(argv) + "\n")
    # supervised: its process group is stopped and reaped however scmt ends (scmt_cli.procs)
    proc = procs.spawn(["nice", "-n", "10", *argv], name=QEMU, keep_lines=20)
    out = BootOutcome(m.name, False, accel, None, None, None, str(console_log))
    try:
        how = follow(console_log, out, ready=ready, alive=lambda: proc.poll() is None, timeout_s=timeout_s,
                     stall_s=stall_s, started=time.monotonic(), check=check, progress=progress)
        if how == "ready":
            out.powered_off = proc.wait(after_ready_s) is not None
    finally:
        if proc.poll() is None:
            proc.stop(5.0)
        with open(console_log.with_name(console_log.name + ".qemu"), "a") as f:
            f.write("".join(line + "\n" for line in proc.lines))
    return how, out


def boot(m: QemuMachine, console_log: Path, *, accel: str = "auto", ready: str = DEFAULT_READY,
         timeout_s: float = 900.0, stall_s: float = 180.0, kvm_stall_s: float = 60.0, after_ready_s: float = 60.0,
         check: Callable[[], None] = lambda: None, progress: Callable[[str], None] = lambda _m: None) -> BootOutcome:
    """Boot ``m`` until its ready line; raise :class:`BootError` (exit 53) when it does not come."""
    if accel not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"--accel {accel!r}: expected auto, kvm or tcg")
    pattern = re.compile(ready)
    warnings: list[str] = []
    chosen = accel
    if accel == "auto":
        ok, why = kvm_usable()
        chosen = "kvm" if ok else "tcg"
        if not ok:
            progress(f"{m.name}: booting with TCG (software emulation, slower): {why}")
    kw = dict(ready=pattern, timeout_s=timeout_s, after_ready_s=after_ready_s, check=check, progress=progress)
    progress(f"{m.name}: starting {QEMU} ({chosen}); console: {console_log}")
    how, out = _attempt(m, chosen, console_log, stall_s=kvm_stall_s if chosen == "kvm" and accel == "auto"
                        else stall_s, **kw)  # type: ignore[arg-type]
    if how == "stalled" and chosen == "kvm" and accel == "auto":
        warnings.append(f"{m.name}: KVM boot showed no console progress for {kvm_stall_s:.0f} s; "
                        "booted again with TCG (use --accel tcg to skip KVM)")
        progress(warnings[-1])
        how, out = _attempt(m, "tcg", console_log, stall_s=stall_s, **kw)  # type: ignore[arg-type]
    out.warnings = warnings
    if how == "ready":
        return out
    qlog = console_log.with_name(console_log.name + ".qemu")
    qerr = " | ".join(lines(qlog)[1:][-2:]) if how == "exited" else ""
    raise boot_error(out, how, stall_s=stall_s, timeout_s=timeout_s,
                     exited="QEMU exited before the guest's ready line", extra=f"qemu: {qerr}" if qerr else "")
