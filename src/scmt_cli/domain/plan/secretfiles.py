"""Secret files a plan names (``source.password_file``, ``agent.token_file``): refused early, located.

A plan may name a file that does not exist yet (a vault agent writes it
before the run), so a missing file is not a plan error; but a path that
exists and cannot be a secret file -- a device (``/dev/zero``,
``/dev/urandom``), a FIFO, a directory, a file over 64 KiB -- makes the plan
invalid with ``file:line:col: field: ...`` (exit 2), before anything reads it.
:func:`scmt_cli.secretfile.read_secret_file` enforces the same bounds when the
secret is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from scmt_cli.domain.plan.yamlsource import Located, PathT
from scmt_cli.errors import Problem
from scmt_cli.secretfile import MAX_SECRET_BYTES

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def _fields(doc: dict[str, Any]) -> list[tuple[PathT, Any]]:
    out: list[tuple[PathT, Any]] = []
    source = doc.get("source")
    if isinstance(source, dict):
        out.append((("source", "password_file"), source.get("password_file")))
    vms = doc.get("vms")
    for i, vm in enumerate(vms if isinstance(vms, list) else []):
        agent = vm.get("agent") if isinstance(vm, dict) else None
        if isinstance(agent, dict):
            out.append((("vms", i, "agent", "token_file"), agent.get("token_file")))
    return out


def secret_file_problems(located: Located, base_dir: Path | None) -> list[Problem]:
    """A located problem for every secret file of the plan that exists and cannot be one."""
    problems: list[Problem] = []
    doc = located.data if isinstance(located.data, dict) else {}
    for path, value in _fields(doc):
        if not isinstance(value, str) or not value:
            continue
        p = Path(value).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        try:
            st = os.stat(p)
        except OSError:
            continue  # missing or unreadable now: reported when the secret is read
        if not stat.S_ISREG(st.st_mode):
            found = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
            problems.append(located.problem(path, f"{value} is {found}; a secret must be in a regular file of at "
                                                  f"most {MAX_SECRET_BYTES // 1024} KiB"))
        elif st.st_size > MAX_SECRET_BYTES:
            problems.append(located.problem(path, f"{value} has {st.st_size} bytes; a secret file holds at most "
                                                  f"{MAX_SECRET_BYTES // 1024} KiB"))
    return problems
