"""The shared transport contract suite: how a transport plugs in.

Every transport runs ``test_contract.py`` through one entry of
:data:`TRANSPORTS`.  To add a transport, append one :class:`TransportCase`:

* ``name``: the test id (``file``, ``nbd``, ``nbd+unix`` ...);
* ``serve(image, writable)``: a context manager that exposes the raw image
  file ``image`` (it exists, with known content and holes) through the
  transport and yields its URL.  With ``writable=False`` the URL must refuse
  writes (opening it as a target or writing raises ReadOnlyTargetError);
  yield ``None`` when the transport cannot offer a read-only variant (the
  test is then skipped).  Start servers on 127.0.0.1 or a socket in the
  image's directory and stop them (by pid) when the context exits;
* ``reports_holes``: True when ``extents()`` reports unallocated ranges as
  ``hole``/``zero`` (the suite then checks that the image's holes are seen);
* ``target``: False for a read-only transport (its target tests are skipped);
* ``marks``: pytest marks for the case (e.g. ``pytest.mark.nbd``; add a
  ``skipif`` when a server binary is missing).

Example (what an NBD entry looks like)::

    TRANSPORTS.append(TransportCase("nbd", serve_with_nbdkit, reports_holes=True,
                                    marks=(pytest.mark.nbd,)))
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.agent.servers import serve_agent_contract
from tests.nbd.servers import nbd_marks, serve_nbdkit_tcp, serve_nbdkit_unix, serve_qemu_nbd


@dataclass(frozen=True)
class TransportCase:
    name: str
    serve: Callable[[Path, bool], AbstractContextManager[str | None]]
    reports_holes: bool = True
    marks: tuple[Any, ...] = field(default=())
    #: False for read-only transports (the agent): the target tests are skipped.
    target: bool = True


@contextlib.contextmanager
def serve_file(image: Path, writable: bool) -> Iterator[str | None]:
    """file://: the image itself; read-only through the immutable attribute (we may run as root)."""
    if writable:
        yield f"file://{image}"
        return
    try:
        subprocess.run(["chattr", "+i", str(image)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        image.chmod(0o444)
        try:
            with open(image, "r+b"):
                pass
        except PermissionError:  # not root: the mode bits are enough
            yield f"file://{image}"
            image.chmod(0o644)
            return
        image.chmod(0o644)
        yield None
        return
    try:
        yield f"file://{image}"
    finally:
        subprocess.run(["chattr", "-i", str(image)], check=False, capture_output=True)


#: One entry per transport; see the module docstring.
TRANSPORTS: list[TransportCase] = [
    TransportCase("file", serve_file, reports_holes=True),
    TransportCase("nbd-nbdkit", serve_nbdkit_tcp, reports_holes=True, marks=nbd_marks("nbdkit")),
    TransportCase("nbd+unix-nbdkit", serve_nbdkit_unix, reports_holes=True, marks=nbd_marks("nbdkit")),
    TransportCase("nbd+unix-qemu-nbd", serve_qemu_nbd, reports_holes=True, marks=nbd_marks("qemu-nbd")),
    TransportCase("agent", serve_agent_contract, reports_holes=True, target=False),
]


@pytest.fixture(params=[pytest.param(c, id=c.name, marks=c.marks) for c in TRANSPORTS])
def transport(request: pytest.FixtureRequest) -> TransportCase:
    return request.param  # type: ignore[no-any-return]
