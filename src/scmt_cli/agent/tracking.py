"""Kernel change tracking for the agent: which parts of each served block device were written, and since when.

The mechanism is the kernel's own block-layer tracepoint ``block:block_rq_complete``
read through a private *tracefs instance* (``/sys/kernel/tracing/instances/scmt-agent-PID-...``):
no kernel module, no helper process, and the kernel filters the events by device
(``dev == ...``) before they reach the agent.  A completion event is recorded in the
trace ring buffer when the write is on the device, so a chunk read *after* its event
was consumed holds the new bytes (a write still in flight at a cut lands in the next
generation and is read again then).

Contract of :class:`DiskTracker` (one per served disk):

* a *cursor* ``(epoch, seq)`` names a cut; ``epoch`` is random per tracker start, so a
  cursor from before an agent restart is recognised as foreign;
* :meth:`DiskTracker.cut` returns the chunks written since a cursor and a new cursor;
  when events may have been lost (foreign epoch, trace buffer overrun, device resized,
  tracer failed, cursor older than the kept generations) it answers ``lost`` with the
  reason instead of a list: the caller must compare digests for that disk (never a
  partial copy);
* a write is any completed request with sectors whose ``rwbs`` has no ``R`` (writes,
  discards, write-zeroes, failed writes: content may have changed) - conservative.

:class:`TracefsTracer` owns the instance and a reader thread; :meth:`TracefsTracer.drain`
reads every event already in the buffer (called before each cut, so a cut taken after
``sync``/freeze misses nothing).  :func:`parse_trace_line` is pure (tested with recorded
traces).  Where tracefs or the device does not allow tracking, :func:`probe_device`
says why and the agent falls back to digest scans, loudly.
"""

from __future__ import annotations

import errno
import os
import re
import select
import stat
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from scmt_cli.blocks.plan import CHUNK_ALIGN

#: Where tracefs is normally mounted (the second is the old debugfs location).
TRACEFS_ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
EVENT = "events/block/block_rq_complete"
INSTANCE_PREFIX = "scmt-agent-"
#: Per-CPU trace buffer of the agent's instance (KiB): about 40,000 events per CPU between two reads.
BUFFER_KB = 4096
#: Generations kept per disk, so a client one or two cuts behind still gets an exact answer.
KEPT_GENERATIONS = 4
#: At most this many granules per disk (the granule grows for very large disks): bounds memory.
MAX_GRANULES = 1 << 22
SECTOR = 512

_EVENT_RE = re.compile(r"block_rq_complete: (\d+),(\d+) (\S+) (?:\(.*?\) )?(\d+) \+ (\d+)")
_LOST_RE = re.compile(r"CPU:(\d+) \[LOST (\d+) EVENTS\]")


def kernel_dev(major: int, minor: int) -> int:
    """The ``dev_t`` as the block tracepoints record it (``MKDEV``: major << 20 | minor)."""
    return (major << 20) | minor


@dataclass(frozen=True)
class WriteEvent:
    dev: int
    sector: int
    sectors: int
    rwbs: str


@dataclass(frozen=True)
class LostEvents:
    cpu: int
    count: int


def parse_trace_line(line: str) -> WriteEvent | LostEvents | None:
    """One ``trace_pipe`` line: a change (``WriteEvent``), a loss notice, or None (reads, flushes, noise)."""
    m = _EVENT_RE.search(line)
    if m is not None:
        major, minor, rwbs, sector, sectors = m.groups()
        n = int(sectors)
        if n <= 0 or "R" in rwbs:
            return None
        return WriteEvent(kernel_dev(int(major), int(minor)), int(sector), n, rwbs)
    m = _LOST_RE.search(line)
    if m is not None:
        return LostEvents(int(m.group(1)), int(m.group(2)))
    return None


@dataclass(frozen=True)
class DeviceInfo:
    """Where the events of a served block device come from: whole-disk ``dev`` and the served range."""

    dev: int
    start_sector: int
    size: int


def probe_device(path: Path, sysfs: Path = Path("/sys")) -> tuple[DeviceInfo | None, str]:
    """The device's tracking identity, or None and why it cannot be tracked."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return None, f"cannot stat {path}: {exc.strerror}"
    if not stat.S_ISBLK(st.st_mode):
        return None, "an image file, not a block device (the block layer cannot track it)"
    node = sysfs / "dev" / "block" / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    start, whole = 0, node
    try:
        if (node / "partition").exists():
            start = int((node / "start").read_text().strip())
            whole = node.resolve().parent
        if not (whole / "mq").is_dir():
            return None, ("a bio-based device (device mapper, md...): it reports no request completions; "
                          "serve the underlying disk to track it")
        major, minor = (int(x) for x in (whole / "dev").read_text().strip().split(":"))
        size = int((node / "size").read_text().strip()) * SECTOR
    except (OSError, ValueError) as exc:
        return None, f"cannot read {node} in sysfs: {exc}"
    return DeviceInfo(kernel_dev(major, minor), start, size), ""


def granule_for(size: int) -> int:
    """Tracking granule of a disk of ``size`` bytes: 64 KiB, doubled until at most MAX_GRANULES."""
    g = CHUNK_ALIGN
    while -(-size // g) > MAX_GRANULES:
        g *= 2
    return g


@dataclass
class Answer:
    """Reply of a cut: ``changed`` chunk indices (None when ``lost``), the new cursor, and why if lost."""

    epoch: str
    seq: int
    changed: list[int] | None
    reason: str = ""

    @property
    def lost(self) -> bool:
        return self.changed is None


class DiskTracker:
    """Written granules of one disk, per generation (see the module doc).  Thread-safe."""

    def __init__(self, name: str, info: DeviceInfo, epoch: str | None = None) -> None:
        self.name, self.info = name, info
        self.epoch = epoch or uuid.uuid4().hex[:16]
        self.granule = granule_for(info.size)
        self.count = -(-info.size // self.granule)
        self.seq = 0
        self._current = bytearray(self.count)
        self._gens: dict[int, bytearray] = {}
        self._lost_upto = -1  # cursors <= this are unreliable
        self._lost_reason = ""
        self.broken = ""  # set when tracking stopped for good
        self._lock = threading.Lock()
        self.events = 0

    def mark(self, sector: int, sectors: int) -> None:
        """Record a write of ``sectors`` at whole-disk ``sector`` (clipped to the served range)."""
        start = (sector - self.info.start_sector) * SECTOR
        end = start + sectors * SECTOR
        start, end = max(start, 0), min(end, self.info.size)
        if start >= end:
            return
        g0, g1 = start // self.granule, (end - 1) // self.granule
        with self._lock:
            self._current[g0:g1 + 1] = b"\x01" * (g1 - g0 + 1)
            self.events += 1

    def mark_lost(self, reason: str) -> None:
        """Events may be missing from now back to the last cut: every existing cursor becomes unreliable."""
        with self._lock:
            self._lost_upto = self.seq
            self._lost_reason = reason

    def stop(self, reason: str) -> None:
        with self._lock:
            self.broken = reason

    def cut(self, epoch: str | None, seq: int | None, chunk_size: int, size_now: int) -> Answer:
        """Close the current generation; the chunks changed since cursor ``(epoch, seq)`` (None: a first cut)."""
        with self._lock:
            reason = ""
            if self.broken:
                reason = self.broken
            elif size_now != self.info.size:
                reason = f"the device was resized ({self.info.size} -> {size_now} bytes)"
                self.broken = reason
            elif epoch is None or seq is None:
                reason = "no cursor yet (first pass)"
            elif epoch != self.epoch:
                reason = "the agent restarted since the last pass (tracking epoch changed)"
            elif seq > self.seq:
                reason = "the cursor is newer than the agent's (a different agent?)"
            elif seq <= self._lost_upto:
                reason = self._lost_reason
            elif seq < self.seq - KEPT_GENERATIONS:
                reason = f"the cursor is more than {KEPT_GENERATIONS} passes old"
            changed = None if reason else self._changed_chunks(seq or 0, chunk_size)
            self.seq += 1
            self._gens[self.seq] = self._current
            self._current = bytearray(self.count)
            for old in [k for k in self._gens if k <= self.seq - KEPT_GENERATIONS]:
                del self._gens[old]
            return Answer(self.epoch, self.seq, changed, reason)

    def _changed_chunks(self, since: int, chunk_size: int) -> list[int]:
        maps = [self._gens[k] for k in range(since + 1, self.seq + 1) if k in self._gens] + [self._current]
        granules: set[int] = set()
        for m in maps:
            i = m.find(1)
            while i >= 0:
                granules.add(i)
                i = m.find(1, i + 1)
        last_chunk = (self.info.size - 1) // chunk_size if self.info.size else -1
        chunks: set[int] = set()
        g = self.granule
        for i in granules:
            first, last = i * g // chunk_size, min(((i + 1) * g - 1) // chunk_size, last_chunk)
            chunks.update(range(first, last + 1))
        return sorted(chunks)


def find_tracefs() -> Path | None:
    for root in TRACEFS_ROOTS:
        if (root / "instances").is_dir() and (root / EVENT).is_dir():
            return root
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TracefsTracer:
    """The agent's tracefs instance: one filtered event stream for every tracked disk."""

    def __init__(self, root: Path, trackers: list[DiskTracker], buffer_kb: int = BUFFER_KB,
                 reader: bool = True) -> None:
        self.root, self.trackers, self.reader = root, trackers, reader
        self.instance = root / "instances" / f"{INSTANCE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.buffer_kb = buffer_kb
        self._by_dev: dict[int, list[DiskTracker]] = {}
        for t in trackers:
            self._by_dev.setdefault(t.info.dev, []).append(t)
        self._fd = -1
        self._rest = b""
        self._read_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._overruns = 0
        self.lost_total = 0

    @staticmethod
    def remove_stale(root: Path) -> None:
        """Remove instances left by agents that died (their pid is gone)."""
        try:
            names = [p for p in (root / "instances").iterdir() if p.name.startswith(INSTANCE_PREFIX)]
        except OSError:
            return
        for inst in names:
            pid = inst.name[len(INSTANCE_PREFIX):].split("-")[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                try:
                    (inst / EVENT / "enable").write_text("0")
                    inst.rmdir()
                except OSError:
                    pass

    def start(self) -> None:
        """Create the instance, filter on the tracked devices, enable the event, start the reader."""
        self.remove_stale(self.root)
        os.mkdir(self.instance)
        try:
            (self.instance / "buffer_size_kb").write_text(str(self.buffer_kb))
            devs = " || ".join(f"dev == {d}" for d in sorted(self._by_dev))
            (self.instance / EVENT / "filter").write_text(devs)
            (self.instance / EVENT / "enable").write_text("1")
            self._fd = os.open(self.instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self._remove()
            raise
        self._overruns = self._read_overruns()
        if not self.reader:  # tests: events are consumed only by drain()
            return
        self._thread = threading.Thread(target=self._loop, name="scmt-agent-tracer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            while not self._stop.is_set():
                if poller.poll(250):
                    self.drain()
        except OSError as exc:
            for t in self.trackers:
                t.stop(f"the kernel tracer failed: {exc.strerror or exc}")

    def drain(self) -> None:
        """Consume every event already in the trace buffer (returns when it is empty)."""
        with self._read_lock:
            if self._fd < 0:
                return
            while True:
                try:
                    data = os.read(self._fd, 1 << 16)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                if not data:
                    break
                lines = (self._rest + data).split(b"\n")
                self._rest = lines.pop()
                for line in lines:
                    self._handle(line.decode("ascii", "replace"))
            over = self._read_overruns()
            if over > self._overruns:
                self._lose(f"the kernel trace buffer overflowed ({over - self._overruns} events lost)")
                self._overruns = over

    def _handle(self, line: str) -> None:
        ev = parse_trace_line(line)
        if isinstance(ev, WriteEvent):
            for t in self._by_dev.get(ev.dev, ()):
                t.mark(ev.sector, ev.sectors)
        elif isinstance(ev, LostEvents):
            self._lose(f"the kernel trace buffer overflowed on CPU {ev.cpu} ({ev.count} events lost)")

    def _lose(self, reason: str) -> None:
        self.lost_total += 1
        for t in self.trackers:
            t.mark_lost(reason)

    def _read_overruns(self) -> int:
        total = 0
        try:
            for cpu in (self.instance / "per_cpu").iterdir():
                for line in (cpu / "stats").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key.strip() in ("overrun", "dropped events"):
                        total += int(value.strip() or 0)
        except (OSError, ValueError):
            pass
        return total

    def _remove(self) -> None:
        try:
            (self.instance / EVENT / "enable").write_text("0")
        except OSError:
            pass
        try:
            self.instance.rmdir()
        except OSError:
            pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._read_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        self._remove()
        for t in self.trackers:
            t.stop("the agent stopped tracking")


def ranges(indices: list[int]) -> list[list[int]]:
    """``[[first, count], ...]`` runs of sorted chunk indices (compact on the wire)."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][0] + out[-1][1] == i:
            out[-1][1] += 1
        else:
            out.append([i, 1])
    return out


class Tracking:
    """Change tracking of all served disks: started with the agent, asked by ``CHANGES`` requests."""

    def __init__(self, disks: dict[str, Path], *, enabled: bool = True, root: Path | None = None,
                 buffer_kb: int = BUFFER_KB, reader: bool = True) -> None:
        self.trackers: dict[str, DiskTracker] = {}
        self.reasons: dict[str, str] = {}
        self.tracer: TracefsTracer | None = None
        if not enabled:
            self.reasons = {n: "change tracking is off (agent started with --no-tracking)" for n in disks}
            return
        root = root or find_tracefs()
        if root is None:
            self.reasons = {n: "tracefs is not mounted or has no block events (as root: mount -t tracefs nodev "
                               "/sys/kernel/tracing)" for n in disks}
            return
        for name, path in disks.items():
            info, why = probe_device(path)
            if info is None:
                self.reasons[name] = why
            else:
                self.trackers[name] = DiskTracker(name, info)
        if not self.trackers:
            return
        tracer = TracefsTracer(root, list(self.trackers.values()), buffer_kb, reader)
        try:
            tracer.start()
        except OSError as exc:
            why = f"cannot start the kernel tracer in {root}: {exc.strerror or exc}"
            self.reasons.update({n: why for n in self.trackers})
            self.trackers = {}
            return
        self.tracer = tracer

    def cut(self, name: str, epoch: str | None, seq: int | None, chunk_size: int, size_now: int) -> dict[str, object]:
        """The ``CHANGES`` reply for disk ``name`` (see :mod:`scmt_cli.agent.protocol`)."""
        tracker = self.trackers.get(name)
        if tracker is None or self.tracer is None:
            return {"tracking": False, "reason": self.reasons.get(name, "not tracked")}
        try:
            self.tracer.drain()
        except OSError as exc:
            tracker.stop(f"the kernel tracer failed: {exc.strerror or exc}")
        ans = tracker.cut(epoch, seq, chunk_size, size_now)
        return {"tracking": True, "epoch": ans.epoch, "seq": ans.seq, "reason": ans.reason,
                "changed": None if ans.changed is None else ranges(ans.changed)}

    def close(self) -> None:
        if self.tracer is not None:
            self.tracer.stop()
            self.tracer = None
