"""Subprocess side of the state-store tests: ``worker.py COMMAND DB [ARGS]``.

Commands print one line when they reach the interesting point, then wait for
stdin to close (or to be killed):

* ``hold RESOURCE LEASE``     acquire a lock, print ``held <pid>``, release when stdin closes;
* ``try RESOURCE``            try the lock once, print ``acquired`` or ``locked <message>``;
* ``crash``                   commit one checkpoint, open a transaction writing many rows,
                              print ``inside``, sleep (the test SIGKILLs it);
* ``write N TAG``             write N checkpoints and N events, print ``done``.
"""

from __future__ import annotations

import os
import sys
import time

from scmt_cli.errors import LockedError
from scmt_cli.state import StateStore


def main() -> None:
    command, db = sys.argv[1], sys.argv[2]
    store = StateStore.open(db)
    if command == "hold":
        with store.lock(sys.argv[3], lease_seconds=float(sys.argv[4])):
            print(f"held {os.getpid()}", flush=True)
            sys.stdin.read()
    elif command == "try":
        try:
            with store.lock(sys.argv[3]):
                print("acquired", flush=True)
        except LockedError as exc:
            print(f"locked {exc.message}", flush=True)
    elif command == "crash":
        store.put_checkpoint("committed", {"n": 1})
        store.record_plan("crashplan", "/plans/p.yaml", "cd" * 32)
        with store.atomic():
            store.upsert_vm("crashplan", "vm-partial")
            for i in range(50):
                store.put_checkpoint(f"partial:{i}", {"i": i, "pad": "x" * 2000})
                store.append_event("partial", n=i)
            print("inside", flush=True)
            time.sleep(120)
    elif command == "write":
        count, tag = int(sys.argv[3]), sys.argv[4]
        for i in range(count):
            store.put_checkpoint(f"{tag}:{i}", {"i": i})
            store.append_event("write", tag=tag, i=i)
        print("done", flush=True)
    else:
        raise SystemExit(f"unknown command {command}")
    store.close()


if __name__ == "__main__":
    main()
