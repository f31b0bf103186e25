"""Migration time estimates: transfer, switch, downtime and total minutes.

Units and rounding (chosen to reproduce the seed's "Migration network
information" table exactly, and documented in README.md):

* **Data** is counted in binary units: 1 GB in the table is 1024 MB, and we
  read sizes as bytes and divide by 2**20 to get those MB (``500GiB`` is
  the table's ``500GB``; ``1TiB`` x 0.7 is its ``717GB``).
* **Bandwidth** ``N Mbps`` moves ``N / 8`` of those MB per second.  Rates
  arrive in bytes/s from :func:`scmt_cli.domain.units.parse_rate` (``300Mbit``
  = 37 500 000 bytes/s), so the table's MB/s is ``bytes_per_second / 1e6``.
  Mixing a binary MB of data with a decimal Mbit of link makes the estimate
  about 4.9 % more conservative than pure SI arithmetic; that is what the
  seed's table does.
* The usable rate is the smaller of the source and target outbound bandwidth.
* ``transfer = compressed_MB / MBps / 60 * redundancy``, rounded **up** to a
  whole minute (floating noise below 1e-6 minute is ignored first).  Only the
  full (compressed) data counts: the table's increments are not in it.
* ``switch`` is the switch window (default 5 minutes, as in the table),
  rounded up to a whole minute.
* ``downtime = switch + time of the pre-switch increment on the link``,
  rounded to the nearest minute (half up): the seed counts the last
  incremental transfer inside the switch window, and its deltas take seconds.
* ``total = transfer + downtime``.

Check against the table (300 Mbps, redundancy 1.2): OA 300 GB -> 163.84 ->
164, total 169; web middleware 140 GB -> 76.46 -> 77 / 82; database 90 GB ->
49.15 -> 50 / 55; ERP 717 GB at 2000 Mbps -> 58.74 -> 59 / 64.

Beyond the table, :func:`schedule` runs several VMs over one shared link
(default 2 at a time, as the seed's managed migration does), adds the
incremental cycles at the sync interval while a VM waits for its wave's
switch, and lays the waves end to end on a timeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MIB = 1024**2
TABLE_MB = MIB  # the table's "MB" of data
DEFAULT_REDUNDANCY = 1.2
DEFAULT_SWITCH_SECONDS = 300.0
DEFAULT_CONCURRENCY = 2


def _ceil(x: float) -> int:
    return math.ceil(round(x, 6))


def _round_half_up(x: float) -> int:
    return math.floor(round(x, 6) + 0.5)


def link_rate(source_bps: float, target_bps: float | None = None) -> float:
    """The usable rate in bytes/s: the smaller of source and target outbound bandwidth."""
    rate = source_bps if target_bps is None else min(source_bps, target_bps)
    if not rate > 0:
        raise ValueError("bandwidth must be positive")
    return rate


def transfer_minutes_exact(nbytes: float, rate_bps: float, redundancy: float = DEFAULT_REDUNDANCY) -> float:
    """Minutes to move ``nbytes`` at ``rate_bps`` (bytes/s) in the table's units (see module doc)."""
    if math.isinf(rate_bps):
        return 0.0
    mb = nbytes / TABLE_MB
    mb_per_s = rate_bps / 1e6
    return mb / mb_per_s / 60.0 * redundancy


@dataclass(frozen=True)
class EstimateInput:
    """What one VM's estimate needs.  Sizes in bytes, rates in bytes/s, times in seconds.

    ``compressed_bytes`` overrides ``data_bytes * compression`` when the
    compressed size is known (the table's "Compressed Data Volume" column).
    """

    name: str
    data_bytes: int
    compression: float = 1.0
    source_bps: float = 37_500_000.0
    target_bps: float | None = None
    redundancy: float = DEFAULT_REDUNDANCY
    switch_seconds: float = DEFAULT_SWITCH_SECONDS
    increments_bytes: tuple[int, ...] = ()
    pre_switch_bytes: int = 0
    compressed_bytes: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.compression <= 1.0:
            raise ValueError(f"compression ratio must be in (0, 1] (compressed/original), got {self.compression}")
        if self.redundancy < 1.0:
            raise ValueError(f"redundancy factor must be at least 1.0, got {self.redundancy}")
        if self.data_bytes < 0:
            raise ValueError("data size cannot be negative")

    @property
    def compressed(self) -> float:
        if self.compressed_bytes is not None:
            return float(self.compressed_bytes)
        return self.data_bytes * self.compression

    @property
    def rate(self) -> float:
        return link_rate(self.source_bps, self.target_bps)


@dataclass(frozen=True)
class VmEstimate:
    """One VM's estimate in whole minutes, plus the exact values and the inputs used."""

    name: str
    transfer_minutes: int
    switch_minutes: int
    downtime_minutes: int
    total_minutes: int
    transfer_minutes_exact: float
    pre_switch_minutes_exact: float
    increment_minutes_exact: tuple[float, ...]
    inputs: EstimateInput

    def to_dict(self) -> dict[str, Any]:
        i = self.inputs
        return {
            "vm": self.name,
            "transfer_minutes": self.transfer_minutes,
            "switch_minutes": self.switch_minutes,
            "downtime_minutes": self.downtime_minutes,
            "total_minutes": self.total_minutes,
            "transfer_minutes_exact": round(self.transfer_minutes_exact, 4),
            "pre_switch_minutes_exact": round(self.pre_switch_minutes_exact, 4),
            "increment_minutes_exact": [round(x, 4) for x in self.increment_minutes_exact],
            "inputs": {
                "data_bytes": i.data_bytes,
                "compression": i.compression,
                "compressed_bytes": int(i.compressed),
                "source_mbit_per_s": i.source_bps * 8 / 1e6,
                "target_mbit_per_s": None if i.target_bps is None else i.target_bps * 8 / 1e6,
                "effective_mbit_per_s": i.rate * 8 / 1e6,
                "redundancy": i.redundancy,
                "switch_seconds": i.switch_seconds,
                "increments_bytes": list(i.increments_bytes),
                "pre_switch_bytes": i.pre_switch_bytes,
            },
        }


def estimate_vm(inp: EstimateInput) -> VmEstimate:
    """The seed-table estimate of one VM (units and rounding: module doc)."""
    rate = inp.rate
    exact = transfer_minutes_exact(inp.compressed, rate, inp.redundancy)
    transfer = _ceil(exact)
    switch = _ceil(inp.switch_seconds / 60.0)
    pre = transfer_minutes_exact(inp.pre_switch_bytes * inp.compression, rate, inp.redundancy)
    incs = tuple(transfer_minutes_exact(b * inp.compression, rate, inp.redundancy) for b in inp.increments_bytes)
    downtime = max(switch, _round_half_up(inp.switch_seconds / 60.0 + pre))
    return VmEstimate(inp.name, transfer, switch, downtime, transfer + downtime, exact, pre, incs, inp)


# ---------------------------------------------------------------- timeline


@dataclass(frozen=True)
class VmSlot:
    """When one VM's full seed runs on the shared link (minutes from its wave's start)."""

    name: str
    start_minutes: float
    end_minutes: float
    incremental_cycles: int  # syncs at the interval between seed end and the wave's switch


@dataclass(frozen=True)
class WaveTimeline:
    name: str
    start_minutes: float
    seed_minutes: float  # until every VM of the wave has its full seed
    switch_minutes: int  # the wave switches together: its longest downtime
    end_minutes: float
    slots: tuple[VmSlot, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "start_minutes": round(self.start_minutes, 2),
            "seed_minutes": round(self.seed_minutes, 2),
            "switch_minutes": self.switch_minutes,
            "end_minutes": round(self.end_minutes, 2),
            "total_minutes": _ceil(self.end_minutes - self.start_minutes),
            "vms": [
                {
                    "vm": s.name,
                    "start_minutes": round(s.start_minutes, 2),
                    "end_minutes": round(s.end_minutes, 2),
                    "incremental_cycles": s.incremental_cycles,
                }
                for s in self.slots
            ],
        }


def share_link(works: Sequence[float], concurrency: int) -> list[tuple[float, float]]:
    """Start and end times of jobs on one link shared equally by at most ``concurrency`` jobs.

    ``works`` are each job's minutes when it has the whole link to itself;
    jobs start in order as slots free up (processor sharing among the active ones).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    n = len(works)
    start = [0.0] * n
    end = [0.0] * n
    remaining: dict[int, float] = {}
    queue = list(range(n))
    now = 0.0
    while queue or remaining:
        while queue and len(remaining) < concurrency:
            j = queue.pop(0)
            start[j] = now
            remaining[j] = works[j]
        share = len(remaining)
        j_next = min(remaining, key=lambda j: remaining[j])
        step = remaining[j_next] * share
        now += step
        for j in list(remaining):
            remaining[j] -= step / share
            if remaining[j] <= 1e-9:
                end[j] = now
                del remaining[j]
    return list(zip(start, end, strict=True))


def schedule(
    waves: Sequence[tuple[str, Sequence[VmEstimate]]],
    concurrency: int = DEFAULT_CONCURRENCY,
    sync_interval_seconds: float | None = 3600.0,
) -> list[WaveTimeline]:
    """Lay waves end to end: each wave seeds its VMs over the shared link, then switches together.

    A VM whose seed ends before the wave's last one keeps syncing every
    ``sync_interval_seconds`` (None: no periodic syncs) until the switch.
    """
    out: list[WaveTimeline] = []
    t0 = 0.0
    for name, vms in waves:
        slots_t = share_link([v.transfer_minutes_exact for v in vms], concurrency)
        seed_end = max((e for _, e in slots_t), default=0.0)
        slots = []
        for v, (s, e) in zip(vms, slots_t, strict=True):
            cycles = 0
            if sync_interval_seconds:
                cycles = int((seed_end - e) * 60.0 // sync_interval_seconds)
            slots.append(VmSlot(v.name, t0 + s, t0 + e, cycles))
        switch = max((v.downtime_minutes for v in vms), default=0)
        end = t0 + seed_end + switch
        out.append(WaveTimeline(name, t0, seed_end, switch, end, tuple(slots)))
        t0 = end
    return out


@dataclass(frozen=True)
class MeasuredComparison:
    """A finished (or running) full seed measured against its estimate.

    ``measured_minutes`` is the wall time the seed took (or will take at the
    measured rate); ``ratio`` is measured / estimated (above 1: slower than
    estimated).  ``effective_rate_bps`` is the source bytes per second achieved.
    """

    estimated_minutes: float
    measured_minutes: float
    ratio: float
    effective_rate_bps: float

    @property
    def assessment(self) -> str:
        if self.ratio > 1.2:
            return "slower than estimated"
        if self.ratio < 0.8:
            return "faster than estimated"
        return "on track"

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimated_minutes": round(self.estimated_minutes, 2),
            "measured_minutes": round(self.measured_minutes, 2),
            "ratio": round(self.ratio, 3),
            "effective_rate_bps": self.effective_rate_bps,
            "assessment": self.assessment,
        }


def compare_measured(est: VmEstimate, bytes_done: int, seconds: float) -> MeasuredComparison:
    """Project the full seed at the measured pace (``bytes_done`` source bytes in ``seconds``).

    For ``scmt status``: after (part of) a real sync, how does the pace compare
    with :func:`estimate_vm`'s transfer time for the same VM?
    """
    if bytes_done <= 0 or seconds <= 0:
        raise ValueError("need some bytes copied over some time to compare")
    rate = bytes_done / seconds
    measured = est.inputs.data_bytes / rate / 60.0
    estimated = est.transfer_minutes_exact
    ratio = measured / estimated if estimated > 0 else math.inf
    return MeasuredComparison(estimated, measured, ratio, rate)
