"""Follow a booting VM's serial console log until the guest's *ready line*.

Shared by the two ways scmt boots a VM: QEMU started by scmt
(:mod:`scmt_cli.targets.qemu`) and a libvirt domain whose serial console is
logged to a file (:mod:`scmt_cli.targets.libvirtboot`).  Contract of
:func:`follow`:

* it reads the log as it grows, from ``offset``, line by line (ANSI colours
  stripped); the first line matching ``ready`` fills the outcome's
  ``ready_line``, ``guest_value`` (the pattern's first group) and ``seconds``
  (from ``started``, a :func:`time.monotonic` value) and ends the watch
  (``"ready"``);
* otherwise it ends when ``alive()`` turns false (``"exited"``), when the log
  shows nothing new for ``stall_s`` seconds (``"stalled"``) or after
  ``timeout_s`` (``"timeout"``); ``check()`` is called on every round (a
  cancel check may raise);
* it never stops the VM: the caller decides what a failure means for it.

:func:`boot_error` turns a failed watch into :class:`~scmt_cli.errors.BootError`
(exit 53) naming the console line that says why (e.g. ``Gave up waiting for
root file system device``) and the last lines.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.errors import BootError

DEFAULT_READY = r"SCMT-GUEST-READY\s+(\S+)"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_FAILURE_MARKS = ("Gave up waiting for", "Kernel panic", "ALERT!", "No bootable device", "Boot failed",
                  "error: ", "VFS: Cannot open root device")


@dataclass
class BootOutcome:
    vm: str
    booted: bool
    accel: str  # kvm | tcg
    seconds: float | None  # start -> ready line
    ready_line: str | None
    guest_value: str | None  # the ready pattern's first group (the guest's data digest)
    console_log: str
    powered_off: bool = False
    warnings: list[str] = field(default_factory=list)
    platform: str = "qemu"  # qemu (started by scmt) | libvirt
    domain: str | None = None  # the libvirt domain that booted

    def to_dict(self) -> dict[str, Any]:
        d = {"booted": self.booted, "accel": self.accel, "seconds": self.seconds, "ready_line": self.ready_line,
             "guest_value": self.guest_value, "console_log": self.console_log, "powered_off": self.powered_off,
             "platform": self.platform}
        if self.domain is not None:
            d["domain"] = self.domain
        return d


def clean(line: str) -> str:
    return _ANSI.sub("", line).strip()


def lines(path: Path) -> list[str]:
    """The non-empty lines of a console log (colours stripped); [] when it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [c for c in (clean(ln) for ln in text.splitlines()) if c]


def tail(path: Path, n: int = 5) -> str:
    return " | ".join(lines(path)[-n:])[-600:]


def first_failure(path: Path) -> str | None:
    """The first console line that says why a boot failed (the initramfs or the kernel naming it)."""
    return next((ln for ln in lines(path) if any(m in ln for m in _FAILURE_MARKS)), None)


def follow(log: Path, out: BootOutcome, *, ready: re.Pattern[str], alive: Callable[[], bool], timeout_s: float,
           stall_s: float, started: float, check: Callable[[], None] = lambda: None,
           progress: Callable[[str], None] = lambda _m: None, offset: int = 0, poll: float = 0.5) -> str:
    """Watch ``log`` (see the module contract); return ``ready``, ``exited``, ``stalled`` or ``timeout``."""
    seen = offset
    pending = ""
    last_progress = time.monotonic()
    while True:
        check()
        now = time.monotonic()
        try:
            size = log.stat().st_size
        except OSError:
            size = 0
        if size < seen:  # truncated: a new start of the VM rewrote its log
            seen, pending = 0, ""
        if size > seen:
            with open(log, "rb") as f:
                f.seek(seen)
                chunk = f.read(size - seen)
            seen += len(chunk)
            last_progress = now
            pending += chunk.decode(errors="replace")
            *complete, pending = pending.split("\n")
            for line in complete:
                text = clean(line)
                match = ready.search(text)
                if match:
                    out.ready_line, out.seconds = text, round(now - started, 1)
                    out.guest_value = match.group(1) if match.groups() else None
                    out.booted = True
                    progress(f"{out.vm}: ready after {out.seconds:.1f} s: {text}")
                    return "ready"
        if not alive():
            return "exited"
        if now - last_progress > stall_s:
            return "stalled"
        if now - started > timeout_s:
            return "timeout"
        time.sleep(poll)


def boot_error(out: BootOutcome, how: str, *, stall_s: float, timeout_s: float, exited: str,
               extra: str = "", hint: str = "") -> BootError:
    """The :class:`BootError` for a watch that ended with ``how`` (``exited`` says what ended)."""
    log = Path(out.console_log)
    last = tail(log, 3) or "(no console output)"
    why = {"exited": exited,
           "stalled": f"no console output for {stall_s:.0f} s",
           "timeout": f"no ready line within {timeout_s:.0f} s"}[how]
    cause = first_failure(log)
    return BootError(f"{out.vm}: boot failed ({out.accel}): {why}" + (f"; the guest said: {cause}" if cause else "")
                     + f"; last console lines: {last}" + (f"; {extra}" if extra else ""),
                     hint=f"full console log: {log}" + (f"; {hint}" if hint else "") + (
                         "; 'Gave up waiting for root' means the guest has no driver for its disk bus (convert it "
                         "with virt-v2v, or boot it on the bus it had)" if cause and "Gave up" in cause else ""))
