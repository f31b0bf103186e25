"""Benchmark rows at a distance: NBD behind nbdkit's delay and rate filters, and the fake vCenter's /folder.

Imported by ``bench/run.py`` (``--only remote``); every row runs the tools
round-robin on the same export in the same run, like the rows of ``run.py``.

* ``rdelay=2ms`` / ``rdelay=10ms``: nbdkit ``file`` + ``--filter=delay`` on
  127.0.0.1, read by ``qemu-img convert -W -m 8``, ``nbdcopy`` and ``scmt
  copy`` (all three followed by, or doing, an fdatasync of the target);
  target: scmt <= 1.0x the faster reference.
* ``rate=400M``: nbdkit ``--filter=rate rate=400M`` (400 Mbit/s, the whole
  server).  The filter starts with a full bucket (2 s of credit), so before
  every run the bench drains it by reading 2 s worth of data; the rate of a
  run is the allocated bytes it read over its wall time.  Target: scmt >= 95%.
* ``/folder 2 ms``: the fake vCenter's HTTPS ``/folder`` endpoint in its own
  process with 2 ms added to every GET, read by the engine through
  :class:`~scmt_cli.vsphere.folder.FolderDiskSource` (with the allocated
  extents, as CBT ``"*"`` gives them), against the same fixture read through
  the NBD client from nbdkit with ``rdelay=2ms``; both timed in a child
  process in the same way (no CLI start-up).  Target: folder >= 80% of NBD.
  Both rows print the client's CPU seconds and the /folder row the fake
  vCenter's, since on one machine the server's TLS competes for the same cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
RATE_BITS = 400 * 1024 * 1024  # rate=400M: nbdkit counts bits per second, with binary multipliers
BURST_SECONDS = 2.0  # nbdkit-rate-filter's default burstiness


def _refs(src_url: str, dst: Path) -> dict[str, list[str]]:
    return {
        "qemu-img": ["sh", "-c", f'qemu-img convert -f raw -O raw -W -m 8 "{src_url}" "{dst}" && sync -d "{dst}"'],
        "nbdcopy": ["sh", "-c", f'nbdcopy "{src_url}" "{dst}" && sync -d "{dst}"'],
    }


def drain(url: str, nbytes: int) -> None:
    """Read ``nbytes`` from the export so nbdkit's rate bucket starts the next run empty."""
    from scmt_cli.transports.nbd import NbdDisk

    disk = NbdDisk(url, connections=1)
    try:
        buf = memoryview(bytearray(4 * MiB))
        pos = 0
        while pos < nbytes:
            n = min(len(buf), nbytes - pos, disk.size - pos % disk.size)
            disk.readinto(pos % disk.size, buf[:n])
            pos += n
    finally:
        disk.close()


def nbd_rows(ctx: Any, rows: list[Any], notes: list[str]) -> None:
    """The delay and rate rows (``ctx``: run.py's namespace of helpers and paths)."""
    missing = [t for t in ("nbdkit", "nbdcopy", "qemu-img") if shutil.which(t) is None]
    if missing:
        notes.append(f"remote NBD rows skipped: {', '.join(missing)} not installed")
        return
    src, dst, state = ctx.src, ctx.dst, ctx.state
    for delay in ("2ms", "10ms"):
        srv = ctx.Nbdkit(src, filters=("delay",), params=(f"rdelay={delay}",))
        try:
            cmds = _refs(srv.url, dst)
            cmds["scmt"] = ctx.scmt_cmd(srv.url, f"file://{dst}", state=state)
            res = ctx.interleaved(ctx.repeat, ctx.prep, cmds,
                                  check=lambda run, d=delay: ctx.check_same(f"nbd rdelay={d} scmt copy, {run}"))
        finally:
            srv.stop()
        for name in ("qemu-img", "nbdcopy"):
            rows.append(ctx.time_row(f"nbd rdelay={delay} {name}", res[name]))
        s = res["scmt"]
        refs = {k: res[k] for k in ("qemu-img", "nbdcopy")}
        rows.append(ctx.time_row(f"nbd rdelay={delay} scmt copy", s, ctx.ratio_note(s, refs, 1.0)))

    srv = ctx.Nbdkit(src, filters=("rate",), params=("rate=400M",))
    rate = RATE_BITS / 8
    try:
        cmds = _refs(srv.url, dst)
        cmds["scmt"] = ctx.scmt_cmd(srv.url, f"file://{dst}", state=state)

        def prep() -> None:
            ctx.prep()
            drain(srv.url, int(rate * BURST_SECONDS))

        res = ctx.interleaved(ctx.repeat, prep, cmds,
                              check=lambda run: ctx.check_same(f"nbd rate=400M scmt copy, {run}"))
    finally:
        srv.stop()
    for name, runs in res.items():
        pct = ctx.allocated / runs.median / rate * 100
        best = ctx.allocated / runs.best / rate * 100
        note = f"{best:.0f}% of the rate best, {pct:.0f}% median"
        if name == "scmt":
            note += f"; target >= 95%: {'ok' if pct >= 95 else 'UNDER TARGET'}"
        rows.append(ctx.time_row(f"nbd rate=400M {name}", runs, note))


# --------------------------------------------------------------------------- /folder

_SERVER = r"""
import sys, time
from pathlib import Path
from scmt_cli.lab.server import FakeHttpServer
root = Path(sys.argv[1])
srv = FakeHttpServer(root, lambda ds, rel: None, user="bench", password="bench-pw", info={"name": "bench"}, tls=True)
srv.delay = float(sys.argv[2])
url = srv.start()
print(url, srv.thumbprint, flush=True)
sys.stdin.read()
srv.stop()
"""

_CLIENT = r"""
import json, os, sys, time, resource
import httpx
from scmt_cli.blocks.api import full_copy
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.transports.base import open_source, open_target
from scmt_cli.vsphere.tls import make_ssl_context
kind, where, src, dst, in_flight = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
t0 = time.perf_counter()
if kind == "folder":
    from scmt_cli.vsphere.folder import FolderDiskSource, FolderSession
    base, thumb = where.split(" ")
    ctx = make_ssl_context(thumbprint=thumb, ca_file=None, insecure=False)
    with httpx.Client(verify=ctx) as c:
        r = c.post(base + "/sdk/login", json={"user": "bench", "password": "bench-pw"})
        token = r.cookies.get("vmware_soap_session").strip('"')
    session = FolderSession(base, ctx, lambda: f'vmware_soap_session="{token}"', connections=in_flight)
    with open_source("file://" + src) as f:
        allocated = [e for e in f.extents() if e.kind == "data"]
    source = FolderDiskSource(session, "dc1", "[ds1] vm/vm-flat.vmdk", os.path.getsize(src), allocated=allocated)
else:
    source = open_source(where)
target = open_target("file://" + dst, size=source.size)
out = full_copy(source, target, options=CopyOptions(in_flight=in_flight))
target.close()
source.close()
secs = time.perf_counter() - t0
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": secs, "bytes_read": out.stats.bytes_read, "rss_kib": use.ru_maxrss,
                  "cpu_s": use.ru_utime + use.ru_stime}))
"""


def _child(args: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", _CLIENT, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"bench client failed: {out.stderr.strip()[-800:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process (the fake vCenter's share of a /folder run)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def folder_rows(ctx: Any, rows: list[Any], notes: list[str], in_flight: int) -> None:
    """The /folder row against NBD with the same 2 ms per request."""
    try:
        import scmt_cli.lab.server  # noqa: F401
    except ImportError:
        notes.append("/folder row skipped: scmt_cli.lab.server is not available")
        return
    if shutil.which("nbdkit") is None:
        notes.append("/folder row skipped: nbdkit not installed")
        return
    src, dst = ctx.src, ctx.dst
    root = src.parent / "folder-root"
    (root / "ds1" / "vm").mkdir(parents=True, exist_ok=True)
    flat = root / "ds1" / "vm" / "vm-flat.vmdk"
    if not flat.exists():
        flat.symlink_to(src)
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(root), "0.002"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    nbd = ctx.Nbdkit(src, filters=("delay",), params=("rdelay=2ms",))
    try:
        assert server.stdout is not None
        where = server.stdout.readline().strip()
        if not where:
            raise RuntimeError("the fake vCenter did not start")
        runs: dict[str, list[dict[str, Any]]] = {"folder": [], "nbd": []}
        for i in range(ctx.repeat):
            for kind, addr in (("folder", where), ("nbd", nbd.url)):
                ctx.prep()
                served = _cpu_seconds(server.pid)
                runs[kind].append(_child([kind, addr, str(src), str(dst), str(in_flight)]))
                runs[kind][-1]["server_cpu_s"] = _cpu_seconds(server.pid) - served if kind == "folder" else None
                ctx.check_same(f"{kind} 2 ms engine in-process, run {i + 1}")  # before the next run overwrites it
    finally:
        nbd.stop()
        if server.stdin is not None:
            server.stdin.close()
        server.wait(10)
    med: dict[str, float] = {}
    labels = (("nbd", "nbd rdelay=2ms, engine in-process"), ("folder", "/folder +2 ms/GET, engine in-process"))
    for kind, label in labels:
        secs = sorted(r["seconds"] for r in runs[kind])
        med[kind] = secs[len(secs) // 2]
        rate = runs[kind][0]["bytes_read"] / med[kind] / MiB
        rss = max(r["rss_kib"] for r in runs[kind]) / 1024
        cpu = sorted(r["cpu_s"] for r in runs[kind])
        note = f"{rate:.0f} MiB/s of data median; client CPU {cpu[0]:.2f}-{cpu[-1]:.2f} s"
        if kind == "folder":
            srv = sorted(r["server_cpu_s"] for r in runs[kind])
            note += f", fake vCenter CPU {srv[0]:.2f}-{srv[-1]:.2f} s"
            pct = med["nbd"] / med["folder"] * 100
            note += f"; {pct:.0f}% of NBD's throughput, target >= 80%: {'ok' if pct >= 80 else 'UNDER TARGET'}"
        rows.append(ctx.rss_row(label, f"{secs[0]:.2f} s", f"{med[kind]:.2f} s", int(rss * 1024), note, limit=True))


def run_remote(ctx: Any, rows: list[Any], notes: list[str], in_flight: int) -> None:
    nbd_rows(ctx, rows, notes)
    folder_rows(ctx, rows, notes, in_flight)

