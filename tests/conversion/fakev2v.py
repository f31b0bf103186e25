"""A fake ``virt-v2v-in-place`` (a shell script put first on PATH) and a lab whose VM looks like a guest."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

#: FAKE_V2V_MODE: ok | fail | hang (prints, then waits on a child) | silent (prints nothing) | ignore-term
SCRIPT = r"""#!/bin/sh
echo $$ >> "${FAKE_V2V_PIDFILE:-/dev/null}"
echo "[   0.0] Setting up the source: -i libvirtxml"
case "${FAKE_V2V_MODE:-ok}" in
  hang)
    echo "[   1.0] Inspecting the source"
    sleep 600 &
    echo $! >> "${FAKE_V2V_PIDFILE:-/dev/null}"
    wait ;;
  silent)
    sleep 600 &
    echo $! >> "${FAKE_V2V_PIDFILE:-/dev/null}"
    wait ;;
  ignore-term)
    trap '' TERM
    echo "[   1.0] Inspecting the source"
    while :; do sleep 1; done ;;
  fail)
    echo "virt-v2v-in-place: error: inspection could not detect the source guest" >&2
    exit 1 ;;
  *)
    echo "[   5.0] Converting Debian GNU/Linux 12 (bookworm) to run on KVM"
    echo "virt-v2v-in-place: warning: could not determine a way to update the configuration of Grub2"
    echo "virt-v2v-in-place: This guest has virtio drivers installed."
    echo "[  10.0] Finishing off" ;;
esac
"""

#: An MBR with one bootable Linux partition: enough for "this disk holds an operating system".
MBR = bytearray(512)
MBR[446:462] = bytes([0x80, 0, 0x21, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (4096).to_bytes(4, "little")
MBR[510:512] = b"\x55\xaa"


def install(bindir: Path) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / "virt-v2v-in-place"
    path.write_text(SCRIPT)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def env_with(bindir: Path, env: dict[str, str], pidfile: Path, mode: str) -> dict[str, str]:
    return {**env, "PATH": f"{bindir}{os.pathsep}{env.get('PATH', os.environ['PATH'])}",
            "FAKE_V2V_PIDFILE": str(pidfile), "FAKE_V2V_MODE": mode}


def pids(path: Path, count: int, wait: float = 60.0) -> list[int]:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if path.exists():
            got = [int(p) for p in path.read_text().split()]
            if len(got) >= count:
                return got
        time.sleep(0.05)
    raise AssertionError(f"the fake converter never wrote {count} pid(s) to {path}")


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def gone(pid: int, wait: float = 10.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not running(pid):
            return True
        time.sleep(0.05)
    return False
