"""The one exception family of scmt and its exit codes.

Every error a user can cause or meet is a subclass of :class:`ScmtError`.  Each
class carries its process exit code; ``cli/main.py`` is the only place that turns
an exception into an exit code and a message.  Messages must never contain
secrets (passwords, session cookies, tokens): build them from names, paths and
URLs passed through :func:`redact_url`.

Exit codes: :data:`EXIT_CODES` below is the one table (``scmt help exit-codes``
prints it, every command's ``--help`` lists its own, README.md repeats it; a
test compares them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

EXIT_OK = 0
EXIT_WARNINGS = 1

# The meaning of every exit code, whichever command returns it.  Source of truth
# for README's table, ``scmt help exit-codes`` and the exit-code lists of --help.
EXIT_CODES: dict[int, str] = {
    0: "ok",
    1: "finished with warnings",
    2: "usage or plan error (bad arguments, invalid plan file, a file named on the command line is missing)",
    3: "input error (inventory, RVTools export or manifest unreadable or malformed)",
    4: "not available yet in this release",
    5: "configuration error (missing credentials, missing external tool)",
    10: "source unreachable (vCenter, NBD server, agent, a missing source file)",
    11: "authentication failed",
    12: "TLS verification failed",
    13: "source operation failed (a vSphere fault, a snapshot that failed)",
    14: "target unreachable (an NBD target, a libvirt host)",
    20: "blocked by assessment",
    21: "network preflight failed",
    22: "assessment incomplete (the inventory lacks data that checks able to block a VM need, e.g. no vDisk tab)",
    30: "transport or I/O error during a copy, or no space left on the target (a checkpoint was kept: rerun to resume)",
    31: "verification mismatch",
    32: "size mismatch (target smaller than source, source shrank)",
    33: "target is read-only",
    34: "source changed since the interrupted copy (resume refused: rerun without --resume to start over)",
    35: "target location missing (a target directory or storage pool does not exist)",
    40: "locked by another run (another job drives this VM)",
    41: "state store error (corrupt file, another schema version)",
    42: "invalid state for this command (nothing to roll back, not in sync)",
    50: "target platform error",
    51: "hook failed",
    52: "guest conversion failed, timed out or stalled (the synced disks are unchanged; "
        "see 'Guest conversion' in README)",
    53: "boot failed (scmt boot, test failover: QEMU exited, the console stalled or no ready line in time)",
    60: "some VMs failed (partial failure); when every VM failed with the same error, that error's code instead",
    70: "internal error (a bug in scmt: rerun with --debug and report it)",
    130: "interrupted (SIGINT), after a final checkpoint",
    143: "terminated (SIGTERM), after a final checkpoint",
}


@dataclass(frozen=True)
class Problem:
    """One located problem in an input file (a plan, an inventory, a manifest).

    ``path`` is the field path (``vms[3].disks[0].size``), empty when the problem
    concerns the whole document.  ``line``/``column`` are 1-based, 0 when unknown.
    """

    file: str
    message: str
    path: str = ""
    line: int = 0
    column: int = 0

    def format(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }


class ScmtError(Exception):
    """Base of every error scmt reports to a user.

    ``message`` is one line, fit to print.  ``problems`` lists located problems
    when there are several (each printed on its own line).  ``hint`` is an
    optional remedy.
    """

    exit_code = 70
    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        problems: Sequence[Problem] = (),
        hint: str | None = None,
    ) -> None:
        message = redact_text(message)
        super().__init__(message)
        self.message = message
        self.problems = tuple(problems)
        self.hint = redact_text(hint) if hint else hint

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "type": "exit_error",
            "code": self.exit_code,
            "error": self.kind,
            "message": self.message,
        }
        if self.problems:
            data["problems"] = [p.to_dict() for p in self.problems]
        if self.hint:
            data["hint"] = self.hint
        return data


class UsageError(ScmtError):
    exit_code = 2
    kind = "usage"


class PlanError(ScmtError):
    exit_code = 2
    kind = "plan"


class InputError(ScmtError):
    exit_code = 3
    kind = "input"


class MissingFileError(ScmtError):
    """A file named on the command line (a PLAN, --inventory, --lab, a manifest) does not exist."""

    exit_code = 2
    kind = "missing_file"


class NotAvailableError(ScmtError):
    exit_code = 4
    kind = "not_available"


class ConfigError(ScmtError):
    exit_code = 5
    kind = "config"


class SourceUnreachableError(ScmtError):
    exit_code = 10
    kind = "source_unreachable"


class AuthenticationError(ScmtError):
    exit_code = 11
    kind = "authentication"


class TLSVerificationError(ScmtError):
    exit_code = 12
    kind = "tls_verification"


class SourceOperationError(ScmtError):
    exit_code = 13
    kind = "source_operation"


class TargetUnreachableError(ScmtError):
    """The target end cannot be reached for writing (an nbd:// target, a libvirt host)."""

    exit_code = 14
    kind = "target_unreachable"


class BlockedByAssessmentError(ScmtError):
    exit_code = 20
    kind = "blocked"


class PreflightError(ScmtError):
    exit_code = 21
    kind = "preflight"


class AssessmentIncompleteError(ScmtError):
    """Assessment could not run every check able to block a VM (the verdict ``incomplete``)."""

    exit_code = 22
    kind = "assessment_incomplete"


class TransportError(ScmtError):
    """An I/O error while reading or writing blocks.

    ``transient`` marks errors worth retrying (a dropped connection, EIO from a
    flaky server); permanent ones (read-only export, bad request) are not.
    """

    exit_code = 30
    kind = "transport"

    def __init__(self, message: str, *, transient: bool = False, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.transient = transient


class NoSpaceError(TransportError):
    """The target's file system is full (ENOSPC); ``path`` is the file that could not grow."""

    kind = "no_space"

    def __init__(self, message: str, *, path: str = "", **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.path = path


def free_bytes(path: str) -> int | None:
    """Bytes an unprivileged writer may still use on the file system of ``path`` (None when unknown)."""
    import os

    probe = path
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        st = os.statvfs(probe or ".")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def no_space(path: str, needs: int | None = None, *, hint: str | None = None) -> NoSpaceError:
    """``no space left on device: PATH (needs N more, F free)`` (sizes in binary units)."""
    free = free_bytes(path)
    parts = []
    if needs is not None:
        parts.append(f"needs {_size(max(needs, 0))} more")
    if free is not None:
        parts.append(f"{_size(free)} free")
    detail = f" ({', '.join(parts)})" if parts else ""
    return NoSpaceError(f"no space left on device: {path}{detail}", path=path,
                        hint=hint or "free space on that file system (or point the target elsewhere), then run the "
                                     "command again: it resumes from its last checkpoint")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


class VerificationError(ScmtError):
    exit_code = 31
    kind = "verification_mismatch"


class SizeMismatchError(ScmtError):
    exit_code = 32
    kind = "size_mismatch"


class ReadOnlyTargetError(ScmtError):
    exit_code = 33
    kind = "read_only_target"


class SourceChangedError(ScmtError):
    """A resume found the source is not the disk (or not the content) the interrupted copy read.

    Its own code: the only remedy is to copy again from the beginning, which a script should be
    able to tell from a bad argument (2), a wrong state (42) or a target that differs (31).
    """

    exit_code = 34
    kind = "source_changed"


class TargetMissingError(ScmtError):
    """The target location does not exist (a directory that a target file would go in, a pool)."""

    exit_code = 35
    kind = "target_missing"


class LockedError(ScmtError):
    exit_code = 40
    kind = "locked"


class StateStoreError(ScmtError):
    exit_code = 41
    kind = "state"


class InvalidStateError(ScmtError):
    exit_code = 42
    kind = "invalid_state"


class TargetPlatformError(ScmtError):
    exit_code = 50
    kind = "target_platform"


class HookError(ScmtError):
    exit_code = 51
    kind = "hook"


class ConversionError(ScmtError):
    """The guest converter failed, timed out or stalled; ``details`` says how (for ``--json``)."""

    exit_code = 52
    kind = "conversion"

    def __init__(self, message: str, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.details: dict[str, object] = {}

    def to_dict(self) -> dict[str, object]:
        data = super().to_dict()
        if self.details:
            data["conversion"] = self.details
        return data
class BootError(ScmtError):
    """A VM did not boot: QEMU exited, the console stalled, or no ready line came in time."""

    exit_code = 53
    kind = "boot"


class PartialFailureError(ScmtError):
    exit_code = 60
    kind = "partial_failure"


class InternalError(ScmtError):
    exit_code = 70
    kind = "internal"


class Interrupted(ScmtError):
    """Raised (or re-raised) after SIGINT once a final checkpoint is written."""

    exit_code = 130
    kind = "interrupted"


class Terminated(ScmtError):
    """Raised after SIGTERM once a final checkpoint is written."""

    exit_code = 143
    kind = "terminated"


def all_error_classes() -> list[type[ScmtError]]:
    """Every concrete error class, for the documentation test."""
    seen: list[type[ScmtError]] = []
    stack: list[type[ScmtError]] = [ScmtError]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return sorted(seen, key=lambda c: (c.exit_code, c.__name__))


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^@/\s]*)@")
_SECRET_QUERY = re.compile(
    r"(?i)\b(?P<key>(?:password|passwd|pwd|secret|token|sessionid|session|vmware_soap_session|key))=(?P<val>[^&\s]+)"
)


def redact_url(url: str) -> str:
    """Return ``url`` with any password (and secret-looking query values) removed.

    ``https://user:pw@host/sdk`` becomes ``https://user:***@host/sdk``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = _SECRET_QUERY.sub(lambda m: f"{m.group('key')}=***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret: keep it byte for byte (test:///default stays as is)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


#: C0 controls but tab and newline, DEL, and C1 controls (0x9b is a CSI on some terminals).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_control(text: str) -> str:
    """``text`` with every control character but tab and newline shown as ``\\xNN``.

    Input from a plan, an inventory, a file name or a server (an ESC sequence in a
    YAML key, a VM name) must never reach a terminal raw, where it could recolour,
    retitle or rewrite what scmt printed.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def redact_text(text: str) -> str:
    """Make free text fit to show: URL passwords and secret-looking ``key=value`` pairs
    redacted, control characters escaped (:func:`escape_control`).

    The one place user text passes through on its way into a message: every
    ScmtError message and hint, every log line (text and ``--log-json``) and
    every string of a ``--json`` document.
    """

    def _userinfo(m: re.Match[str]) -> str:
        user = m.group("userinfo").split(":", 1)[0]
        sep = ":***" if ":" in m.group("userinfo") else ""
        return f"{m.group('scheme')}{user}{sep}@"

    text = _USERINFO.sub(_userinfo, escape_control(text))
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}=***", text)
