"""Reading a snapshot's disk through VMware's VDDK: ``nbdkit vddk`` on a private Unix socket.

When the plan names a VDDK library directory, a disk is read with
``nbdkit --readonly --exit-with-parent vddk ...`` (VDDK follows snapshot chains
and picks the fastest transport), then with the engine's NBD client.
:class:`ManagedNbdkit` owns the nbdkit process: it waits for the socket, and
``close()`` stops the process (its process group, through :mod:`scmt_cli.procs`,
which also stops it when scmt is interrupted) and removes the private directory.

The password reaches nbdkit through ``password=+FILE`` (a 0600 file in a 0700
directory, removed as soon as nbdkit has read it), never on a command line.
VDDK pins the server by the SHA-1 thumbprint, which we compute from the
certificate that passed *our* verification (CA or SHA-256 pin).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scmt_cli import procs
from scmt_cli.errors import ConfigError, SourceOperationError
from scmt_cli.transports.base import BlockSource
from scmt_cli.transports.wrappers import SourceProxy
from scmt_cli.vsphere.settings import ConnectionSettings
from scmt_cli.vsphere.tls import classify_connect_error, make_ssl_context


@dataclass(frozen=True)
class VddkDisk:
    """What nbdkit's vddk plugin needs to open one disk of one snapshot."""

    libdir: str
    vm_moref: str  # "vm-123"
    snapshot_moref: str  # "snapshot-45"
    file: str  # the snapshot's disk backing file, "[ds] vm/vm-000001.vmdk"
    transports: str | None = None  # e.g. "nbdssl:nbd" (VDDK's default order otherwise)


def sha1_thumbprint_verified(settings: ConnectionSettings, timeout: float = 15.0) -> str:
    """SHA-1 thumbprint (``AA:BB:..``) of the server certificate, fetched over a verified connection."""
    ctx = make_ssl_context(thumbprint=settings.thumbprint, ca_file=settings.ca_file, insecure=settings.insecure)
    try:
        with socket.create_connection((settings.host, settings.port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=settings.host) as tls:
                der = tls.getpeercert(binary_form=True) or b""
    except OSError as exc:
        raise classify_connect_error(exc, settings.url) from None
    digest = hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - VDDK's pinning format, not our trust anchor
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def nbdkit_vddk_argv(
    disk: VddkDisk, settings: ConnectionSettings, thumbprint_sha1: str, socket_path: str, password_file: str
) -> list[str]:
    """The nbdkit command line (no secret on it: the password is ``+FILE``)."""
    argv = [
        "nbdkit", "--readonly", "--exit-with-parent", "--foreground", "--unix", socket_path,
        "vddk", f"libdir={disk.libdir}", f"server={settings.host}", f"port={settings.port}",
        f"user={settings.user}", f"password=+{password_file}", f"thumbprint={thumbprint_sha1}",
        f"vm=moref={disk.vm_moref}", f"snapshot={disk.snapshot_moref}", f"file={disk.file}",
    ]  # fmt: skip
    if disk.transports:
        argv.append(f"transports={disk.transports}")
    return argv


def check_vddk_available(libdir: str) -> None:
    """ConfigError (5) unless nbdkit, its vddk plugin and the library directory are there."""
    if shutil.which("nbdkit") is None:
        raise ConfigError("nbdkit is not installed; it is needed to read disks through VDDK",
                          hint="apt-get install nbdkit, or remove vddk_libdir from the plan")  # fmt: skip
    probe = procs.run(["nbdkit", "vddk", "--version"], name="nbdkit", timeout=30)
    if not probe.ok:
        raise ConfigError(
            "nbdkit's vddk plugin is not installed",
            hint="install nbdkit-plugin-vddk (or build nbdkit with VDDK), or remove vddk_libdir from the plan",
        )
    if not Path(libdir, "lib64").is_dir():
        raise ConfigError(f"{libdir} is not a VDDK library directory (no lib64/ inside)")


class ManagedNbdkit:
    """An nbdkit process serving on a private Unix socket; a BlockSource over it via the NBD client."""

    def __init__(
        self,
        argv_for: Callable[[str, str], list[str]],
        *,
        what: str,
        startup_timeout: float = 60.0,
        secret: str | None = None,
    ) -> None:
        """``argv_for(socket_path, password_file)`` gives the command; ``secret`` goes into that file."""
        self._dir = Path(tempfile.mkdtemp(prefix="scmt-nbdkit-"))
        os.chmod(self._dir, 0o700)
        self.socket_path = str(self._dir / "nbd.sock")
        password_file = self._dir / "password"
        if secret is not None:
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret)
        argv = argv_for(self.socket_path, str(password_file))
        self.what = what
        self.proc = procs.spawn(argv, name="nbdkit", stdout=False)
        self._source: BlockSource | None = None
        try:
            self._wait(startup_timeout)
        except BaseException:
            self.close()
            raise
        finally:
            password_file.unlink(missing_ok=True)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                done = self.proc.result()
                raise SourceOperationError(f"{self.what}: nbdkit exited ({done.describe()}): {done.last_line()}")
            if os.path.exists(self.socket_path):
                return
            time.sleep(0.05)
        raise SourceOperationError(f"{self.what}: nbdkit did not start within {timeout:g}s")

    def source(self) -> BlockSource:
        if self._source is None:
            from scmt_cli.transports.nbd import open_nbd_source

            self._source = open_nbd_source(f"nbd+unix:///?socket={self.socket_path}")
        return self._source

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        self.proc.stop(grace=10.0)
        shutil.rmtree(self._dir, ignore_errors=True)


class NbdkitDiskSource(SourceProxy):
    """A BlockSource that owns its nbdkit process (closing it stops nbdkit)."""

    def __init__(self, server: ManagedNbdkit, label: str) -> None:
        super().__init__(server.source())
        self._server = server
        self._label = label

    def describe(self) -> str:
        return f"vddk:{self._label}"

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
        """Straight to the NBD client, whose requests for all the ranges are in flight together."""
        self.inner.readinto_many(ranges)

    def close(self) -> None:
        self._server.close()


def open_vddk_disk(disk: VddkDisk, settings: ConnectionSettings, *, label: str) -> BlockSource:
    """Start ``nbdkit vddk`` for one snapshot disk and return a BlockSource over it."""
    check_vddk_available(disk.libdir)
    sha1 = sha1_thumbprint_verified(settings)
    server = ManagedNbdkit(
        lambda sock, pw: nbdkit_vddk_argv(disk, settings, sha1, sock, pw),
        what=label,
        secret=settings.password,
    )
    return NbdkitDiskSource(server, label)
