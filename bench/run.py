"""Benchmarks of ``scmt copy`` against cp and qemu-img (not tests; run ``nox -s bench`` or ``python bench/run.py``).

Fixture: a sparse raw image (default 2 GiB) about half allocated in 1 MiB
pieces; half of the allocated pieces are incompressible random bytes, half a
repeated text.  Generated here, never committed.

How every timed row is measured (so the comparison is fair):

* each tool runs ``--repeat`` times (default 5), round-robin, so load changes
  on the machine hit every tool alike; the table shows the best and the
  median run, and ratios for both;
* before every run the target is deleted and ``sync`` is called, so one run's
  writeback (and the filesystem's discard of the deleted target) is not billed
  to the next one; the source is read once beforehand and stays in the page
  cache for every tool (dropping caches would bill the disk's read speed, not
  the tool);
* every run ends with the target's data on disk: ``sync -d TARGET`` is part of
  the timed command for cp and qemu-img; ``scmt copy`` fdatasyncs the target
  itself before it exits;
* ``scmt`` runs as the installed console command would: a fresh interpreter,
  this package byte-compiled first (pip compiles at install time; without it
  every run would recompile ~50 modules, ~60 ms) and PYTHONDONTWRITEBYTECODE
  removed from the child's environment.

Rows (targets from issue 10; every ratio is against tools timed in the same run):

* startup: ``scmt copy`` and ``cp`` of a 64 MiB image holding 1 MiB of data,
  i.e. the fixed cost of each tool (interpreter, imports, CLI parsing, state
  store, exit) that the full-size rows include;
* file->file: ``cp --sparse=always``, ``qemu-img convert -O raw -W -m 8``,
  ``scmt copy``; target: scmt <= 1.1x qemu-img;
* NBD->file: nbdkit ``file`` plugin on 127.0.0.1 read by ``qemu-img convert
  -W -m 8``, ``nbdcopy`` and ``scmt copy`` (skipped when nbdkit is not
  installed); target: scmt <= 1.1x qemu-img;
* remote (``--only remote``, :mod:`remote`): nbdkit behind ``--filter=delay
  rdelay=2ms`` and ``rdelay=10ms`` (target: scmt <= 1.0x the faster of
  qemu-img and nbdcopy), behind ``--filter=rate rate=400M`` (target: scmt >=
  95% of the rate), and the fake vCenter's ``/folder`` with 2 ms per GET
  (target: >= 80% of the same disk read over NBD with 2 ms);
* in flight (``--only inflight``, :mod:`inflight`): ``scmt copy --in-flight``
  4/8/16/32 over NBD at 0, 2 and 10 ms and file->file, the measurement behind
  the defaults (not part of the default set);
* incremental, 1% of the chunks changed: ``scmt copy --since`` (reads and
  hashes the source, writes the changes) and the CBT path
  (:func:`scmt_cli.blocks.api.changed_copy` with the changed extents: reads
  only them, timed in-process without interpreter start-up); target: within 2x
  of changed-bytes / full-copy throughput plus a small constant;
* peak RSS: every timed row shows the largest resident set of its tool over
  its runs (for a ``sh -c 'tool && sync'`` row, the largest process of it);
  every scmt row must stay <= 150 MiB (an ERROR note otherwise);
* state store (``--only store``, :mod:`store`): operations per second on
  SQLite and PostgreSQL and the store's time per VM pass;
* agent hot backup (``--only agent``, ``bench/agent.py``, root only): on a
  4 GiB loop device with 1% of the chunks changed, a tracked round against a
  digest-scan round, with the agent's defaults and without limits; targets: a
  tracked round reads <= 2% of the disk on the source and takes <= 1/20 of the
  scan round; agent peak RSS <= 100 MiB; agent CPU per round reported.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

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
    """Delete ``path`` and sync, so the next run starts with no writeback pending."""
    if path.exists():
        path.unlink()
    subprocess.run(["sync"], check=False)


def child_env() -> dict[str, str]:
    """The environment of timed children: like an installed console script (bytecode caches used)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_package() -> None:
    """Byte-compile scmt_cli as ``pip install`` does, so no run pays for compiling our modules."""
    import compileall

    import scmt_cli

    compileall.compile_dir(os.path.dirname(scmt_cli.__file__), quiet=1)


def timed(cmd: list[str]) -> tuple[float, int]:
    """Run ``cmd``; return (seconds, peak RSS KiB of the child)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env())
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-500:]}")
    return secs, usage.ru_maxrss


class Runs:
    """Timings of one command over several runs."""

    def __init__(self) -> None:
        self.secs: list[float] = []
        self.rss_kib = 0

    @property
    def best(self) -> float:
        return min(self.secs)

    @property
    def median(self) -> float:
        return statistics.median(self.secs)


def interleaved(n: int, prepare: Callable[[], None], cmds: dict[str, list[str]],
                check: Callable[[str], None] | None = None) -> dict[str, Runs]:
    """Run every command ``n`` times, round-robin (so load changes hit all alike).

    ``check(what)`` runs after every run of ``scmt`` (untimed), while its copy is still the target.
    """
    out = {name: Runs() for name in cmds}
    for i in range(n):
        for name, cmd in cmds.items():
            prepare()
            secs, rss = timed(cmd)
            out[name].secs.append(secs)
            out[name].rss_kib = max(out[name].rss_kib, rss)
            if check is not None and name == "scmt":
                check(f"run {i + 1}")
    return out


IN_FLIGHT: list[str] = []  # ["--in-flight", "N"] when the bench is run with --in-flight


def scmt_cmd(*args: str, state: Path) -> list[str]:
    return [sys.executable, "-m", "scmt_cli", "--state", str(state), "-q", "copy", *IN_FLIGHT, *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nbdkit:
    """nbdkit's file plugin serving ``path`` read-only on 127.0.0.1 (stopped by pid), behind ``filters``."""

    def __init__(self, path: Path, filters: tuple[str, ...] = (), params: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["nbdkit", "--foreground", "--exit-with-parent", "-r", "-i", "127.0.0.1", "-p", str(self.port),
             *(f"--filter={f}" for f in filters), "file", str(path), *params],
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


Row = tuple[str, str, str, str, str]  # name, best, median, peak RSS, note
RSS_LIMIT_MIB = 150
RSS_ERRORS: list[str] = []  # scmt rows over the limit, turned into ERROR notes at the end


def time_row(name: str, runs: Runs, note: str = "", *, limit: bool | None = None) -> Row:
    """A table row; ``limit`` (default: an scmt row) checks the peak RSS against RSS_LIMIT_MIB."""
    return rss_row(name, f"{runs.best:.2f} s", f"{runs.median:.2f} s", runs.rss_kib, note,
                   limit="scmt" in name if limit is None else limit)


def rss_row(name: str, best: str, median: str, rss_kib: int, note: str = "", *, limit: bool) -> Row:
    mib = rss_kib / 1024
    if limit and mib > RSS_LIMIT_MIB:
        RSS_ERRORS.append(f"ERROR: {name}: peak RSS {mib:.0f} MiB is over the {RSS_LIMIT_MIB} MiB limit")
    return (name, best, median, f"{mib:.0f} MiB" if rss_kib else "", note)


def ratio_note(ours: Runs, refs: dict[str, Runs], target: float) -> str:
    """Ratios to the fastest reference, best against best and median against median."""
    best_name = min(refs, key=lambda k: refs[k].best)
    med_name = min(refs, key=lambda k: refs[k].median)
    best, med = ours.best / refs[best_name].best, ours.median / refs[med_name].median
    flag = "ok" if med <= target else "OVER TARGET"
    return f"{best:.2f}x best ({best_name}), {med:.2f}x median ({med_name}); target <= {target}: {flag}"


def warm(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(16 * MiB):
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="2GiB")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="work directory (default: a new one under /var/tmp)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only", choices=["file", "nbd", "remote", "inflight", "incremental", "store", "agent"],
                    action="append", help="run only these parts (repeatable; default: all but inflight)")
    ap.add_argument("--agent-size", default="4GiB", help="size of the agent rows' loop device (bench/agent.py)")
    ap.add_argument("--in-flight", type=int, default=None,
                    help="scmt copy --in-flight for every scmt row (default: scmt's own default)")
    args = ap.parse_args(argv)
    parts = set(args.only or ["file", "nbd", "remote", "incremental", "store", "agent"])
    if args.in_flight:
        IN_FLIGHT[:] = ["--in-flight", str(args.in_flight)]
    size = parse_size(args.size)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="scmt-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    src, dst, state = work / "src.img", work / "dst.img", work / "state.db"
    rows: list[Row] = []
    notes: list[str] = []
    full_rate = 0.0
    try:
        compile_package()
        allocated = 0
        small = work / "small.img"
        if parts - {"agent", "store"}:  # the store and agent rows need no copy fixture
            t0 = time.perf_counter()
            allocated = make_fixture(src, size)
            print(f"fixture {src}: {size / MiB:.0f} MiB, {allocated / MiB:.0f} MiB allocated "
                  f"({time.perf_counter() - t0:.1f} s to build); {args.repeat} runs per tool", flush=True)
            with open(small, "wb") as fh:
                fh.truncate(64 * MiB)
                fh.write(os.urandom(MiB))
            warm(src)
            warm(small)

        def prep() -> None:
            drop(dst)

        def check_same(what: str) -> None:
            if subprocess.run(["cmp", "-s", str(src), str(dst)]).returncode != 0:
                notes.append(f"ERROR: {what}: the copy differs from the source")

        if "file" in parts:
            sres = interleaved(args.repeat, prep, {
                "cp": ["sh", "-c", f'cp --sparse=always "{small}" "{dst}" && sync -d "{dst}"'],
                "scmt": scmt_cmd(f"file://{small}", f"file://{dst}", state=state),
            })
            rows.append(time_row("startup: cp, 64 MiB image, 1 MiB data", sres["cp"]))
            rows.append(time_row("startup: scmt copy, same image", sres["scmt"],
                                 "fixed cost included in every scmt row below"))
            res = interleaved(args.repeat, prep, {
                "cp": ["sh", "-c", f'cp --sparse=always "{src}" "{dst}" && sync -d "{dst}"'],
                "qemu": ["sh", "-c", f'qemu-img convert -O raw -W -m 8 "{src}" "{dst}" && sync -d "{dst}"'],
                "scmt": scmt_cmd(f"file://{src}", f"file://{dst}", state=state),
            }, check=lambda run: check_same(f"file->file scmt copy, {run}"))
            cp_r, q_r, s_r = res["cp"], res["qemu"], res["scmt"]
            rows.append(time_row("file->file cp --sparse=always + sync", cp_r))
            rows.append(time_row("file->file qemu-img convert -W -m 8 + sync", q_r))
            rows.append(time_row("file->file scmt copy", s_r, ratio_note(s_r, {"qemu-img": q_r}, 1.1)))
            full_rate = size / s_r.median

        if "nbd" in parts:
            if shutil.which("nbdkit") is not None:
                srv = Nbdkit(src)
                try:
                    ncmds = {
                        "qemu": ["sh", "-c", f'qemu-img convert -f raw -O raw -W -m 8 "{srv.url}" "{dst}" '
                                             f'&& sync -d "{dst}"'],
                        "scmt": scmt_cmd(srv.url, f"file://{dst}", state=state),
                    }
                    if shutil.which("nbdcopy") is not None:
                        ncmds["nbdcopy"] = ["sh", "-c", f'nbdcopy "{srv.url}" "{dst}" && sync -d "{dst}"']
                    nres = interleaved(args.repeat, prep, ncmds,
                                       check=lambda run: check_same(f"nbd->file scmt copy, {run}"))
                finally:
                    srv.stop()
                rows.append(time_row("nbd->file qemu-img convert -W -m 8 + sync", nres["qemu"]))
                if "nbdcopy" in nres:
                    rows.append(time_row("nbd->file nbdcopy + sync", nres["nbdcopy"]))
                rows.append(time_row("nbd->file scmt copy", nres["scmt"],
                                     ratio_note(nres["scmt"], {"qemu-img": nres["qemu"]}, 1.1)))
            else:
                notes.append("nbd->file skipped: nbdkit not installed")

        if "remote" in parts:
            from remote import run_remote

            run_remote(ctx_for(src, dst, state, args.repeat, allocated, prep, check_same), rows, notes,
                       args.in_flight or 16)

        if "inflight" in parts:
            from inflight import run_inflight

            run_inflight(ctx_for(src, dst, state, args.repeat, allocated, prep, check_same), rows, notes)

        if "incremental" in parts:
            notes.extend(incremental_rows(src, dst, state, size, full_rate, rows))

        if "store" in parts:  # the state store's cost (bench/store.py): SQLite and PostgreSQL
            from store import run as run_store

            rows.extend((name, a, b, "", note) for name, a, b, note in run_store(400, 3, want_pg=True))

        if "agent" in parts:
            from agent import run_agent

            drop(dst)
            agent_rows: list[tuple[str, str, str, str]] = []  # its rows carry their RSS in the note
            run_agent(work, parse_size(args.agent_size), args.repeat, agent_rows, notes)
            rows.extend((name, a, b, "", note) for name, a, b, note in agent_rows)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"machine: {machine_line()}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"{'benchmark':<46} {'best':>9} {'median':>9} {'peak RSS':>9}  note")
    for name, best, med, rss, note in rows:
        print(f"{name:<46} {best:>9} {med:>9} {rss:>9}  {note}")
    for n in notes + RSS_ERRORS:
        print(n)
    notes += RSS_ERRORS
    return 1 if any(n.startswith("ERROR") for n in notes) else 0


def ctx_for(src: Path, dst: Path, state: Path, repeat: int, allocated: int, prep: Callable[[], None],
            check_same: Callable[[str], None]) -> SimpleNamespace:
    """What the row modules (remote.py, inflight.py) use of this one."""
    return SimpleNamespace(src=src, dst=dst, state=state, repeat=repeat, allocated=allocated, prep=prep,
                           Nbdkit=Nbdkit, interleaved=interleaved, time_row=time_row, rss_row=rss_row,
                           ratio_note=ratio_note, check_same=check_same,
                           scmt_cmd=lambda *a, state: scmt_cmd(*a, state=state))


def incremental_rows(src: Path, dst: Path, state: Path, size: int, full_rate: float, rows: list[Row]) -> list[str]:
    """Change 1% of the chunks, time ``--since`` and the CBT path; return notes."""
    notes: list[str] = []
    drop(dst)
    man = work_file(src, "m1.json")
    secs, _ = timed(scmt_cmd(f"file://{src}", f"file://{dst}", "--manifest", str(man), state=state))
    if not full_rate:
        full_rate = size / secs
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
                              str(work_file(src, "m2.json")), state=state))
    changed_bytes = len(changed) * CHUNK
    budget = 2 * changed_bytes / full_rate
    rows.append((f"incremental --since ({len(changed)} chunks changed)", f"{inc_t:.2f} s", "", "",
                 "reads and hashes the whole source"))
    cbt_t = run_cbt(src, dst, changed)
    rows.append(("incremental CBT changed_copy (same changes)", f"{cbt_t:.3f} s", "", "",
                 f"2x changed-bytes budget {budget:.3f} s (+ small constant), in-process"))
    if subprocess.run(["cmp", "-s", str(src), str(dst)]).returncode != 0:
        notes.append("ERROR: incremental copy produced a different image")
    return notes


def work_file(src: Path, name: str) -> Path:
    return src.with_name(name)


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


def machine_line() -> str:
    """CPUs, CPU model, RAM, kernel, Python and the filesystem of the work directory."""
    import platform

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({model or 'unknown model'}), {mem:.0f} GiB RAM, "
            f"{platform.platform(terse=True)}, Python {platform.python_version()}")


if __name__ == "__main__":
    sys.exit(main())
