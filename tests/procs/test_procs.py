"""The child-process supervisor: groups, tails, timeouts, stalls, heartbeats and stop_all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scmt_cli import procs
from scmt_cli.errors import Interrupted

PY = sys.executable


def gone(pid: int, wait: float = 10.0) -> bool:
    """True once ``pid`` has ended and is not a zombie of ours (an unreaped child of this process)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return True
        state, parent = fields[0], int(fields[1])
        if state == "Z" and parent != os.getpid():
            return True  # ended; reaping it is its parent's (or init's) business
        time.sleep(0.05)
    return False


def family(tmp_path: Path, body: str = "import time\ntime.sleep(60)\n") -> tuple[list[str], Path]:
    """A command that starts a grandchild, writes both pids to a file, then runs ``body``."""
    pids = tmp_path / "pids"
    script = tmp_path / "family.py"
    script.write_text(textwrap.dedent(f"""\
        import os, subprocess, sys, time
        kid = subprocess.Popen([{PY!r}, "-c", "import time; time.sleep(60)"])
        with open({str(pids)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{kid.pid}}\\n")
        sys.stdout.flush()
        """) + body)
    return [PY, str(script)], pids


def read_pids(path: Path) -> list[int]:
    for _ in range(200):
        if path.exists() and path.read_text().endswith("\n"):
            return [int(p) for p in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError(f"{path} was never written")


def test_run_keeps_lines_calls_back_and_gives_the_exit_code() -> None:
    seen: list[tuple[str, str]] = []
    res = procs.run([PY, "-c", "import sys\nprint('one')\nprint('two\\rthree')\nsys.stderr.write('bad\\n')\n"
                     "sys.exit(3)"], on_line=lambda line, stream: seen.append((line, stream)))
    assert res.exit_code == 3 and not res.ok
    assert res.lines == ("one", "two", "three", "bad")
    assert res.last_line() == "bad"
    assert [s[0] for s in seen] == ["one", "two", "three", "bad"]
    assert res.describe() == "exit 3"
    assert procs.live() == []


def test_separate_streams_and_redaction() -> None:
    res = procs.run([PY, "-c", "import sys\nprint('https://u:hunter2@h/x')\nsys.stderr.write('err\\n')"],
                    merge_stderr=False)
    assert res.stderr_lines == ("err",)
    assert res.last_line() == "err"
    assert "hunter2" not in res.output and "hunter2" not in " ".join(res.lines)


def test_a_command_that_cannot_start_is_exit_127() -> None:
    res = procs.run(["/nonexistent/tool", "x"])
    assert res.exit_code == 127
    assert res.last_line().startswith("cannot run /nonexistent/tool")


def test_timeout_stops_the_whole_group(tmp_path: Path) -> None:
    argv, pids = family(tmp_path)
    res = procs.run(argv, timeout=1.0, grace=1.0)
    assert res.timed_out and res.exit_code is None
    assert "timed out after 1 s" in res.describe()
    leader, kid = read_pids(pids)
    assert gone(leader) and gone(kid)


def test_stall_stops_a_silent_child_and_keeps_its_last_lines(tmp_path: Path) -> None:
    argv, pids = family(tmp_path, "print('working', flush=True)\nprint('almost', flush=True)\ntime.sleep(60)\n")
    res = procs.run(argv, stall_timeout=1.0, timeout=60, grace=1.0)
    assert res.stalled and not res.ok
    assert res.lines[-2:] == ("working", "almost")
    assert res.describe() == "stalled: no output for 1 s"
    assert all(gone(p) for p in read_pids(pids))


def test_output_keeps_a_chatty_child_alive_past_the_stall_time() -> None:
    code = "import time\nfor i in range(8):\n    print(i, flush=True)\n    time.sleep(0.25)\n"
    res = procs.run([PY, "-c", code], stall_timeout=1.0)
    assert res.ok and res.lines[-1] == "7"


def test_heartbeat_is_called_while_the_child_runs() -> None:
    beats: list[tuple[float, str]] = []
    code = "import time\nprint('hello', flush=True)\ntime.sleep(1.5)\n"
    res = procs.run([PY, "-c", code], heartbeat_every=0.3, on_heartbeat=lambda s, last: beats.append((s, last)))
    assert res.ok
    assert len(beats) >= 2
    assert beats[-1][1] == "hello"


def test_cancel_stops_the_child_and_reraises(tmp_path: Path) -> None:
    argv, pids = family(tmp_path)
    calls = {"n": 0}

    def cancel() -> None:
        calls["n"] += 1
        if pids.exists() and calls["n"] > 3:
            raise Interrupted("stop")

    with pytest.raises(Interrupted):
        procs.run(argv, cancel=cancel, grace=1.0)
    assert all(gone(p) for p in read_pids(pids))
    assert procs.live() == []


def test_stop_all_stops_and_reaps_every_live_child(tmp_path: Path) -> None:
    argv, pids = family(tmp_path)
    child = procs.spawn(argv, name="server")
    other = procs.spawn([PY, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                         "print('ready', flush=True)\ntime.sleep(60)"])
    leader, kid = read_pids(pids)
    while other.lines != ("ready",):
        time.sleep(0.05)
    assert {c.pid for c in procs.live()} >= {child.pid, other.pid}
    stopped = procs.stop_all(grace=0.5)  # the second one ignores SIGTERM: it gets SIGKILL
    assert set(stopped) >= {child.pid, other.pid}
    assert procs.live() == []
    assert child.poll() is not None and other.poll() == -signal.SIGKILL
    assert gone(leader) and gone(kid) and gone(other.pid)


def test_a_run_stopped_by_stop_all_raises_interrupted(tmp_path: Path) -> None:
    import threading

    argv, pids = family(tmp_path)
    box: dict[str, BaseException] = {}

    def worker() -> None:
        try:
            procs.run(argv)
        except BaseException as exc:  # noqa: BLE001
            box["exc"] = exc

    t = threading.Thread(target=worker)
    t.start()
    read_pids(pids)
    procs.stop_all(grace=1.0)
    t.join(10)
    assert isinstance(box.get("exc"), Interrupted)


def test_sigint_to_a_program_using_run_leaves_no_child(tmp_path: Path) -> None:
    argv, pids = family(tmp_path)
    prog = tmp_path / "prog.py"
    prog.write_text(f"from scmt_cli import procs\nprocs.run({argv!r})\n")
    env = {**os.environ, "PYTHONPATH": str(Path(procs.__file__).parents[1])}
    p = subprocess.Popen([PY, str(prog)], env=env, stderr=subprocess.PIPE)
    leader, kid = read_pids(pids)
    p.send_signal(signal.SIGINT)
    p.wait(30)
    assert p.returncode != 0
    assert gone(leader) and gone(kid)
