"""The agent's control side: change tracking (``CHANGES``), freeze/thaw (``FREEZE``/``THAW``) and its figures
(``STATS``), see :mod:`scmt_cli.agent.protocol`.

:class:`Control` owns the agent's :class:`~scmt_cli.agent.tracking.Tracking`,
its :class:`~scmt_cli.agent.freeze.Freezer` and its two governors
(:mod:`scmt_cli.agent.limits`).  A malformed request raises
:class:`~scmt_cli.agent.protocol.ProtocolError` (the server answers it with
``E_BAD_REQUEST``); nothing here writes to a served disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from scmt_cli.agent import protocol as p
from scmt_cli.agent.disks import ServedDisk
from scmt_cli.agent.freeze import ADVICE, Freezer
from scmt_cli.agent.limits import CpuShare, StorageShare, usage
from scmt_cli.agent.tracking import Tracking
from scmt_cli.blocks.plan import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from scmt_cli.events import Reporter


class Control:
    """Tracking, freezing and resource figures of the agent serving ``disks``."""

    def __init__(self, disks: Mapping[str, ServedDisk], reporter: Reporter, *, cpu_share: float,
                 storage_share: float, cpu_clock: Callable[[], float] = time.process_time) -> None:
        """``cpu_clock``: the CPU seconds the CPU share meters (the server leaves out unauthenticated work)."""
        self.disks, self.reporter = disks, reporter
        self.cpu = CpuShare(cpu_share, cpu=cpu_clock) if cpu_share < 1 else None
        self.io = StorageShare(storage_share) if storage_share < 1 else None
        self.cpu_share, self.storage_share = cpu_share, storage_share
        self.tracking: Tracking | None = None
        self.freezer: Freezer | None = None

    def start(self, *, tracking: bool, buffer_kb: int, reader: bool) -> None:
        """Attach the storage governor to the disks, start tracking them (saying which are not), make the freezer."""
        for d in self.disks.values():
            d.governor = self.io
        paths = {n: d.path for n, d in self.disks.items()}
        self.tracking = Tracking(paths, enabled=tracking, buffer_kb=buffer_kb, reader=reader)
        for name, why in sorted(self.tracking.reasons.items()):
            self.reporter.log("warning", f"agent: {name}: no kernel change tracking ({why}); incremental passes "
                              "will read and hash the whole disk")
        tracked = sorted(self.tracking.trackers)
        if tracked:
            self.reporter.log("info", "agent: kernel change tracking (block:block_rq_complete) on "
                              + ", ".join(tracked))
        self.reporter.event("agent_tracking", tracked=tracked, untracked=dict(self.tracking.reasons))
        self.freezer = Freezer(paths, on_expire=self._freeze_expired)

    def _freeze_expired(self, thawed: list[str]) -> None:
        self.reporter.log("warning", f"agent: the freeze limit passed before the migration host thawed {thawed}; "
                          "thawed them (watchdog)")
        self.reporter.event("agent_freeze_expired", thawed=thawed)

    def pace_cpu(self) -> None:
        """Pause the caller while the agent is over its CPU share."""
        if self.cpu is not None:
            self.cpu.pace()

    def changes(self, disk: ServedDisk, body: dict[str, Any]) -> dict[str, object]:
        assert self.tracking is not None
        chunk = p.int_field(body, "chunk_size", lo=MIN_CHUNK_SIZE, hi=MAX_CHUNK_SIZE)
        epoch, seq = body.get("epoch"), body.get("seq")
        if epoch is not None and (not isinstance(epoch, str) or len(epoch) > 64):
            raise p.ProtocolError("epoch must be a short string")
        if seq is not None:
            seq = p.int_field(body, "seq")
        return self.tracking.cut(disk.name, epoch, seq, chunk, disk.current_size())

    def freeze(self, body: dict[str, Any], owner: object) -> dict[str, object]:
        assert self.freezer is not None
        limit = body.get("limit")
        if not isinstance(limit, (int, float)) or isinstance(limit, bool) or not 0 < limit <= 600:
            raise p.ProtocolError("limit must be 0 to 600 seconds")
        out: dict[str, Any] = self.freezer.freeze(float(limit), owner)
        self.reporter.log("info", f"agent: froze {out['frozen'] or 'no file system'} for at most {limit} s")
        for r in out["refused"]:
            self.reporter.log("warning", f"agent: cannot freeze {r['mount']}: {r['reason']}; {ADVICE}")
        return out

    def thaw(self, owner: object = None) -> list[str]:
        """Thaw what is frozen (only what ``owner`` froze, when given)."""
        if self.freezer is None:
            return []
        thawed = self.freezer.thaw(owner)
        if thawed and owner is None:
            self.reporter.log("info", f"agent: thawed {thawed}")
        return thawed

    def stats(self, queue_depth: int, bandwidth: float | None) -> dict[str, Any]:
        """The ``STATS`` reply, except the server's own counters."""
        out: dict[str, Any] = dict(usage())
        out["disk_bytes_read"] = sum(d.bytes_read for d in self.disks.values())
        out["tracked"] = sorted(self.tracking.trackers) if self.tracking is not None else []
        out["limits"] = {"queue_depth": queue_depth, "bandwidth_bytes_per_s": bandwidth,
                         "cpu_limit_pct": round(self.cpu_share * 100, 3) if self.cpu is not None else None,
                         "storage_share_pct": round(self.storage_share * 100, 3) if self.io is not None else None}
        out["disk_busy_seconds"] = round(self.io.total_busy, 3) if self.io is not None else None
        out["throttled_seconds"] = {"cpu": round(self.cpu.slept, 3) if self.cpu is not None else 0.0,
                                    "storage": round(self.io.slept, 3) if self.io is not None else 0.0}
        return out

    def close(self) -> None:
        """Thaw everything and stop tracking."""
        if self.freezer is not None:
            self.freezer.thaw()
        if self.tracking is not None:
            self.tracking.close()
