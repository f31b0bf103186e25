"""Issue 16 §2: an interrupted command says how to go on once, the right way, in one place.

Each test starts the real CLI in a subprocess, stops it with SIGINT while it works, and checks that
stderr holds exactly one instruction -- the Interrupted error's hint -- and that following it works:
``copy`` (its hint adds ``--resume``; a rerun without it starts over and says so), ``sync``,
``failover`` and ``migrate`` (their hint is the same command line).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.faultlab import RemoteLab, start_remote_lab

MiB = 1024 * 1024
#: Words of an instruction to the user (what to run, or to run again).
INSTRUCTION = re.compile(r"\brerun\b|\brun (it|the|again|'scmt)|--resume\b|\bagain\b", re.I)


def _instructions(err: str) -> list[str]:
    return [line for line in err.splitlines() if INSTRUCTION.search(line)]


def _hinted_command(err: str) -> list[str]:
    """The command line the hint names (after its last ': '), as argv; the one instruction of the run."""
    [hint] = [line for line in err.splitlines() if line.startswith("hint: ")]
    assert _instructions(err) == [hint], err
    line = hint.rsplit(": ", 1)[1]
    line = line.split(" (without --resume")[0]
    argv = shlex.split(line)
    assert argv[0] == "scmt", hint
    return argv[1:]


def _interrupt(argv: list[str], *, ready: object, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 60) -> tuple[int, str]:
    """Run ``scmt argv``, SIGINT it once ``ready()`` is true, return (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "scmt_cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not ready():  # type: ignore[operator]
            if proc.poll() is not None:
                pytest.fail(f"scmt ended before the signal: {proc.communicate()}")
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _scmt(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scmt_cli", *argv], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=180)


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512 if path.exists() else 0


def test_an_interrupted_copy_says_once_to_resume_and_the_hint_works(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    with open(src, "wb") as fh:
        fh.write(os.urandom(40 * MiB))
    argv = ["--state", str(tmp_path / "s.db"), "copy", str(src), str(dst), "--bandwidth", "64Mbit",
            "--checkpoint-every", "0.2"]
    code, err = _interrupt(argv, ready=lambda: _allocated(dst) >= 4 * MiB)
    assert code == 130, err
    assert "error: interrupted (Ctrl-C); progress so far was checkpointed" in err
    again = _hinted_command(err)
    assert again == [*argv, "--resume"]
    # without --resume the copy starts over, and says so (a warning, not an instruction to follow)
    code, err = _interrupt(argv, ready=lambda: _allocated(dst) >= 4 * MiB)
    assert code == 130
    done = _scmt(again[:-1])
    assert done.returncode == 1 and "an interrupted copy to this target was found; starting over" in done.stderr
    assert dst.read_bytes() == src.read_bytes()
    start = time.monotonic()  # dst is whole already: wait for checkpoints, not for its blocks
    code, err = _interrupt(argv, ready=lambda: time.monotonic() - start > 1.5)
    assert code == 130, err
    done = _scmt(_hinted_command(err))
    assert done.returncode == 0, done.stderr
    assert "already done" in done.stdout and dst.read_bytes() == src.read_bytes()


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[RemoteLab]:
    lab = start_remote_lab(tmp_path, bandwidth="16Mbit")
    try:
        yield lab
    finally:
        lab.stop()


def _target(lab: RemoteLab, vm: str) -> Path:
    return lab.root / "lab" / "target" / vm / "disk0.raw"


def test_an_interrupted_sync_says_once_to_run_it_again(remote: RemoteLab) -> None:
    argv = ["--state", str(remote.state), "sync", str(remote.plan)]
    code, err = _interrupt(argv, ready=lambda: _allocated(_target(remote, "db01")) >= 2 * MiB, env=remote.env)
    assert code == 130, err
    assert _hinted_command(err) == argv
    assert "each VM continues from its last checkpoint" in err


def test_an_interrupted_failover_says_once_to_run_it_again(remote: RemoteLab) -> None:
    """Stopped in its pre hook (a long drain): the source was not touched yet, the hint is the same command."""
    plan, started = remote.plan, remote.root / "hook-started"
    hook = f"[[sh, -c, 'touch {started} && exec sleep 30']]"
    plan.write_text(plan.read_text().replace("  bandwidth: 16Mbit\n", "").replace(
        "  - name: redis-a\n", f"  - name: redis-a\n    hooks: {{failover: {{pre: {hook}}}}}\n"))
    assert remote.run("sync", str(plan), "--vm", "redis-a").returncode == 0
    argv = ["--state", str(remote.state), "failover", str(plan), "--vm", "redis-a", "--direct"]
    code, err = _interrupt(argv, ready=started.exists, env=remote.env)
    assert code == 130, err
    assert "the cutover steps done were recorded" in err
    assert _hinted_command(err) == argv


def test_an_interrupted_migrate_says_once_to_run_it_again(remote: RemoteLab) -> None:
    plan = remote.plan
    plan.write_text(plan.read_text().replace("  - name: db01\n", "  - name: db01\n    method: managed\n"))
    argv = ["--state", str(remote.state), "migrate", str(plan), "--vm", "db01"]
    code, err = _interrupt(argv, ready=lambda: _allocated(_target(remote, "db01")) >= 2 * MiB, env=remote.env)
    assert code == 130, err
    assert _hinted_command(err) == argv
    assert "each VM continues where it stopped" in err
