"""``scmt events``: read the state store's append-only event log.

Every state change, sync generation, plan record, lock and lease a store sees
is an event (``vm_state``, ``generation_started``, ``generation_finished``,
``plan_recorded``, ``lease_*``, ``fleet_round``...).  Events are filtered by
plan, VM, kind and time and the most recent ``limit`` of them are returned,
oldest first, like ``tail``.  The log is read in pages, so memory stays
bounded by ``limit`` whatever its length.  Read-only: a store that does not
exist yet is not created (the result is empty).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from scmt_cli.state import StateStore, iso

PAGE = 5000
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class EventsRequest:
    plan: str | None = None
    vm: str | None = None
    kinds: tuple[str, ...] = ()
    since: float | None = None  # POSIX seconds: only events at or after it
    limit: int = DEFAULT_LIMIT  # the most recent N; 0: all


@dataclass
class EventsResult:
    """The ``events`` document: the events (oldest first), how many matched, and whether older ones were left out."""

    store: str
    events: list[dict[str, Any]]
    matched: int
    request: EventsRequest
    warnings: list[str] = field(default_factory=list)
    exit_code: int = 0

    @property
    def truncated(self) -> bool:
        return self.matched > len(self.events)

    def to_dict(self) -> dict[str, Any]:
        r = self.request
        return {"store": self.store,
                "filters": {"plan": r.plan, "vm": r.vm, "kinds": list(r.kinds), "since": iso(r.since),
                            "limit": r.limit},
                "matched": self.matched, "truncated": self.truncated, "events": self.events,
                "warnings": list(self.warnings)}


def read_events(req: EventsRequest, store: StateStore | None, where: str) -> EventsResult:
    """The events of ``store`` that ``req`` selects (see the module doc); ``store`` None: none."""
    kept: deque[dict[str, Any]] = deque(maxlen=req.limit or None)
    matched = 0
    after = 0
    while store is not None:
        page = store.events(plan=req.plan, vm=req.vm, since_id=after, limit=PAGE, kinds=req.kinds or None)
        for ev in page:
            if req.since is None or ev.at >= req.since:
                matched += 1
                kept.append(ev.to_dict())
        if len(page) < PAGE:
            break
        after = page[-1].id
    return EventsResult(where, list(kept), matched, req)
