"""Benchmark rows of the agent's hot backup: a tracked round against a digest-scan round on a loop device.

Imported by ``bench/run.py`` (``--only agent``; needs root, losetup and tracefs,
else the rows are skipped with the reason).  Fixture: a ``--agent-size``
(default 4 GiB) image, every 1 MiB chunk written (half random bytes, half
text), attached as a loop device and served by ``scmt agent serve`` in its own
process (TLS, as in production).  One ``method: hot-backup`` VM of a plan
without vCenter is seeded through it (limits off), then, for each agent
configuration - the defaults (300Mbit, CPU 25%, storage share 30%) and no
limits - the agent is started afresh and:

* 1% of the chunks are written (4 KiB each, through the device), and a sync
  pass runs: the agent restarted, so the pass compares digests (the
  *digest-scan round*: it reads the whole disk on the source);
* ``--repeat`` times: 1% of the chunks are written again and a pass runs on
  the kernel's change tracking (the *tracked round*).

A round is one ``run_sync`` pass in this process (no interpreter start-up),
timed from the call to its return.  Each row reports what the agent read on
the source (``source_bytes_read``, as a share of the disk), the agent's CPU
seconds for the round (its own ``STATS``), and the agent's peak RSS (its
``STATS`` and ``wait4`` at exit).  Targets: a tracked round reads <= 2% of
the disk and takes <= 1/20 of the digest-scan round; agent peak RSS <= 100 MiB.
The target must equal the device at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
CHUNK = MiB  # the agent sync's chunk grid (services.migration.agentsync.AGENT_CHUNK_SIZE)
TOKEN = "bench-agent-token-0123456789abcdef"  # noqa: S105 - a benchmark's throw-away token


def unavailable() -> str:
    """Why this machine cannot run the agent rows ('' when it can)."""
    from scmt_cli.agent.tracking import find_tracefs

    if os.geteuid() != 0:
        return "needs root (loop devices, tracefs)"
    if shutil.which("losetup") is None:
        return "losetup is not installed"
    if find_tracefs() is None:
        return "tracefs with block events is not mounted (mount -t tracefs nodev /sys/kernel/tracing)"
    return ""


def make_image(path: Path, size: int) -> None:
    rnd = random.Random(3)  # noqa: S311 - reproducible fixture, not crypto
    text = (b"scmt agent benchmark: compressible text, repeated. " * 25000)[:MiB]
    with open(path, "wb") as fh:
        for i in range(size // MiB):
            fh.write(rnd.randbytes(MiB) if i % 2 else text)
        fh.flush()
        os.fsync(fh.fileno())


def change(dev: str, size: int, rnd: random.Random) -> int:
    """Write 4 KiB in 1% of the chunks through the device; the number of chunks changed."""
    chunks = rnd.sample(range(size // CHUNK), max(1, size // CHUNK // 100))
    fd = os.open(dev, os.O_WRONLY)
    try:
        for i in chunks:
            os.pwrite(fd, os.urandom(4096), i * CHUNK + rnd.randrange(0, CHUNK - 4096))
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(chunks)


class AgentProc:
    """``scmt agent serve`` on 127.0.0.1 serving ``dev``; :meth:`stop` ends it by pid and keeps its peak RSS."""

    def __init__(self, work: Path, dev: str, port: int, extra: list[str]) -> None:
        self.err = work / "agent.log"
        self.token = work / "agent.token"
        self.token.write_text(TOKEN + "\n")
        self.token.chmod(0o600)
        with open(self.err, "w") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scmt_cli", "--log-json", "agent", "serve", "--listen", f"127.0.0.1:{port}",
                 "--token-file", str(self.token), "--disk", f"sda={dev}", *extra],
                stdout=subprocess.DEVNULL, stderr=fh, env={**os.environ, "SCMT_STATE": str(work / "agent.db")})
        self.fingerprint = ""
        self.rss_kib = 0
        deadline = time.monotonic() + 60
        while not self.fingerprint and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited: {self.err.read_text()[-500:]}")
            for line in self.err.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("kind") == "agent_listening":
                    self.fingerprint = rec["fingerprint"]
            time.sleep(0.05)
        if not self.fingerprint:
            self.stop()
            raise RuntimeError("the agent did not start")

    def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            self.rss_kib = usage.ru_maxrss


PLAN = """\
version: 1
name: agentbench
target: {{type: dir, path: {target}}}
defaults: {{method: hot-backup}}
vms:
  - name: bench01
    agent: {{address: 127.0.0.1:{port}, token_file: {token}, fingerprint: {fp}}}
"""


def one_pass(plan: Path, state: Path) -> tuple[float, dict[str, Any]]:
    """One sync pass (a hot-backup round): its seconds and the VM's outcome."""
    from scmt_cli.events import NullReporter
    from scmt_cli.services.migration.context import open_context
    from scmt_cli.services.migration.sync import SyncRequest, run_sync
    from scmt_cli.state import StateStore

    store = StateStore.open(state)
    ctx = open_context(plan, store, NullReporter())
    try:
        t0 = time.perf_counter()
        out = run_sync(SyncRequest(plan), ctx).last["bench01"]
        secs = time.perf_counter() - t0
    finally:
        ctx.close()
        store.close()
    if not out.ok:
        raise RuntimeError(f"the sync pass failed: {out.error}")
    return secs, out.to_dict()


def run_agent(work: Path, size: int, repeat: int, rows: list[Any], notes: list[str]) -> None:
    """Add the agent rows (see the module doc) to ``rows``; problems go to ``notes``."""
    why = unavailable()
    if why:
        notes.append(f"agent rows skipped: {why}")
        return
    from scmt_cli.domain.units import format_size

    image, state, target = work / "agent-disk.img", work / "agent-state.db", work / "agent-target"
    t0 = time.perf_counter()
    make_image(image, size)
    dev = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True,
                         check=True).stdout.strip()
    print(f"agent fixture {image} on {dev}: {size / MiB:.0f} MiB, every chunk written "
          f"({time.perf_counter() - t0:.1f} s to build)", flush=True)
    rnd = random.Random(11)  # noqa: S311
    port = _free_port()
    plan = work / "agent-plan.yaml"
    configs = [("defaults", []), ("no limits", ["--bandwidth", "unlimited", "--cpu-limit", "100",
                                                "--storage-share", "100"])]
    peak_kib = 0

    def start(extra: list[str]) -> AgentProc:
        agent = AgentProc(work, dev, port, extra)
        plan.write_text(PLAN.format(target=target, port=port, token=agent.token, fp=agent.fingerprint))
        return agent

    try:
        agent = start(configs[1][1])
        try:
            secs, _ = one_pass(plan, state)
        finally:
            agent.stop()
            peak_kib = max(peak_kib, agent.rss_kib)
        print(f"agent seed: {format_size(size)} in {secs:.1f} s (no limits)", flush=True)
        for label, extra in configs:
            agent = start(extra)  # a fresh agent (a new tracking epoch): its first pass compares digests
            try:
                n = change(dev, size, rnd)
                scan_s, scan = one_pass(plan, state)
                if scan["disks"][0]["tracking"] != "scan":
                    notes.append(f"ERROR: agent {label}: the round after the agent's restart did not scan")
                tracked: list[tuple[float, dict[str, Any]]] = []
                for _ in range(repeat):
                    n = change(dev, size, rnd)
                    tracked.append(one_pass(plan, state))
                    if tracked[-1][1]["disks"][0]["mode"] != "tracked":
                        notes.append(f"ERROR: agent {label}: a round was not tracked "
                                     f"({tracked[-1][1]['disks'][0].get('tracking_reason')})")
            finally:
                agent.stop()
                peak_kib = max(peak_kib, agent.rss_kib)
            _rows(label, size, n, scan_s, scan, tracked, rows)
        rows.append(("agent peak RSS (wait4, every agent process)", "", "",
                     f"{peak_kib / 1024:.0f} MiB; target <= 100 MiB: {'ok' if peak_kib <= 100 * 1024 else 'OVER'}"))
        if subprocess.run(["cmp", "-s", str(image), str(target / "bench01" / "disk0.raw")]).returncode != 0:
            notes.append("ERROR: agent: the target differs from the device after the rounds")
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _rows(label: str, size: int, changed: int, scan_s: float, scan: dict[str, Any],
          tracked: list[tuple[float, dict[str, Any]]], rows: list[Any]) -> None:
    def read_note(out: dict[str, Any]) -> str:
        agent = out.get("agent") or {}
        paused = sum((agent.get("throttled_seconds") or {}).values())
        return (f"read {out['source_bytes_read'] / size * 100:.2f}% of the disk on the source, agent CPU "
                f"{agent.get('cpu_seconds', 0):.2f} s, paused {paused:.1f} s for limits, agent RSS "
                f"{(agent.get('peak_rss_bytes') or 0) / MiB:.0f} MiB")

    times = [t for t, _ in tracked]
    best, med = min(times), statistics.median(times)
    worst_read = max(out["source_bytes_read"] for _, out in tracked) / size * 100
    rows.append((f"agent {label}: digest-scan round (1% changed)", f"{scan_s:.2f} s", "", read_note(scan)))
    last = tracked[-1][1]
    rows.append((f"agent {label}: tracked round (1% = {changed} chunks)", f"{best:.2f} s", f"{med:.2f} s",
                 read_note(last) + f"; reads <= 2%: {'ok' if worst_read <= 2 else 'OVER TARGET'}"))
    ratio = scan_s / med
    rows.append((f"agent {label}: tracked / scan round", "", "",
                 f"1/{ratio:.0f} (median); target <= 1/20: {'ok' if ratio >= 20 else 'OVER TARGET'}; "
                 f"agent CPU per tracked round {statistics.median(o['agent']['cpu_seconds'] for _, o in tracked):.2f}"
                 f" s vs {scan['agent']['cpu_seconds']:.2f} s per scan round"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    """``python bench/agent.py [--size 4GiB] [--repeat 3]``: only the agent rows."""
    import argparse
    import tempfile

    from run import parse_size

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="4GiB")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scmt-bench-agent-", dir="/var/tmp"))
    rows: list[Any] = []
    notes: list[str] = []
    try:
        run_agent(work, parse_size(args.size), args.repeat, rows, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"at {dt.datetime.now().isoformat(timespec='seconds')}, load {os.getloadavg()[0]:.2f}")
    for name, best, med, note in rows:
        print(f"{name:<52} {best:>9} {med:>9}  {note}")
    for n in notes:
        print(n)
    return 1 if any(n.startswith("ERROR") for n in notes) else 0


if __name__ == "__main__":
    sys.exit(main())
