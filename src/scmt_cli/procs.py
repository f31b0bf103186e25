"""Every child process scmt starts, supervised: one process group each, one registry, stopped on exit.

API (the whole of it)::

    from scmt_cli import procs

    res = procs.run(argv, name="virt-v2v-in-place", timeout=3600, stall_timeout=600,
                    on_line=fn, on_heartbeat=hb, heartbeat_every=30, cancel=ctx.cancel.check,
                    env=None, cwd=None, merge_stderr=True, keep_lines=40, pass_fds=())
    res.ok / res.exit_code / res.timed_out / res.stalled / res.seconds
    res.lines           # the last ``keep_lines`` lines (redacted), oldest first
    res.output          # the last OUTPUT_LIMIT characters (redacted, "[... N bytes cut ...]" first)
    res.last_line()     # the last non-empty stderr line, else stdout line, else "no output"
    res.describe()      # "exit 3", "timed out after 60 s", "stalled: no output for 600 s", ...

    child = procs.spawn(argv, name="nbdkit", stdout=False)  # a long-running server
    child.pid; child.poll(); child.wait(timeout); child.stop(grace=5.0); child.result()
    with procs.spawn(...) as child: ...                        # stop() on leaving the block

    procs.live()        # children started and not yet reaped (any thread)
    procs.stop_all()    # stop and reap them all; cli/main.py calls it before scmt exits

Contract:

* a child runs without a shell, with stdin closed (``/dev/null``), in a new
  session (its own process group, so a terminal's Ctrl-C reaches scmt only and
  scmt decides how its children stop), with every inherited descriptor closed
  except ``pass_fds``;
* stdout and stderr are read by one daemon thread per stream; ``on_line(line,
  stream)`` is called from that thread for every line (``\\n`` or ``\\r``
  ends a line; ``stream`` is ``"stdout"`` or ``"stderr"``, ``"stdout"`` for
  both when ``merge_stderr``), with secrets already redacted; it must be quick
  and must not raise (an exception from it is swallowed);
* stopping a child (``stop``, a timeout, a stall, ``cancel`` raising,
  ``stop_all``, an exception or ``KeyboardInterrupt`` in the waiting thread)
  sends SIGTERM to its whole process group, waits ``grace`` seconds, then
  sends SIGKILL to the group, and always reaps the leader before returning;
  after the leader is gone the group gets a SIGKILL too, so no member outlives
  it.  A second Ctrl-C during the grace period skips straight to SIGKILL;
* :func:`run` returns a :class:`Result` for every way the command ends,
  except when scmt itself is stopping: ``cancel`` raising, or an exception in
  the waiting thread, re-raise after the child is reaped, and a child stopped
  by :func:`stop_all` (scmt is exiting) makes ``run`` raise
  :class:`~scmt_cli.errors.Interrupted`.  A command that cannot start gives
  ``exit_code`` 127 and ``cannot run ARGV0: REASON`` as its only line;
* ``timeout`` bounds the whole run, ``stall_timeout`` the time without a byte of
  output; ``on_heartbeat(elapsed_s, last_line)`` is called from the waiting
  thread every ``heartbeat_every`` seconds while the child runs;
* :func:`stop_all` is safe from any thread and idempotent; it is also
  registered with :mod:`atexit`.
"""

from __future__ import annotations

import atexit
import collections
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from scmt_cli.errors import Interrupted, redact_text

#: Characters of output kept for :attr:`Result.output`.
OUTPUT_LIMIT = 4000
#: Lines kept for :attr:`Result.lines` unless ``keep_lines`` says otherwise.
KEEP_LINES = 40
#: Seconds between SIGTERM and SIGKILL.
GRACE = 5.0
#: A line longer than this is cut (output without newlines must not grow memory).
MAX_LINE = 4096
_TICK = 0.2

LineCallback = Callable[[str, str], None]
HeartbeatCallback = Callable[[float, str], None]

_registry: dict[int, Child] = {}
_registry_lock = threading.Lock()


@dataclass(frozen=True)
class Result:
    """How one child ended.  ``exit_code`` is ``None`` when scmt stopped it (see ``stopped``)."""

    name: str
    argv: tuple[str, ...]
    pid: int
    exit_code: int | None
    seconds: float
    lines: tuple[str, ...]
    stderr_lines: tuple[str, ...]
    output: str
    stopped: str | None = None  # "timeout" | "stall" | "stop" | "shutdown" | None
    timeout: float | None = None
    stall_timeout: float | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.stopped is None

    @property
    def timed_out(self) -> bool:
        return self.stopped == "timeout"

    @property
    def stalled(self) -> bool:
        return self.stopped == "stall"

    def last_line(self) -> str:
        """The last non-empty line of stderr, else of all output, else ``"no output"``."""
        for lines in (self.stderr_lines, self.lines):
            for line in reversed(lines):
                if line.strip():
                    return line.strip()
        return "no output"

    def describe(self) -> str:
        """Why it ended, in a few words: ``exit 3``, ``timed out after 60 s`` ..."""
        if self.stopped == "timeout":
            return f"timed out after {self.timeout:g} s"
        if self.stopped == "stall":
            return f"stalled: no output for {self.stall_timeout:g} s"
        if self.stopped == "shutdown":
            return "stopped because scmt is exiting"
        if self.stopped == "stop":
            return "stopped"
        if self.exit_code is not None and self.exit_code < 0:
            try:
                return f"killed by {signal.Signals(-self.exit_code).name}"
            except ValueError:
                return f"killed by signal {-self.exit_code}"
        return f"exit {self.exit_code}"


class _Output:
    """Line splitting, the line tails and the character tail of one child's output (thread-safe)."""

    def __init__(self, keep_lines: int, on_line: LineCallback | None) -> None:
        self.lock = threading.Lock()
        self.lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self.tail = bytearray()
        self.total = 0
        self.last_at = time.monotonic()
        self.on_line = on_line

    def feed(self, stream: str, chunk: bytes) -> None:
        with self.lock:
            self.last_at = time.monotonic()
            self.total += len(chunk)
            self.tail += chunk
            if len(self.tail) > OUTPUT_LIMIT:
                del self.tail[: len(self.tail) - OUTPUT_LIMIT]

    def line(self, stream: str, raw: bytes) -> None:
        text = redact_text(raw[:MAX_LINE].decode("utf-8", "replace").rstrip())
        with self.lock:
            self.lines.append(text)
            if stream == "stderr":
                self.stderr_lines.append(text)
        if self.on_line is not None and text:
            try:
                self.on_line(text, stream)
            except Exception:  # noqa: S110 - a reporting callback must never kill supervision
                pass

    def text(self) -> str:
        with self.lock:
            text = bytes(self.tail).decode("utf-8", "replace")
            cut = self.total - len(self.tail)
        if cut > 0:
            text = f"[... {cut} bytes cut ...]\n" + text
        return redact_text(text)


def _pump(fh: IO[bytes], stream: str, out: _Output) -> None:
    buf = b""
    fd = fh.fileno()
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out.feed(stream, chunk)
            buf += chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            *done, buf = buf.split(b"\n")
            for raw in done:
                out.line(stream, raw)
            if len(buf) > 16 * MAX_LINE:
                out.line(stream, buf)
                buf = b""
        if buf:
            out.line(stream, buf)
    finally:
        fh.close()


class Child:
    """One started child; see the module contract.  Use :func:`spawn` to make one."""

    def __init__(self, argv: Sequence[str], *, name: str | None = None, env: Mapping[str, str] | None = None,
                 cwd: str | None = None, merge_stderr: bool = True, stdout: bool = True,
                 keep_lines: int = KEEP_LINES, on_line: LineCallback | None = None,
                 pass_fds: Iterable[int] = ()) -> None:
        self.argv = tuple(str(a) for a in argv)
        self.name = name or os.path.basename(self.argv[0])
        self._out = _Output(keep_lines, on_line)
        self.stopped: str | None = None
        self.started = time.monotonic()
        self._ended: float | None = None
        self._stop_lock = threading.Lock()
        out_target: Any = subprocess.PIPE if stdout else subprocess.DEVNULL
        err_target: Any = subprocess.STDOUT if (merge_stderr and stdout) else subprocess.PIPE
        self.proc = subprocess.Popen(
            list(self.argv), stdin=subprocess.DEVNULL, stdout=out_target, stderr=err_target,
            start_new_session=True, env=dict(env) if env is not None else None, cwd=cwd,
            close_fds=True, pass_fds=tuple(pass_fds),
        )  # fmt: skip
        self.pid = self.proc.pid
        with _registry_lock:
            _registry[self.pid] = self
        self._readers: list[threading.Thread] = []
        for fh, stream in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            if fh is not None:
                t = threading.Thread(target=_pump, args=(fh, stream, self._out), daemon=True,
                                     name=f"scmt-out-{self.name}-{self.pid}")
                t.start()
                self._readers.append(t)

    # -- state -----------------------------------------------------------------------------
    def poll(self) -> int | None:
        rc = self.proc.poll()
        if rc is not None:
            self._reaped()
        return rc

    @property
    def alive(self) -> bool:
        return self.poll() is None

    @property
    def idle_seconds(self) -> float:
        """Seconds since the last byte of output (or since the start)."""
        with self._out.lock:
            return time.monotonic() - self._out.last_at

    @property
    def lines(self) -> tuple[str, ...]:
        with self._out.lock:
            return tuple(self._out.lines)

    def _reaped(self) -> None:
        if self._ended is None:
            self._ended = time.monotonic()
        with _registry_lock:
            _registry.pop(self.pid, None)
        try:  # the leader is gone: no member of its group may outlive it
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the child has ended, ``None`` if still running after ``timeout`` s."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reaped()
        for t in self._readers:  # the last lines; a grandchild that left the group cannot hold us long
            t.join(timeout=2.0)
        return rc

    def stop(self, grace: float = GRACE, *, why: str = "stop") -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace`` s, reap the leader; the exit code (idempotent)."""
        with self._stop_lock:
            if self.proc.poll() is None and self.stopped is None:
                self.stopped = why
            interrupted: BaseException | None = None
            for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
                if self.proc.poll() is not None:
                    break
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    pass
                except PermissionError:
                    self.proc.send_signal(sig)
                try:
                    if self.wait(wait_s) is not None:
                        break
                except BaseException as exc:  # a second Ctrl-C: go straight to SIGKILL, re-raise after
                    interrupted = exc
                    continue
            rc = self.wait()
            if interrupted is not None:
                raise interrupted
            return rc

    def result(self) -> Result:
        """The :class:`Result` of an ended child (waits for it)."""
        rc = self.wait()
        with self._out.lock:
            lines, err = tuple(self._out.lines), tuple(self._out.stderr_lines)
        seconds = (self._ended or time.monotonic()) - self.started
        return Result(self.name, self.argv, self.pid, None if self.stopped else rc, seconds, lines, err,
                      self._out.text(), self.stopped)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Child {self.name} pid={self.pid}>"


def spawn(argv: Sequence[str], **kw: Any) -> Child:
    """Start ``argv`` supervised (keywords as :class:`Child`); raises ``OSError`` when it cannot start."""
    return Child(argv, **kw)


def run(argv: Sequence[str], *, name: str | None = None, timeout: float | None = None,
        stall_timeout: float | None = None, on_line: LineCallback | None = None,
        on_heartbeat: HeartbeatCallback | None = None, heartbeat_every: float = 30.0,
        cancel: Callable[[], None] | None = None, env: Mapping[str, str] | None = None, cwd: str | None = None,
        merge_stderr: bool = True, keep_lines: int = KEEP_LINES, pass_fds: Iterable[int] = (),
        grace: float = GRACE) -> Result:
    """Run ``argv`` to its end under supervision; see the module contract."""
    argv_t = tuple(str(a) for a in argv)
    try:
        child = Child(argv_t, name=name, env=env, cwd=cwd, merge_stderr=merge_stderr, keep_lines=keep_lines,
                      on_line=on_line, pass_fds=pass_fds)
    except OSError as exc:
        line = f"cannot run {argv_t[0] if argv_t else '(empty command)'}: {exc.strerror or exc}"
        return Result(name or os.path.basename(argv_t[0] if argv_t else "?"), argv_t, 0, 127, 0.0,
                      (line,), (line,), line)
    next_beat = child.started + heartbeat_every
    try:
        while child.wait(_TICK) is None:
            now = time.monotonic()
            if cancel is not None:
                cancel()
            if timeout is not None and now - child.started > timeout:
                child.stop(grace, why="timeout")
                break
            if stall_timeout is not None and child.idle_seconds > stall_timeout:
                child.stop(grace, why="stall")
                break
            if on_heartbeat is not None and now >= next_beat:
                next_beat = now + heartbeat_every
                lines = child.lines
                on_heartbeat(now - child.started, lines[-1] if lines else "")
    except BaseException:
        child.stop(grace, why="stop")
        raise
    res = child.result()
    if res.stopped == "shutdown":
        raise Interrupted(f"{child.name} (pid {child.pid}) was stopped because scmt is stopping")
    return Result(res.name, res.argv, res.pid, res.exit_code, res.seconds, res.lines, res.stderr_lines,
                  res.output, res.stopped, timeout, stall_timeout)


def live() -> list[Child]:
    """The children started and not yet reaped."""
    with _registry_lock:
        children = list(_registry.values())
    return [c for c in children if c.alive]


def stop_all(grace: float = GRACE) -> list[int]:
    """Stop every live child (SIGTERM to all groups at once, SIGKILL after ``grace``), reap them; their pids."""
    children = live()
    for c in children:
        if c.stopped is None:
            c.stopped = "shutdown"
        try:
            os.killpg(c.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    for c in children:
        c.wait(max(0.0, deadline - time.monotonic()))
    for c in children:
        c.stop(0.0, why="shutdown")
    return [c.pid for c in children]


atexit.register(stop_all)
