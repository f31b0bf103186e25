"""Guest conversion: ``virt-v2v-in-place`` on the final disks, supervised, on overlays, under disk locks.

One conversion (:func:`convert_guest`):

1. skipped when asked (``direct``), when the converter is not installed (a
   warning: the guest keeps its VMware drivers), or when no disk holds an
   operating system (:func:`looks_like_guest`: no partition table, boot
   sector or known file system in its first 128 KiB; the lab's disks of
   random bytes are such disks) -- each with its reason in the result;
2. every final disk is locked (:mod:`.disklock`; the converter inherits the
   locks, so a second converter on the same disks is refused even if this
   scmt dies) and gets a qcow2 overlay (``.v2v-diskN.qcow2``, backed by the
   disk) when ``qemu-img`` is there: the converter writes the overlays only,
   so a failed, stalled or killed conversion leaves the synced disks exactly
   as they were, ready for a retry or a rollback;
3. the converter runs under :func:`scmt_cli.procs.run` with an overall
   ``timeout``, a no-output ``stall_timeout``, its output written line by line
   to the run's log file, each of its progress lines reported (log ``info``),
   an elapsed-time heartbeat every ``heartbeat_every`` s (log ``info`` and
   event ``guest_conversion_progress``), and its own ``LIBGUESTFS_CACHEDIR``;
4. on success the overlays are committed into the disks (``qemu-img
   commit``; a ``v2v-commit.json`` marker makes an interrupted commit finish
   on the next run instead of converting twice) and removed; on failure they
   are removed and :class:`~scmt_cli.errors.ConversionError` (exit 52) says
   why, with the converter's last lines.

Hardware acceleration (``accel``): libguestfs picks KVM whenever ``/dev/kvm``
opens, and hangs where KVM is present but does not work (a VM without nested
virtualisation).  ``tcg`` forces software emulation
(``LIBGUESTFS_BACKEND=direct``, ``LIBGUESTFS_BACKEND_SETTINGS=force_tcg``);
``kvm`` leaves libguestfs alone; ``auto`` (default) uses TCG when the CPU
flags in ``/proc/cpuinfo`` show neither ``vmx`` nor ``svm``.  The
``SCMT_V2V_ACCEL`` environment variable overrides the plan.  Variables the
user already set (``LIBGUESTFS_*``) are never overwritten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from scmt_cli import procs
from scmt_cli.errors import ConversionError, UsageError
from scmt_cli.events import Reporter
from scmt_cli.targets.base import ConversionResult, TargetDisk, TargetVmSpec
from scmt_cli.targets.disklock import disk_locks
from scmt_cli.targets.storage import static_ip_options, write_json_atomic

ACCELS = ("auto", "kvm", "tcg")
COMMIT_MARKER = "v2v-commit.json"
_STEP = re.compile(r"^\[\s*[\d.]+\]\s+(?P<step>.+)$")
_CONVERTING = re.compile(r"Converting (?P<os>.+) to run on KVM")
_WARNING = re.compile(r"warning:\s*(?P<w>.+)$", re.IGNORECASE)
_CHANGE = re.compile(r"(initrd|initramfs|first.?boot|qemu.guest.agent|uninstall|removing|virtio|grub|fstab)",
                     re.IGNORECASE)


@dataclass(frozen=True)
class ConvertSettings:
    """The plan's converter settings (``target.v2v_*``)."""

    command: str = "virt-v2v-in-place"
    timeout: float = 3600.0
    stall_timeout: float = 600.0
    accel: str = "auto"


@dataclass(frozen=True)
class ConvertJob:
    """What one run adds: its log file, its libguestfs cache, a cancel check, flag overrides."""

    log_path: Path | None = None
    cache_dir: Path | None = None
    cancel: Callable[[], None] | None = None
    timeout: float | None = None
    stall_timeout: float | None = None
    heartbeat_every: float = 30.0


def effective_accel(accel: str) -> str:
    """``kvm`` or ``tcg`` for ``accel`` (``SCMT_V2V_ACCEL`` wins); see the module docstring."""
    value = os.environ.get("SCMT_V2V_ACCEL", "").strip().lower() or accel
    if value not in ACCELS:
        raise UsageError(f"SCMT_V2V_ACCEL={value!r}: expected one of {', '.join(ACCELS)}")
    if value != "auto":
        return value
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "kvm"
    return "kvm" if re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.MULTILINE) else "tcg"


def converter_env(accel: str, cache_dir: Path | None) -> dict[str, str]:
    """The converter's environment: scmt's own, plus the libguestfs settings for ``accel``."""
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    if effective_accel(accel) == "tcg":
        env.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    if cache_dir is not None:
        env["LIBGUESTFS_CACHEDIR"] = str(cache_dir)
    return env


# -- is there an operating system on these disks? ------------------------------------------------------
def _head(disk: TargetDisk, length: int = 128 * 1024) -> bytes | None:
    """The first ``length`` bytes the guest sees on ``disk`` (``None`` when unreadable)."""
    if disk.format == "raw":
        try:
            with open(disk.path, "rb") as fh:
                return fh.read(length)
        except OSError:
            return None
    exe = shutil.which("qemu-img")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory(prefix="scmt-head-") as tmp:
        out = Path(tmp) / "head"
        res = procs.run([exe, "dd", "-f", disk.format, "-O", "raw", "bs=65536", f"count={length // 65536}",
                         f"if={disk.path}", f"of={out}"], name="qemu-img", timeout=120)
        if not res.ok or not out.exists():
            return None
        return out.read_bytes()


def boot_signature(head: bytes) -> str | None:
    """What marks ``head`` (a disk's first bytes) as holding a system, or ``None``."""
    def at(off: int, magic: bytes) -> bool:
        return head[off : off + len(magic)] == magic

    if at(512, b"EFI PART") or at(4096, b"EFI PART"):
        return "GPT partition table"
    if len(head) >= 512 and at(510, b"\x55\xaa"):
        entries = [head[446 + 16 * i : 462 + 16 * i] for i in range(4)]
        if all(e[0] in (0x00, 0x80) for e in entries) and any(e[4] for e in entries):
            return "MBR partition table"
        if at(3, b"NTFS    ") or at(54, b"FAT") or at(82, b"FAT32"):
            return "boot sector"
    if at(1080, b"\x53\xef") and int.from_bytes(head[1048:1052], "little") <= 6:
        return "ext2/3/4 file system"
    for off, magic, what in ((0, b"XFSB", "XFS file system"), (512, b"LABELONE", "LVM physical volume"),
                             (0, b"LUKS\xba\xbe", "LUKS volume"), (0x10040, b"_BHRfS_M", "btrfs file system"),
                             (0, b"\x7fELF", "kernel image")):
        if at(off, magic):
            return what
    return None


def looks_like_guest(disks: Sequence[TargetDisk]) -> tuple[bool, str]:
    """(True, why) when a disk may hold an operating system; (False, why not) when none can.

    An unreadable disk counts as a guest: the converter then decides.
    """
    for d in disks:
        head = _head(d)
        if head is None:
            return True, f"{d.path} could not be inspected"
        sig = boot_signature(head)
        if sig is not None:
            return True, f"{Path(d.path).name}: {sig}"
    return False, ("no disk holds a partition table, boot sector or known file system, so there is no "
                   "operating system to convert")


# -- the outcome ------------------------------------------------------------------------------------------
def parse_outcome(lines: Sequence[str]) -> dict[str, object]:
    """What the converter's output says it did: guest, virtio drivers, steps, changes, warnings."""
    guest: str | None = None
    virtio: bool | None = None
    steps: list[str] = []
    changes: list[str] = []
    warnings: list[str] = []
    for line in lines:
        text = line.strip()
        if not text:
            continue
        m = _STEP.match(text)
        if m:
            steps.append(m.group("step"))
        c = _CONVERTING.search(text)
        if c:
            guest = c.group("os")
        if "This guest has virtio drivers installed" in text:
            virtio = True
            changes.append("virtio drivers available in the guest (block, network)")
            continue
        if "does not have virtio drivers installed" in text:
            virtio = False
            continue
        w = _WARNING.search(text)
        if w:
            warnings.append(w.group("w"))
        elif not m and _CHANGE.search(text):
            change = re.sub(r"^[\w-]+:\s*", "", text)  # without the converter's name
            if change not in changes:
                changes.append(change)
    return {"guest": guest, "virtio_drivers": virtio, "steps": steps, "changes": changes, "warnings": warnings}


# -- running it ---------------------------------------------------------------------------------------------
def _overlay_paths(folder: Path, spec: TargetVmSpec) -> list[Path]:
    return [folder / f".v2v-disk{i}.qcow2" for i in range(len(spec.disks))]


def _commit(folder: Path, vm: str, reporter: Reporter) -> bool:
    """Finish committing the overlays listed in the marker; False when there is no marker."""
    marker = folder / COMMIT_MARKER
    try:
        overlays = [Path(p) for p in json.loads(marker.read_text()).get("overlays", [])]
    except (OSError, ValueError):
        return False
    exe = shutil.which("qemu-img") or "qemu-img"
    for ov in overlays:
        if not ov.exists():
            continue
        res = procs.run([exe, "commit", "-q", "-f", "qcow2", str(ov)], name="qemu-img", timeout=None)
        if not res.ok:
            raise ConversionError(f"{vm}: guest conversion: committing {ov.name} into its disk {res.describe()}: "
                                  f"{res.last_line()}", hint="free space on the target and run failover again")
        ov.unlink()
    marker.unlink(missing_ok=True)
    reporter.event("guest_conversion_committed", vm=vm, overlays=[str(o) for o in overlays])
    return True


def convert_guest(spec: TargetVmSpec, folder: Path, build_xml: Callable[[TargetVmSpec], str], *, direct: bool,
                  settings: ConvertSettings, job: ConvertJob | None, reporter: Reporter) -> ConversionResult:
    """Convert the guest on ``spec``'s disks (see the module docstring); raise ConversionError on failure."""
    vm = spec.name
    job = job or ConvertJob()
    command = settings.command
    if direct:
        reporter.event("guest_conversion_skipped", vm=vm, reason="direct")
        return ConversionResult(vm, ran=False, skipped_reason="direct failover: conversion skipped as asked")
    with disk_locks([d.path for d in spec.disks], what=f"scmt guest conversion of {vm}") as locks:
        if _commit(folder, vm, reporter):  # a commit interrupted last time: the conversion itself was done
            return ConversionResult(vm, ran=True, skipped_reason=None, log_path=None,
                                    changes=("conversion finished by an earlier run; its overlays committed",))
        exe = shutil.which(command)
        if exe is None:
            warnings = [f"{vm}: guest conversion skipped: {command} is not installed; the guest keeps its VMware "
                        "drivers and tools (install virt-v2v, or set direct: true for this VM in the plan to skip "
                        "conversion)"]
            if static_ip_options(spec):
                warnings.append(f"{vm}: the plan's static IP addresses were not set in the guest (that is done "
                                f"by {command}); configure them by hand after the switch")
            for w in warnings:
                reporter.log("warning", w, vm=vm)
            return ConversionResult(vm, ran=False, skipped_reason=f"{command} not installed",
                                    warnings=tuple(warnings))
        guest, why = looks_like_guest(spec.disks)
        if not guest:
            reporter.event("guest_conversion_skipped", vm=vm, reason=why)
            reporter.log("info", f"{vm}: guest conversion skipped: {why}", vm=vm)
            return ConversionResult(vm, ran=False, skipped_reason=why)
        return _run(spec, folder, build_xml, exe, settings, job, reporter, [lk.fd for lk in locks if lk.fd])


def _run(spec: TargetVmSpec, folder: Path, build_xml: Callable[[TargetVmSpec], str], exe: str,
         settings: ConvertSettings, job: ConvertJob, reporter: Reporter, fds: list[int]) -> ConversionResult:
    vm = spec.name
    timeout = job.timeout or settings.timeout
    stall = job.stall_timeout or settings.stall_timeout
    qemu_img = shutil.which("qemu-img")
    overlays: list[Path] = []
    conv_spec = spec
    if qemu_img is not None:
        overlays = _overlay_paths(folder, spec)
        disks = []
        for d, ov in zip(spec.disks, overlays, strict=True):
            ov.unlink(missing_ok=True)
            res = procs.run([qemu_img, "create", "-q", "-f", "qcow2", "-F", d.format, "-b",
                             str(Path(d.path).absolute()), str(ov)], name="qemu-img", timeout=120)
            if not res.ok:
                raise ConversionError(f"{vm}: guest conversion: cannot create the overlay {ov}: {res.last_line()}")
            disks.append(replace(d, path=str(ov), format="qcow2"))
        conv_spec = replace(spec, disks=tuple(disks))
    else:
        reporter.log("warning", f"{vm}: qemu-img is not installed: converting the disks in place (a failed "
                                "conversion may leave them half converted)", vm=vm)
    xml_path = folder / "convert.xml"
    from scmt_cli.targets.storage import write_atomic

    write_atomic(xml_path, build_xml(conv_spec).encode())
    argv = (exe, "-i", "libvirtxml", *static_ip_options(spec), str(xml_path))
    if job.cache_dir is not None:
        job.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = converter_env(settings.accel, job.cache_dir)
    accel = "tcg" if env.get("LIBGUESTFS_BACKEND_SETTINGS", "").find("force_tcg") >= 0 else "kvm"
    log = None
    if job.log_path is not None:
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(job.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in finally
    name = Path(exe).name
    reporter.event("guest_conversion_started", vm=vm, argv=list(argv), log=str(job.log_path or ""),
                   timeout_s=timeout, stall_timeout_s=stall, accel=accel)
    reporter.log("info", f"{vm}: converting the guest with {name} (accel {accel}; log: "
                         f"{job.log_path or 'none'})", vm=vm)

    def on_line(line: str, stream: str) -> None:
        if log is not None:
            log.write(line + "\n")
            log.flush()
        if _STEP.match(line) or "warning" in line.lower():
            reporter.log("info", f"{vm}: {name}: {line}", vm=vm)
        reporter.event("guest_conversion_output", vm=vm, line=line)

    def on_beat(elapsed: float, last: str) -> None:
        reporter.event("guest_conversion_progress", vm=vm, elapsed_s=round(elapsed, 1), last_line=last)
        reporter.log("info", f"{vm}: converting, {format_elapsed(elapsed)}" + (f": {last}" if last else ""), vm=vm)

    try:
        res = procs.run(argv, name=name, timeout=timeout, stall_timeout=stall, on_line=on_line,
                        on_heartbeat=on_beat, heartbeat_every=job.heartbeat_every, cancel=job.cancel, env=env,
                        keep_lines=200, pass_fds=fds)
    except BaseException:
        for ov in overlays:
            ov.unlink(missing_ok=True)
        raise
    finally:
        if log is not None:
            log.close()
        xml_path.unlink(missing_ok=True)
        if job.cache_dir is not None:
            shutil.rmtree(job.cache_dir, ignore_errors=True)
    outcome = parse_outcome(res.lines)
    if not res.ok:
        for ov in overlays:
            ov.unlink(missing_ok=True)
        last = [ln for ln in res.lines if ln.strip()][-3:]
        reporter.event("guest_conversion_failed", vm=vm, why=res.describe(), seconds=round(res.seconds, 3),
                       last_lines=last, log=str(job.log_path or ""))
        hint = None
        if res.stalled and accel == "kvm":
            hint = ("libguestfs hangs where /dev/kvm opens but KVM does not work: set target.v2v_accel: tcg "
                    "(or SCMT_V2V_ACCEL=tcg)")
        err = ConversionError(f"{vm}: guest conversion: {name} {res.describe()}; last output: "
                              f"{' | '.join(last) or 'none'}", hint=hint)
        err.details = {"why": res.stopped or "exit", "exit_code": res.exit_code, "seconds": round(res.seconds, 3),
                       "last_lines": last, "log": str(job.log_path or "")}
        raise err
    if overlays:
        write_json_atomic(folder / COMMIT_MARKER, {"overlays": [str(o) for o in overlays]})
        _commit(folder, vm, reporter)
    reporter.event("guest_conversion_done", vm=vm, seconds=round(res.seconds, 3), log=str(job.log_path or ""))
    warnings = tuple(f"{vm}: {name}: {w}" for w in outcome["warnings"])  # type: ignore[attr-defined]
    for w in warnings:
        reporter.log("warning", w, vm=vm)
    return ConversionResult(vm, ran=True, argv=argv, output=res.output, warnings=warnings, seconds=res.seconds,
                            log_path=str(job.log_path) if job.log_path else None,
                            guest=outcome["guest"],  # type: ignore[arg-type]
                            virtio_drivers=outcome["virtio_drivers"],  # type: ignore[arg-type]
                            changes=tuple(outcome["changes"]),  # type: ignore[arg-type]
                            steps=tuple(outcome["steps"]))  # type: ignore[arg-type]


def format_elapsed(seconds: float) -> str:
    """``4m10s``, ``1h02m``, ``35s``."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
