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

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scmt_cli import procs
from scmt_cli.errors import (
    ConfigError,
    ReadOnlyTargetError,
    SizeMismatchError,
    TargetPlatformError,
    no_space,
)
from scmt_cli.events import Reporter
from scmt_cli.targets.base import (
    DiskFormat,
    DiskRequest,
    PlatformSpec,
    PreparedDisk,
    TargetVmSpec,
    check_vm_name,
)
from scmt_cli.targets.disklock import disk_locks


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename, fsync the folder.

    A full file system raises :class:`~scmt_cli.errors.NoSpaceError` (exit 30), any other
    failure :class:`~scmt_cli.errors.TargetPlatformError`.
    """
    try:
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
    except OSError as exc:  # a target-side file: never a raw OSError, never "source operation failed"
        if exc.errno == errno.ENOSPC:
            raise no_space(str(path), len(data)) from None
        raise TargetPlatformError(f"cannot write {path}: {exc.strerror or exc}") from None


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
        with disk_locks([copy, final], what=f"scmt finalize of {vm} (qemu-img convert)") as locks:
            done = procs.run(argv, name="qemu-img", timeout=timeout, pass_fds=[lk.fd for lk in locks if lk.fd])
            if not done.ok:
                tmp.unlink(missing_ok=True)
                raise TargetPlatformError(
                    f"{vm}: finalize disks: qemu-img convert {done.describe()}: {done.last_line()}")
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


def convert_settings(spec: PlatformSpec) -> Any:
    """The converter settings of a platform spec (a :class:`scmt_cli.targets.convert.ConvertSettings`)."""
    from scmt_cli.targets.convert import ConvertSettings

    return ConvertSettings(command=spec.v2v_command, timeout=spec.v2v_timeout_s,
                           stall_timeout=spec.v2v_stall_timeout_s, accel=spec.v2v_accel)


def _write_error(what: str, exc: OSError) -> Exception:
    """A write failure on the target: read-only (33) whichever command meets it, else a platform error (50)."""
    import errno

    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ReadOnlyTargetError(f"{what}: {exc.strerror} (the target is read-only for scmt)",
                                   hint="give a writable target.path, or fix its permissions")
    if exc.errno == errno.ENOSPC:
        return no_space(exc.filename or what)
    return TargetPlatformError(f"{what}: {exc.strerror}")
