"""The copy engine through the NBD client when the server dies mid-copy and comes back."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from scmt_cli.blocks.api import full_copy
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.transports.base import open_target
from scmt_cli.transports.nbd import NbdDisk
from scmt_cli.transports.wrappers import RetryingSource, RetryPolicy
from tests.nbd.servers import Launcher, needs_nbdkit

pytestmark = [pytest.mark.nbd, needs_nbdkit]
MiB = 1 << 20


def test_copy_survives_a_server_restart(servers: Launcher, tmp_path: Path) -> None:
    image = tmp_path / "src.img"
    content = os.urandom(16 * MiB)
    image.write_bytes(content)
    srv = servers.nbdkit("file", str(image), "delay-read=50ms", filters=("delay",), tcp=True)
    assert srv.port is not None
    url = srv.url
    policy = RetryPolicy(attempts=40, initial_wait=0.05, max_wait=0.2)
    src = RetryingSource(NbdDisk(url, timeout=5), policy, reopen=lambda: NbdDisk(url, timeout=5))
    out = tmp_path / "dst.img"
    dst = open_target(f"file://{out}", size=src.size)
    result: list[object] = []

    def copy() -> None:
        try:
            result.append(full_copy(src, dst, options=CopyOptions(chunk_size=MiB, in_flight=3)))
        except BaseException as exc:  # reported below
            result.append(exc)

    t = threading.Thread(target=copy)
    t.start()
    threading.Event().wait(0.2)
    srv.kill()  # mid-copy: in-flight reads fail with "connection lost"
    threading.Event().wait(0.3)
    servers.nbdkit("file", str(image), "delay-read=50ms", filters=("delay",), tcp=True, port=srv.port)
    t.join(60)
    src.close()
    dst.close()
    assert result and not isinstance(result[0], BaseException), result
    assert src.retrier.retries > 0
    assert out.read_bytes() == content
