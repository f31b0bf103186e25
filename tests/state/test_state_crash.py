"""Crash safety and concurrency: kill -9 mid-transaction, many writers at once."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scmt_cli.state import StateStore

from .conftest import wait_line

#: The contract: every test here runs against both stores.
STORE_BACKENDS = ("sqlite", "postgresql")


def test_kill_mid_transaction_leaves_no_partial_rows(db: Path, spawn: Callable[..., Any], backend: str) -> None:
    StateStore.open(db).close()
    proc = spawn("crash", str(db))
    wait_line(proc, "inside")  # 50 checkpoints + 50 events + a VM written, not committed
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    with StateStore.open(db) as store:
        assert store.get_checkpoint("committed") == {"n": 1}  # committed before the transaction
        assert store.get_plan("crashplan") is not None
        assert store.checkpoint_keys("partial:") == []
        assert store.events(kinds=["partial"]) == []
        assert store.get_vm("crashplan", "vm-partial") is None
        # the store is fully usable afterwards
        store.put_checkpoint("after", {"ok": True})
        store.upsert_vm("crashplan", "vm-after")
    if backend != "sqlite":
        return
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_many_threads_write_without_lock_errors(db: Path) -> None:
    """Threads share one store; two stores (two connections) contend through the busy timeout."""
    threads_per_store, writes = 6, 60
    errors: list[BaseException] = []
    with StateStore.open(db) as first, StateStore.open(db) as second:

        def work(store: StateStore, tag: str) -> None:
            try:
                for i in range(writes):
                    store.put_checkpoint(f"{tag}:{i}", {"i": i, "tag": tag})
                    store.append_event("write", tag=tag, i=i)
                    if i % 10 == 0:
                        assert store.get_checkpoint(f"{tag}:{i}") == {"i": i, "tag": tag}
            except BaseException as exc:  # collected and reported by the main thread
                errors.append(exc)

        threads = [
            threading.Thread(target=work, args=(store, f"{n}-{t}"))
            for n, store in enumerate((first, second))
            for t in range(threads_per_store)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(first.checkpoint_keys()) == 2 * threads_per_store * writes
        events = second.events(kinds=["write"])
        assert len(events) == 2 * threads_per_store * writes
        assert [e.id for e in events] == sorted(e.id for e in events)
        # each writer's own events appear in the order it wrote them
        for tag in {e.data["tag"] for e in events}:
            assert [e.data["i"] for e in events if e.data["tag"] == tag] == list(range(writes))


def test_processes_write_concurrently(db: Path, spawn: Callable[..., Any]) -> None:
    StateStore.open(db).close()
    procs = [spawn("write", str(db), "150", f"p{n}") for n in range(3)]
    for proc in procs:
        wait_line(proc, "done")
        assert proc.wait(timeout=60) == 0
    with StateStore.open(db) as store:
        assert len(store.checkpoint_keys()) == 450
        assert len(store.events(kinds=["write"])) == 450


def test_store_refuses_use_after_fork(db: Path) -> None:
    store = StateStore.open(db)
    pid = os.fork()
    if pid == 0:  # child: must refuse the parent's connection, then leave without cleanup
        try:
            store.get_checkpoint("k")
        except Exception as exc:  # noqa: BLE001
            os._exit(0 if "fork" in str(exc) else 2)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.put_checkpoint("k", {"parent": "still fine"})
    assert store.get_checkpoint("k") == {"parent": "still fine"}
    store.close()
