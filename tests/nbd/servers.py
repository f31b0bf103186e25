"""Start real NBD servers (nbdkit, qemu-nbd) on loopback or Unix sockets, for tests.

Each server runs in the foreground as our child, is waited for until it accepts
connections, and is killed by its pid at teardown.  Tests that need a binary
which is not installed are skipped with a reason naming it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NBDKIT = shutil.which("nbdkit")
QEMU_NBD = shutil.which("qemu-nbd")

needs_nbdkit = pytest.mark.skipif(NBDKIT is None, reason="nbdkit is not installed (Debian package nbdkit)")
needs_qemu_nbd = pytest.mark.skipif(QEMU_NBD is None, reason="qemu-nbd is not installed (Debian package qemu-utils)")


_SERIAL = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    socket_path: str | None = None
    port: int | None = None

    def kill(self) -> None:
        """Stop the server at once (SIGKILL by pid) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _wait_ready(server: Server, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if server.proc.poll() is not None:
            err = server.log.read_text(errors="replace")
            raise RuntimeError(f"NBD server exited early ({server.proc.returncode}): {err}")
        try:
            if server.socket_path:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(server.socket_path)
            else:
                assert server.port is not None
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    server.kill()
    raise RuntimeError("NBD server did not start listening in time")


class Launcher:
    """Starts servers for one test and stops all of them at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[Server] = []

    def _start(self, argv: list[str], url: str, sock: str | None, port: int | None) -> Server:
        log = self.tmp_path / f"server{self._n}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        server = Server(proc, url, log, sock, port)
        self.servers.append(server)
        _wait_ready(server)
        return server

    def _endpoint(
        self, tcp: bool, export: str = "", port: int | None = None
    ) -> tuple[list[str], list[str], str, str | None, int | None]:
        """(nbdkit args, qemu-nbd args, url, socket, port)."""
        self._n = next(_SERIAL)  # unique even when two launchers share a directory
        if tcp:
            port = port or free_port()
            url = f"nbd://127.0.0.1:{port}/{export}"
            return ["-i", "127.0.0.1", "-p", str(port)], ["-b", "127.0.0.1", "-p", str(port)], url, None, port
        sock = str(self.tmp_path / f"nbd{self._n}.sock")
        url = f"nbd+unix:///{export}?socket={sock}"
        return ["-U", sock], ["-k", sock], url, sock, None

    def nbdkit(self, plugin: str, *args: str, filters: tuple[str, ...] = (), tcp: bool = False,
               readonly: bool = False, options: tuple[str, ...] = (), port: int | None = None) -> Server:
        """``nbdkit -f --exit-with-parent [filters] PLUGIN ARGS`` on a Unix socket (or loopback TCP)."""
        if NBDKIT is None:
            pytest.skip("nbdkit is not installed (Debian package nbdkit)")
        kit, _, url, sock, port = self._endpoint(tcp, port=port)
        argv = [NBDKIT, "-f", "--exit-with-parent", *kit, *options]
        argv += [f"--filter={f}" for f in filters]
        if readonly:
            argv.append("-r")
        argv += [plugin, *args]
        return self._start(argv, url, sock, port)

    def qemu_nbd(self, image: Path, *, tcp: bool = False, readonly: bool = False, shared: int = 4,
                 export: str = "") -> Server:
        """``qemu-nbd -f raw -t -e N IMAGE`` on a Unix socket (or loopback TCP)."""
        if QEMU_NBD is None:
            pytest.skip("qemu-nbd is not installed (Debian package qemu-utils)")
        _, qn, url, sock, port = self._endpoint(tcp, export)
        argv = [QEMU_NBD, "-f", "raw", "-t", "-e", str(shared), *qn]
        if export:
            argv += ["-x", export]
        if readonly:
            argv.append("-r")
        argv.append(str(image))
        return self._start(argv, url, sock, port)

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


def nbd_marks(binary: str) -> tuple[pytest.MarkDecorator, ...]:
    """Marks for a contract-suite case that needs ``binary`` (nbdkit or qemu-nbd)."""
    return (pytest.mark.nbd, needs_nbdkit if binary == "nbdkit" else needs_qemu_nbd)


@contextlib.contextmanager
def _serving(image: Path, start: str, writable: bool, tcp: bool) -> Iterator[str | None]:
    launcher = Launcher(image.parent)
    try:
        if start == "nbdkit":
            server = launcher.nbdkit("file", str(image), tcp=tcp, readonly=not writable)
        else:
            server = launcher.qemu_nbd(image, tcp=tcp, readonly=not writable)
        yield server.url
    finally:
        launcher.stop_all()


def serve_nbdkit_tcp(image: Path, writable: bool) -> contextlib.AbstractContextManager[str | None]:
    """Contract-suite server: ``nbdkit file`` on 127.0.0.1 (``-r`` when not writable)."""
    return _serving(image, "nbdkit", writable, tcp=True)


def serve_nbdkit_unix(image: Path, writable: bool) -> contextlib.AbstractContextManager[str | None]:
    """Contract-suite server: ``nbdkit file`` on a Unix socket next to the image."""
    return _serving(image, "nbdkit", writable, tcp=False)


def serve_qemu_nbd(image: Path, writable: bool) -> contextlib.AbstractContextManager[str | None]:
    """Contract-suite server: ``qemu-nbd -f raw`` on a Unix socket next to the image."""
    return _serving(image, "qemu-nbd", writable, tcp=False)
