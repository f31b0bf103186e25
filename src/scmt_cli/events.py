"""How services and adapters tell the outside world what they are doing.

Nothing below ``cli/`` prints.  Services and adapters receive a :class:`Reporter`
and call ``log``, ``progress`` and ``event`` on it; the CLI decides whether that
becomes rich progress bars, plain lines, JSON lines on stderr (``--log-json``) or
nothing (``--quiet``).  A reporter must be cheap to call and thread-safe: the
copy engine calls ``progress`` from worker threads.

Field values must be JSON-serialisable and must never contain secrets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Level = Literal["debug", "info", "warning", "error"]


class Reporter(Protocol):
    def log(self, level: Level, message: str, **fields: Any) -> None:
        """A human-readable message; ``fields`` add structured context."""

    def progress(self, task: str, done: int, total: int | None, **fields: Any) -> None:
        """``done`` of ``total`` units (bytes unless ``unit`` says otherwise) for ``task``.

        ``task`` identifies one progress bar (e.g. ``"web01/disk0"``); a task is
        finished when ``done == total`` or when ``event("task_done", task=...)``
        is sent.
        """

    def event(self, kind: str, **fields: Any) -> None:
        """A discrete state change (``sync_started``, ``snapshot_created`` ...)."""


class NullReporter:
    """Discards everything.  The default for library use and tests."""

    def log(self, level: Level, message: str, **fields: Any) -> None:
        return None

    def progress(self, task: str, done: int, total: int | None, **fields: Any) -> None:
        return None

    def event(self, kind: str, **fields: Any) -> None:
        return None


@dataclass
class Record:
    type: str  # "log" | "progress" | "event"
    data: dict[str, Any] = field(default_factory=dict)


class RecordingReporter:
    """Keeps every call as a :class:`Record`; used by tests and by the demo."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._lock = threading.Lock()

    def _add(self, rtype: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.records.append(Record(rtype, data))

    def log(self, level: Level, message: str, **fields: Any) -> None:
        self._add("log", {"level": level, "message": message, **fields})

    def progress(self, task: str, done: int, total: int | None, **fields: Any) -> None:
        self._add("progress", {"task": task, "done": done, "total": total, **fields})

    def event(self, kind: str, **fields: Any) -> None:
        self._add("event", {"kind": kind, **fields})

    def of_type(self, rtype: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r.data for r in self.records if r.type == rtype]


class CallbackReporter:
    """Forwards every call to one function ``fn(type, data)``."""

    def __init__(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        self._fn = fn

    def log(self, level: Level, message: str, **fields: Any) -> None:
        self._fn("log", {"level": level, "message": message, **fields})

    def progress(self, task: str, done: int, total: int | None, **fields: Any) -> None:
        self._fn("progress", {"task": task, "done": done, "total": total, **fields})

    def event(self, kind: str, **fields: Any) -> None:
        self._fn("event", {"kind": kind, **fields})
