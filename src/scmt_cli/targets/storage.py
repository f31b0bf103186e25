"""Disk files, atomic records and guest conversion shared by the target platforms.

Layout under a platform's storage root, one folder per VM::

    <root>/<vm>/disk0.raw      the copy destination (sparse raw; the engine writes here)
    <root>/<vm>/disk0.qcow2    the final disk when ``disk_format: qcow2`` (made at cutover)
    <root>/<vm>/disks.json     the prepared disks (so finalize and status need no plan)

qcow2 approach: the engine always writes raw (random writes into a sparse
file, incremental syncs in place); :func:`finalize_disks` converts each raw
copy to qcow2 with ``qemu-img convert`` into a temporary file, renames it into
place and then deletes the raw copy.  A killed conversion leaves the raw copy
intact and is simply redone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scmt_cli import procs
from scmt_cli.errors import ConfigError, ReadOnlyTargetError, SizeMismatchError, TargetPlatformError
from scmt_cli.events import Reporter
from scmt_cli.targets.base import (
    ConversionResult,
    DiskFormat,
    DiskRequest,
    PreparedDisk,
    TargetVmSpec,
    check_vm_name,
)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, *, vm: str) -> dict[str, Any] | None:
    """The JSON object in ``path``, ``None`` when absent; a corrupt file raises TargetPlatformError."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TargetPlatformError(f"{vm}: cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TargetPlatformError(f"{vm}: {path} is not valid JSON (line {exc.lineno}): {exc.msg}") from exc
    if not isinstance(data, dict):
        raise TargetPlatformError(f"{vm}: {path} must hold a JSON object")
    return data


def vm_dir(root: Path, vm: str) -> Path:
    return root / check_vm_name(vm)


def prepare_disks(
    root: Path, vm: str, disks: Sequence[DiskRequest], disk_format: DiskFormat, reporter: Reporter
) -> list[PreparedDisk]:
    """Create or reuse sparse raw copy files for ``vm``; see the module docstring for the layout.

    An existing copy keeps its data: a smaller one is grown (the source disk
    was expanded), a larger one raises :class:`SizeMismatchError`.
    """
    folder = vm_dir(root, vm)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(f"{vm}: prepare disks: cannot create {folder}", exc) from exc
    indexes = [d.index for d in disks]
    if len(set(indexes)) != len(indexes):
        raise TargetPlatformError(f"{vm}: prepare disks: disk indexes repeat: {indexes}")
    out: list[PreparedDisk] = []
    for d in disks:
        if d.size_bytes < 0 or d.index < 0:
            raise TargetPlatformError(f"{vm}: prepare disks: disk {d.index} has a negative index or size")
        copy = folder / f"disk{d.index}.raw"
        final = folder / f"disk{d.index}.{disk_format}"
        try:
            if copy.exists():
                have = copy.stat().st_size
                if have > d.size_bytes:
                    raise SizeMismatchError(
                        f"{vm}: target disk {copy} is {have} bytes, larger than the source disk ({d.size_bytes} bytes)"
                    )
                if have < d.size_bytes:
                    os.truncate(copy, d.size_bytes)
                    reporter.log("info", f"{vm}: grew target disk {copy.name} to {d.size_bytes} bytes", vm=vm)
            else:
                with open(copy, "ab") as fh:
                    fh.truncate(d.size_bytes)
                reporter.event("target_disk_created", vm=vm, path=str(copy), size_bytes=d.size_bytes)
        except OSError as exc:
            raise _write_error(f"{vm}: prepare disks: cannot create {copy}", exc) from exc
        out.append(PreparedDisk(d.index, d.size_bytes, copy.as_uri(), str(copy), str(final), disk_format))
    manifest = read_json(folder / "disks.json", vm=vm) or {}
    manifest["disks"] = [p.to_dict() | {"copy_path": p.copy_path} for p in out]
    write_json_atomic(folder / "disks.json", manifest)
    return out


def load_prepared(root: Path, vm: str) -> list[PreparedDisk]:
    """The disks recorded by :func:`prepare_disks` (empty when none were prepared)."""
    data = read_json(vm_dir(root, vm) / "disks.json", vm=vm) or {}
    try:
        return [
            PreparedDisk(int(d["index"]), int(d["size_bytes"]), str(d["copy_url"]), str(d["copy_path"]),
                         str(d["path"]), d["format"])
            for d in data.get("disks", [])
        ]  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise TargetPlatformError(f"{vm}: {vm_dir(root, vm) / 'disks.json'} is malformed ({exc})") from exc


def finalize_disks(root: Path, vm: str, reporter: Reporter, *, timeout: float = 3600.0) -> list[PreparedDisk]:
    """Turn raw copies into the final format (qcow2 through ``qemu-img convert``); idempotent."""
    disks = load_prepared(root, vm)
    for d in disks:
        if d.format == "raw" or d.path == d.copy_path:
            continue
        final, copy = Path(d.path), Path(d.copy_path)
        if not copy.exists():
            if final.exists():
                continue  # converted earlier
            raise TargetPlatformError(f"{vm}: finalize disks: neither {copy} nor {final} exists")
        exe = shutil.which("qemu-img")
        if exe is None:
            raise ConfigError(
                f"{vm}: qemu-img is needed to make qcow2 disks but is not installed",
                hint="install qemu-utils, or set target.disk_format: raw",
            )
        tmp = final.with_name(f".{final.name}.partial")
        argv = [exe, "convert", "-q", "-f", "raw", "-O", d.format, str(copy), str(tmp)]
        done = procs.run(argv, name="qemu-img", timeout=timeout)
        if done.exit_code != 0:
            tmp.unlink(missing_ok=True)
            raise TargetPlatformError(f"{vm}: finalize disks: qemu-img convert {done.describe()}: {done.last_line()}")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        copy.unlink()
        reporter.event("target_disk_converted", vm=vm, path=str(final), format=d.format)
    return disks


def static_ip_options(spec: TargetVmSpec) -> list[str]:
    """``--mac MAC:ip:ADDR[,GW,PREFIX[,DNS...]]`` for every NIC the plan gives a static address.

    virt-v2v then writes that address into the guest's network configuration
    for the NIC with that MAC (the seed's "Src-to-Dst Network Configuration").
    """
    opts: list[str] = []
    for nic in spec.nics:
        if not nic.ip or not nic.mac:
            continue
        addr, _, prefix = nic.ip.partition("/")
        value = f"{nic.mac}:ip:{addr}"
        if nic.gateway:
            value += f",{nic.gateway},{prefix or '24'}"
            if nic.dns:
                value += "," + ",".join(nic.dns)
        opts += ["--mac", value]
    return opts


def convert_guest(
    spec: TargetVmSpec,
    xml_path: Path,
    *,
    direct: bool,
    command: str,
    timeout: float,
    reporter: Reporter,
) -> ConversionResult:
    """Run ``virt-v2v-in-place -i libvirtxml XML`` on the final disks, or explain why not.

    ``direct`` skips conversion.  A missing converter is a warning (the guest
    keeps its VMware drivers and tools).  A failing or timed-out converter
    raises :class:`TargetPlatformError`.
    """
    vm = spec.name
    if direct:
        reporter.event("guest_conversion_skipped", vm=vm, reason="direct")
        return ConversionResult(vm, ran=False, skipped_reason="direct failover: conversion skipped as asked")
    exe = shutil.which(command)
    if exe is None:
        warning = (
            f"{vm}: guest conversion skipped: {command} is not installed; the guest keeps its VMware drivers "
            "and tools (install virt-v2v, or fail over with --direct to silence this)"
        )
        warnings = [warning]
        if static_ip_options(spec):
            warnings.append(f"{vm}: the plan's static IP addresses were not set in the guest (that is done by "
                            f"{command}); configure them by hand after the switch")
        for w in warnings:
            reporter.log("warning", w, vm=vm)
        return ConversionResult(vm, ran=False, skipped_reason=f"{command} not installed", warnings=tuple(warnings))
    argv = (exe, "-i", "libvirtxml", *static_ip_options(spec), str(xml_path))
    reporter.event("guest_conversion_started", vm=vm, argv=list(argv))
    started = time.monotonic()
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    done = procs.run(argv, name=command, timeout=timeout, env=env)
    seconds = time.monotonic() - started
    if done.timed_out:
        raise TargetPlatformError(f"{vm}: guest conversion: {command} did not finish within {timeout:g} s")
    if done.exit_code != 0:
        raise TargetPlatformError(
            f"{vm}: guest conversion: {command} failed (exit {done.exit_code}): {done.last_line()}"
        )
    reporter.event("guest_conversion_done", vm=vm, seconds=round(seconds, 3))
    return ConversionResult(vm, ran=True, argv=argv, output=done.output, seconds=seconds)


def _write_error(what: str, exc: OSError) -> Exception:
    """A write failure on the target: read-only (33) whichever command meets it, else a platform error (50)."""
    import errno

    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ReadOnlyTargetError(f"{what}: {exc.strerror} (the target is read-only for scmt)",
                                   hint="give a writable target.path, or fix its permissions")
    return TargetPlatformError(f"{what}: {exc.strerror}")
