"""Pushed change notices for ``method: hot-backup`` (the client side of the agent's WATCH).

While ``scmt sync --every 5s`` runs, each hot-backup disk keeps a WATCH
stream open on its own agent connection: the agent re-hashes the disk every
:data:`WATCH_INTERVAL` seconds and pushes the indices of changed chunks.  A
sync round then copies exactly the pushed chunks (read fresh, so never older
than the change that was pushed) instead of asking the agent to hash the
whole disk again.

Safety: a stream is (re)started *before* the pass that takes a full or
digest-compared copy, and that pass waits until the agent has hashed its
baseline; every change after the baseline is pushed later, and every change
before it is in the copy.  A broken stream falls back to a digest-compared
pass (after a new stream has started).  The final pass of a failover never
uses pushes: it compares digests, which is exact.

Streams live as long as the command's :class:`MigrationContext` (closed by
:meth:`MigrationContext.close`).
"""

from __future__ import annotations

import threading
import weakref

from scmt_cli.agent.client import AgentConnection, ClientTLS, WatchStream
from scmt_cli.domain.plan import Effective
from scmt_cli.errors import ScmtError
from scmt_cli.services.migration.context import MigrationContext

#: Seconds between two hashes of a watched disk on the agent.
WATCH_INTERVAL = 2.0
#: Seconds to wait for the agent's baseline hash of a disk.
READY_TIMEOUT = 600.0

_LOCK = threading.Lock()
_STREAMS: weakref.WeakKeyDictionary[MigrationContext, dict[tuple[str, str], WatchStream]] = \
    weakref.WeakKeyDictionary()


def _streams(ctx: MigrationContext) -> dict[tuple[str, str], WatchStream]:
    with _LOCK:
        found = _STREAMS.get(ctx)
        if found is None:
            found = _STREAMS[ctx] = {}
            ctx.on_close(lambda: close_all(ctx))
        return found


def close_all(ctx: MigrationContext) -> None:
    with _LOCK:
        streams = _STREAMS.pop(ctx, {})
    for s in streams.values():
        s.close()


def pushed_changes(ctx: MigrationContext, eff: Effective, token: bytes, disk: str, chunk_size: int,
                   have_base: bool, tls: ClientTLS | None) -> set[int] | None:
    """The chunks pushed since the last pass, or None when this pass must compare digests (or seed).

    In the None case a fresh stream is running and its baseline is hashed,
    so the caller's copy, taken afterwards, misses nothing.
    """
    streams = _streams(ctx)
    key = (eff.name, disk)
    current = streams.get(key)
    if current is not None:
        try:
            changed = current.drain()
            if have_base:
                return changed
        except ScmtError as exc:
            ctx.reporter.log("warning", f"{eff.name}: {disk}: the agent's change stream broke ({exc.message}); "
                             "comparing digests this time", vm=eff.name)
            current.close()
            streams.pop(key, None)
            current = None
    if current is None:
        spec = eff.agent
        assert spec is not None
        conn = AgentConnection(spec.host, spec.port, token, where=f"agent://{spec.address}/{disk}", tls=tls)
        stream = conn.watch(disk, chunk_size, WATCH_INTERVAL)
        try:
            stream.wait_ready(READY_TIMEOUT)
        except BaseException:
            stream.close()
            raise
        streams[key] = stream
    return None
