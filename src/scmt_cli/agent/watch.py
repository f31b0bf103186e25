"""The agent's change watcher (the push side of ``method: hot-backup``).

A :class:`Watcher` serves one ``WATCH`` request: it hashes every chunk of the
disk (the baseline; replied as round 0 with no changes), then every
``interval`` seconds hashes them again and pushes the indices of the chunks
whose digest changed.  Hashing takes the server's read slots one chunk at a
time, so a watcher never exceeds the agent's read queue depth or memory bound.
It is paced by the agent's CPU governor after each chunk.  It stops when
``closed`` is set (the connection ended) or a send fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from scmt_cli.agent import protocol as p
from scmt_cli.agent.disks import ServedDisk

#: Indices per pushed frame (a JSON list well under MAX_PAYLOAD).
BATCH = 50_000
MIN_INTERVAL = 0.1
MAX_INTERVAL = 3600.0


class Watcher(threading.Thread):
    def __init__(self, disk: ServedDisk, chunk_size: int, interval: float, request_id: int,
                 send: Callable[[bytes], None], slots: threading.BoundedSemaphore, closed: threading.Event,
                 pace: Callable[[], None] | None = None) -> None:
        super().__init__(name=f"scmt-agent-watch-{disk.name}", daemon=True)
        self.disk, self.chunk_size, self.interval = disk, chunk_size, interval
        self.request_id, self.send, self.slots, self.closed = request_id, send, slots, closed
        self.pace = pace  # the agent's CPU governor, called after each chunk
        self.rounds = 0

    def _hash_all(self) -> list[str] | None:
        out: list[str] = []
        size, cs = self.disk.size, self.chunk_size
        for off in range(0, size, cs):
            if self.closed.is_set():
                return None
            with self.slots:
                out.append(self.disk.chunk_digest(off, min(cs, size - off)))
            if self.pace is not None:
                self.pace()
        return out

    def _push(self, rnd: int, changed: list[int]) -> None:
        parts = [changed[i : i + BATCH] for i in range(0, len(changed), BATCH)] or [[]]
        for k, part in enumerate(parts):
            body = p.encode_json({"round": rnd, "changed": part, "more": k < len(parts) - 1})
            self.send(p.encode_frame(p.T_WATCH | p.REPLY, self.request_id, body))

    def run(self) -> None:
        try:
            before = self._hash_all()
            if before is None:
                return
            self._push(0, [])
            while not self.closed.wait(self.interval):
                now = self._hash_all()
                if now is None:
                    return
                self.rounds += 1
                changed = [i for i, (a, b) in enumerate(zip(before, now, strict=True)) if a != b]
                before = now
                if changed:
                    self._push(self.rounds, changed)
        except OSError:  # the connection or the disk went away: the client sees the stream end
            self.closed.set()
