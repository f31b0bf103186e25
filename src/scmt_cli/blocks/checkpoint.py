"""Checkpoints: what an interrupted copy needs to continue where it stopped.

The engine writes checkpoints through any object satisfying
:class:`CheckpointStore` (the SQLite ``scmt_cli.state.StateStore`` does; tests
use :class:`MemoryCheckpointStore`).  A checkpoint is a small JSON-able dict
under one key:

``params``
    what the copy was started with (source, target, size, chunk size, mode,
    base manifest digest); a resume with different parameters is refused.
``watermark``
    the grid index below which every planned chunk is durably on the target
    (the target was flushed before the checkpoint was put).
``digests``/``segments``
    the digests of the chunks below the watermark, so the final manifest does
    not need a re-read.  They are stored in immutable segments of
    :data:`SEGMENT` chunks under ``<key>/seg/<n>`` (written once each) plus
    the unfinished tail in the main record, so a checkpoint of a 1 TiB disk
    stays a few KiB.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from scmt_cli.errors import InvalidStateError

SEGMENT = 4096


class CheckpointStore(Protocol):
    """Where checkpoints live.  Each call is atomic; ``data`` is JSON-able."""

    def get_checkpoint(self, key: str) -> dict[str, Any] | None: ...

    def put_checkpoint(self, key: str, data: dict[str, Any]) -> None: ...

    def delete_checkpoint(self, key: str) -> None: ...


class MemoryCheckpointStore:
    """A dict-backed :class:`CheckpointStore` (tests, library use without a state file).

    Values are round-tripped through JSON so tests catch non-serialisable data.
    """

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.puts = 0

    def get_checkpoint(self, key: str) -> dict[str, Any] | None:
        raw = self.data.get(key)
        return None if raw is None else dict(json.loads(raw))

    def put_checkpoint(self, key: str, data: dict[str, Any]) -> None:
        self.puts += 1
        self.data[key] = json.dumps(data)

    def delete_checkpoint(self, key: str) -> None:
        self.data.pop(key, None)


def checkpoint_key(source: str, target: str) -> str:
    """The key of the copy from ``source`` to ``target`` (redacted descriptions)."""
    h = hashlib.sha256(f"{source}\0{target}".encode()).hexdigest()[:24]
    return f"copy/{h}"


class Checkpointer:
    """Reads, checks, writes and removes the checkpoint of one copy."""

    def __init__(self, store: CheckpointStore, key: str, params: dict[str, Any]) -> None:
        self.store = store
        self.key = key
        self.params = params
        self._segments_written = 0

    def load(self) -> tuple[int, dict[int, str | None], bool] | None:
        """Return ``(watermark, digests, fresh)`` of a matching checkpoint, or None if none exists.

        Raises InvalidStateError when a checkpoint exists for different parameters.
        """
        data = self.store.get_checkpoint(self.key)
        if data is None:
            return None
        old = data.get("params", {})
        diffs = [k for k in sorted(set(old) | set(self.params)) if old.get(k) != self.params.get(k)]
        if diffs:
            detail = ", ".join(f"{k}: checkpoint {old.get(k)!r} vs now {self.params.get(k)!r}" for k in diffs)
            raise InvalidStateError(
                f"cannot resume: the interrupted copy used different parameters ({detail})",
                hint="rerun with the original parameters, or without --resume to start over",
            )
        watermark, digests = self._digests(data)
        return watermark, digests, bool(data.get("fresh", False))

    def _digests(self, data: dict[str, Any]) -> tuple[int, dict[int, str | None]]:
        watermark = int(data.get("watermark", 0))
        digests: dict[int, str | None] = {}
        nseg = int(data.get("segments", 0))
        for s in range(nseg):
            seg = self.store.get_checkpoint(f"{self.key}/seg/{s}")
            if seg is None:
                raise InvalidStateError(f"checkpoint {self.key} is incomplete (segment {s} missing)",
                                        hint="rerun without --resume to start over")
            base = s * SEGMENT
            for j, d in enumerate(seg["digests"]):
                digests[base + j] = d
        for k, d in data.get("digests", {}).items():
            digests[int(k)] = d
        self._segments_written = nseg
        return watermark, digests

    def save(self, watermark: int, digests: dict[int, str | None], fresh: bool) -> None:
        """Record that every planned chunk below ``watermark`` is on the target.

        ``digests`` holds the digest (or None for unplanned chunks) of chunks
        below the watermark; those in full segments are written once.
        """
        full = watermark // SEGMENT
        while self._segments_written < full:
            s = self._segments_written
            seg = [digests.get(i) for i in range(s * SEGMENT, (s + 1) * SEGMENT)]
            self.store.put_checkpoint(f"{self.key}/seg/{s}", {"digests": seg})
            self._segments_written += 1
        tail = {str(i): digests.get(i) for i in range(full * SEGMENT, watermark) if i in digests}
        self.store.put_checkpoint(
            self.key,
            {"params": self.params, "watermark": watermark, "segments": full, "digests": tail, "fresh": fresh},
        )

    def clear(self) -> None:
        """Remove the checkpoint and its segments (after success or when starting over)."""
        data = self.store.get_checkpoint(self.key)
        nseg = int(data.get("segments", 0)) if data else 0
        self.store.delete_checkpoint(self.key)
        for s in range(max(nseg, self._segments_written)):
            self.store.delete_checkpoint(f"{self.key}/seg/{s}")
        self._segments_written = 0
