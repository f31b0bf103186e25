"""What the state store costs: operations per second on SQLite and PostgreSQL, and its share of a sync pass.

Not a test; run ``nox -s bench -- --only store``, or ``python bench/store.py`` (``--help``).

Two parts, each on both stores:

* **operations per second** of what a migration does most: ``put_checkpoint``
  (a copy writes one every 5 s per disk), ``append_event``, ``get_vm`` (a
  read), a VM lock taken and released, and a fleet lease claimed and released
  (:func:`scmt_cli.state.leases.claim`, one transaction under the store-wide
  writer lock).  Median of ``--repeat`` runs of ``--ops`` operations each;
* **overhead per VM pass**: a seed pass and an incremental pass of the demo
  lab's VMs (the in-process fake vCenter, 2 VMs at a time), every public
  store method timed while they run (lock heartbeats included); the table
  shows per VM and pass the store calls and the time spent in them, beside
  the pass's wall time per VM.

SQLite is a file in the work directory (WAL, ``synchronous=FULL``, as scmt
opens it).  PostgreSQL is a throw-away cluster started here on 127.0.0.1
(``tests/pgcluster.py``) with ``fsync`` and ``synchronous_commit`` **on**, as
a production server runs; clients connect over TCP loopback, so a real
network round trip (a store on another host) adds its latency to every
operation.  Skipped with a note when PostgreSQL or psycopg is missing.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.pgcluster

Row = tuple[str, str, str, str]


@contextmanager
def stores(work: Path, want_pg: bool) -> Iterator[list[tuple[str, str, dict[str, str]]]]:
    """``(label, state URL or path, environment)`` for each store that can run here."""
    out = [("SQLite", str(work / "state.db"), {})]
    cluster = None
    note = ""
    if want_pg:
        try:
            import psycopg  # noqa: F401
            from tests.pgcluster import ClusterUnavailable, PgCluster

            try:
                cluster = PgCluster(fsync=True).init()
                out.append(("PostgreSQL", cluster.new_schema(), cluster.env()))
            except ClusterUnavailable as exc:
                note = f"PostgreSQL skipped: {exc}"
        except ImportError:
            note = "PostgreSQL skipped: psycopg is not installed (pip install -e '.[postgresql]')"
    if note:
        print(note, file=sys.stderr)
    try:
        yield out
    finally:
        if cluster is not None:
            cluster.destroy()


@contextmanager
def environ(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rate(fn: Callable[[int], None], ops: int, repeat: int) -> float:
    """Median operations per second of ``fn(i)`` called ``ops`` times, over ``repeat`` runs."""
    runs = []
    for r in range(repeat):
        t = time.perf_counter()
        for i in range(ops):
            fn(r * ops + i)
        runs.append(ops / (time.perf_counter() - t))
    return statistics.median(runs)


def op_rates(url: str, ops: int, repeat: int) -> dict[str, float]:
    from scmt_cli.state import StateStore
    from scmt_cli.state.leases import Limits, claim, release

    checkpoint = {"params": {"chunk": 4 << 20, "src": "file:///a", "dst": "file:///b"}, "watermark": 123 << 20,
                  "digests": ["0123456789abcdef0123456789abcdef"] * 24}
    out: dict[str, float] = {}
    with StateStore.open(url) as store:
        store.record_plan("bench", "bench.yaml", "0" * 64)
        store.upsert_vm("bench", "vm0")
        out["put_checkpoint"] = rate(lambda i: store.put_checkpoint(f"copy/bench/{i % 8}", checkpoint), ops, repeat)
        out["append_event"] = rate(lambda i: store.append_event("bench", plan="bench", vm="vm0", n=i), ops, repeat)
        out["get_vm"] = rate(lambda i: store.get_vm("bench", "vm0"), ops * 4, repeat)

        def lock_cycle(i: int) -> None:
            store.lock(f"vm:bench/lock{i % 4}", heartbeat=False).acquire().release()

        out["lock + release"] = rate(lock_cycle, max(1, ops // 2), repeat)
        names = [f"vm{i}" for i in range(16)]

        def lease_cycle(i: int) -> None:
            lock, why = claim(store, "bench", names, limits=Limits(concurrency=4), heartbeat=False)
            assert lock is not None, why
            release(store, "bench", lock.resource.rsplit("/", 1)[1], lock, outcome="ok")

        out["lease claim + release"] = rate(lease_cycle, max(1, ops // 2), repeat)
    return out


class StoreTimer:
    """Times every public method of the store classes while installed (class-level, all instances)."""

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0
        self._local = threading.local()  # per thread: a store method calling another is counted once
        self._lock = threading.Lock()
        self._saved: list[tuple[type, str, Any]] = []

    def install(self) -> None:
        from scmt_cli.state.core import StoreCore
        from scmt_cli.state.store import StateStore

        for cls in (StoreCore, StateStore):
            for name, fn in list(vars(cls).items()):
                if name.startswith("_") or not callable(fn) or isinstance(fn, (staticmethod, classmethod)):
                    continue
                self._saved.append((cls, name, fn))
                setattr(cls, name, self._wrap(fn))

    def uninstall(self) -> None:
        for cls, name, fn in reversed(self._saved):
            setattr(cls, name, fn)
        self._saved.clear()

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kw: Any) -> Any:
            if getattr(self._local, "inside", False):
                return fn(*args, **kw)
            self._local.inside = True
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                took = time.perf_counter() - t
                self._local.inside = False
                with self._lock:
                    self.seconds += took
                    self.calls += 1

        return timed


def pass_overhead(url: str, work: Path) -> list[tuple[str, int, float, float, int]]:
    """``(pass, store calls, store seconds, pass seconds, VMs)`` for a seed and an incremental pass."""
    from scmt_cli.events import RecordingReporter
    from scmt_cli.lab import demo as demo_lab
    from scmt_cli.lab.vcenter import start_estate, stop_estate
    from scmt_cli.services.migration.sync import SyncRequest, sync_service
    from scmt_cli.state import StateStore

    root = Path(tempfile.mkdtemp(prefix="lab-", dir=work))
    estate = start_estate(demo_lab.write_lab(root / "lab"), root / "vcenter")
    out = []
    try:
        plan = demo_lab.write_plan(root / "lab", url=estate.base_url + "/sdk", thumbprint=estate.http.thumbprint,
                                   user=estate.lab.user)
        with StateStore.open(url) as store:
            for label in ("seed", "incremental"):
                timer = StoreTimer()
                timer.install()
                t = time.perf_counter()
                try:
                    res = sync_service(SyncRequest(plan=plan), store, RecordingReporter())
                finally:
                    timer.uninstall()
                total = time.perf_counter() - t
                vms = len(res.last)
                bad = [o.vm for o in res.last.values() if o.error]
                if bad:
                    raise RuntimeError(f"{label} pass failed for {', '.join(bad)}")
                out.append((label, timer.calls, timer.seconds, total, vms))
    finally:
        stop_estate(estate)
        shutil.rmtree(root, ignore_errors=True)
    return out


def run(ops: int, repeat: int, want_pg: bool) -> list[Row]:
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix="scmt-bench-store-"))
    try:
        pass_overhead(str(work / "warmup.db"), work)  # imports and first-use costs are not billed to a store
        with stores(work, want_pg) as found:
            for label, url, env in found:
                with environ(env):
                    for op, per_s in op_rates(url, ops, repeat).items():
                        rows.append((f"{label}: {op}", f"{per_s:,.0f}/s", f"{1000 / per_s:.2f} ms", ""))
                    for name, calls, store_s, total_s, vms in pass_overhead(url, work):
                        rows.append((f"{label}: {name} pass, per VM", f"{calls / vms:.0f} calls",
                                     f"{store_s / vms * 1000:.0f} ms",
                                     f"in the store, of a pass taking {total_s / vms:.2f} s/VM ({vms} VMs)"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--ops", type=int, default=400, help="operations per run (reads: 4x)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = ap.parse_args(argv)
    rows = run(args.ops, args.repeat, not args.no_postgres)
    print(f"{'state store benchmark':<46} {'rate':>12} {'each':>10}  note")
    for name, a, b, note in rows:
        print(f"{name:<46} {a:>12} {b:>10}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
