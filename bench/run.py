"""Benchmarks of ``scmt copy`` against cp and qemu-img (not tests; run ``nox -s bench`` or ``python bench/run.py``).

Fixture: a sparse raw image (default 2 GiB) about half allocated in 1 MiB
pieces; half of the allocated pieces are incompressible random bytes, half a
repeated text.  Generated here, never committed.

Rows (best of ``--repeat`` runs done round-robin, page cache warm for the source, each run
starting from a synced system and ending with the target's data on disk:
``sync -d TARGET`` is part of the timed command for cp and qemu-img, scmt
flushes itself):

* file->file: ``cp --sparse=always``, ``qemu-img convert -O raw -W -m 8``,
  ``scmt copy``; target: scmt within 1.25x of the faster reference;
* NBD->file: nbdkit ``file`` plugin on 127.0.0.1 read by ``qemu-img convert``
  and by ``scmt copy`` (skipped when the NBD transport is not installed);
  target: ratio <= 1.0;
* incremental, 1% of the chunks changed: ``scmt copy --since`` (reads and
  hashes the source, writes the changes) and the CBT path
  (:func:`scmt_cli.blocks.api.changed_copy` with the changed extents: reads
  only them); target: within 2x of changed-bytes / full-copy throughput plus
  a small constant;
* peak RSS of ``scmt copy`` on the fixture; target < 150 MiB.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MiB = 1024 * 1024
CHUNK = 4 * MiB


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def make_fixture(path: Path, size: int, seed: int = 42) -> int:
    """Write the sparse fixture; return the allocated bytes."""
    rnd = random.Random(seed)  # noqa: S311 - reproducible fixture, not crypto
    text = (b"scmt benchmark: compressible text block, repeated. " * 25000)[:MiB]
    allocated = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for off in range(0, size, MiB):
            if rnd.random() < 0.5:
                os.pwrite(fd, os.urandom(MiB) if rnd.random() < 0.5 else text, off)
                allocated += MiB
        os.fsync(fd)
    finally:
        os.close(fd)
    return allocated


def drop(path: Path) -> None:
    if path.exists():
        path.unlink()
    subprocess.run(["sync"], check=False)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run ``cmd``; return (seconds, peak RSS KiB of the child)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-500:]}")
    return secs, usage.ru_maxrss


def interleaved(n: int, prepare: Callable[[], None], cmds: dict[str, list[str]]) -> dict[str, tuple[float, int]]:
    """Run every command ``n`` times, round-robin (so load changes hit all alike); best time and max RSS each."""
    out: dict[str, tuple[float, int]] = {}
    for _ in range(n):
        for name, cmd in cmds.items():
            prepare()
            secs, rss = timed(cmd)
            old = out.get(name)
            out[name] = (min(secs, old[0]), max(rss, old[1])) if old else (secs, rss)
    return out


def scmt_cmd(*args: str, state: Path) -> list[str]:
    return [sys.executable, "-m", "scmt_cli", "--state", str(state), "-q", "copy", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nbdkit:
    """nbdkit's file plugin serving ``path`` read-only on 127.0.0.1 (stopped by pid)."""

    def __init__(self, path: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["nbdkit", "--foreground", "--exit-with-parent", "-r", "-i", "127.0.0.1", "-p", str(self.port),
             "file", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nbdkit did not start")

    @property
    def url(self) -> str:
        return f"nbd://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="2GiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="work directory (default: a new one under /var/tmp)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="scmt-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    src, dst, state = work / "src.img", work / "dst.img", work / "state.db"
    rows: list[tuple[str, float, str]] = []
    notes: list[str] = []
    try:
        t0 = time.perf_counter()
        allocated = make_fixture(src, size)
        print(f"fixture {src}: {size / MiB:.0f} MiB, {allocated / MiB:.0f} MiB allocated "
              f"({time.perf_counter() - t0:.1f} s to build)", flush=True)
        with open(src, "rb") as fh:  # warm the page cache once
            while fh.read(16 * MiB):
                pass

        def prep() -> None:
            drop(dst)

        cmds = {
            "cp": ["sh", "-c", f'cp --sparse=always "{src}" "{dst}" && sync -d "{dst}"'],
            "qemu": ["sh", "-c", f'qemu-img convert -O raw -W -m 8 "{src}" "{dst}" && sync -d "{dst}"'],
            "scmt": scmt_cmd(f"file://{src}", f"file://{dst}", state=state),
        }
        res = interleaved(args.repeat, prep, cmds)
        cp_t, q_t, (s_t, rss) = res["cp"][0], res["qemu"][0], res["scmt"]
        rows.append(("file->file cp --sparse=always", cp_t, ""))
        rows.append(("file->file qemu-img convert -W -m 8", q_t, ""))
        ref = min(cp_t, q_t)
        rows.append(("file->file scmt copy", s_t, f"{s_t / ref:.2f}x of fastest reference (target <= 1.25)"))
        if subprocess.run(["cmp", "-s", str(src), str(dst)]).returncode != 0:
            notes.append("ERROR: scmt copy produced a different image")
        rows.append(("peak RSS scmt copy (MiB)", rss / 1024, "target < 150"))

        # NBD -> file
        try:
            import scmt_cli.transports.nbd  # noqa: F401

            have_nbd = shutil.which("nbdkit") is not None
        except ModuleNotFoundError:
            have_nbd = False
        if have_nbd:
            srv = Nbdkit(src)
            try:
                nres = interleaved(args.repeat, prep, {
                    "qemu": ["sh", "-c", f'qemu-img convert -f raw -O raw -W -m 8 "{srv.url}" "{dst}" '
                                         f'&& sync -d "{dst}"'],
                    "scmt": scmt_cmd(srv.url, f"file://{dst}", state=state),
                })
                qn_t, sn_t = nres["qemu"][0], nres["scmt"][0]
                rows.append(("nbd->file qemu-img convert", qn_t, ""))
                rows.append(("nbd->file scmt copy", sn_t, f"{sn_t / qn_t:.2f}x of qemu-img (target <= 1.0)"))
            finally:
                srv.stop()
        else:
            notes.append("nbd->file skipped: scmt_cli.transports.nbd or nbdkit not available")

        # Incremental: 1% of the chunks changed.
        drop(dst)
        man = work / "m1.json"
        timed(scmt_cmd(f"file://{src}", f"file://{dst}", "--manifest", str(man), state=state))
        nchunks = size // CHUNK
        rnd = random.Random(7)  # noqa: S311
        changed = sorted(rnd.sample(range(nchunks), max(1, nchunks // 100)))
        fd = os.open(src, os.O_WRONLY)
        try:
            for i in changed:
                os.pwrite(fd, os.urandom(4096), i * CHUNK + 12345)
        finally:
            os.close(fd)
        subprocess.run(["sync"], check=False)
        inc_t, _ = timed(scmt_cmd(f"file://{src}", f"file://{dst}", "--since", str(man), "--manifest",
                                  str(work / "m2.json"), state=state))
        changed_bytes = len(changed) * CHUNK
        full_rate = size / s_t
        budget = 2 * changed_bytes / full_rate
        rows.append((f"incremental --since ({len(changed)} chunks changed)", inc_t,
                     f"reads the whole source; changed-bytes budget {budget:.2f} s"))
        cbt_t = run_cbt(src, dst, changed)
        rows.append(("incremental CBT changed_copy (same changes)", cbt_t,
                     f"{cbt_t / max(budget, 1e-9):.2f}x of 2x changed-bytes budget {budget:.3f} s "
                     f"(+ small constant)"))
        if subprocess.run(["cmp", "-s", str(src), str(dst)]).returncode != 0:
            notes.append("ERROR: incremental copy produced a different image")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"machine: {os.cpu_count()} CPUs, {platform_line()}")
    print(f"{'benchmark':<48} {'value':>9}  note")
    for name, val, note in rows:
        unit = "" if "RSS" in name else " s"
        print(f"{name:<48} {val:>7.2f}{unit:2}  {note}")
    for n in notes:
        print(n)
    return 1 if any(n.startswith("ERROR") for n in notes) else 0


def run_cbt(src: Path, dst: Path, changed: list[int]) -> float:
    """Time the CBT path in a child process (fresh interpreter, like a CLI run)."""
    code = (
        "import sys,time\n"
        "from scmt_cli.transports.base import open_source, open_target, Extent\n"
        "from scmt_cli.blocks.api import changed_copy\n"
        "t=time.perf_counter()\n"
        f"s=open_source('file://{src}'); d=open_target('file://{dst}', size=s.size)\n"
        f"ext=[Extent(i*{CHUNK}, {CHUNK}) for i in {changed!r}]\n"
        "changed_copy(s, d, ext)\n"
        "print(time.perf_counter()-t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def platform_line() -> str:
    import platform

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{mem:.0f} GiB RAM, {platform.platform(terse=True)}, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
