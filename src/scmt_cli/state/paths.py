"""Where the state file lives and how it is created (permissions, sanity checks)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from scmt_cli.errors import StateStoreError


def default_state_path() -> Path:
    """``$XDG_STATE_HOME/scmt/state.db``, else ``~/.local/state/scmt/state.db``.

    A relative ``XDG_STATE_HOME`` is ignored, as the XDG spec requires.
    """
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "scmt" / "state.db"


def resolve_state_path(path: Path | str | None = None) -> Path:
    """``path`` if given, else ``$SCMT_STATE``, else :func:`default_state_path`; ``~`` expanded."""
    if path is None or str(path) == "":
        env = os.environ.get("SCMT_STATE", "")
        return Path(env).expanduser() if env else default_state_path()
    return Path(path).expanduser()


def prepare_file(path: Path) -> None:
    """Create the parent directory (0700) and the file (0600); refuse non-files."""
    if path.is_dir():
        raise StateStoreError(
            f"state store path {path} is a directory", hint="pass a file path with --state or SCMT_STATE"
        )
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True)
        elif not parent.is_dir():
            raise StateStoreError(f"cannot create state store {path}: {parent} is not a directory")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StateStoreError(f"state store path {path} is not a regular file")
            if st.st_mode & 0o077 and st.st_uid == os.getuid():
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateStoreError(f"cannot open state store {path}: {exc.strerror or exc}") from None


def tighten_companions(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        try:
            st = companion.stat()
            if st.st_mode & 0o077 and st.st_uid == os.getuid():
                companion.chmod(0o600)
        except OSError:
            continue


def is_postgres_url(target: object) -> bool:
    """True when ``target`` (a ``--state`` value) names a PostgreSQL store: ``postgresql://`` or ``postgres://``."""
    text = str(target or "")
    return text.startswith(("postgresql://", "postgres://"))
